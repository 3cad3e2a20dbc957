# caduceus_library(NAME SOURCES ... DEPS ...): one static library per folder.
function(caduceus_library name)
  cmake_parse_arguments(L "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${L_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${L_DEPS} PRIVATE ${L_PRIVATE_DEPS})
endfunction()

# caduceus_test(NAME SOURCES ... DEPS ... [LABELS ...] [FIXTURES ...]): a GoogleTest binary
# registered with CTest. Tests find fixtures and generated models through environment variables.
function(caduceus_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;DEPS;LABELS;FIXTURES" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "CADUCEUS_FIXTURES_DIR=${CADUCEUS_FIXTURES_DIR};CADUCEUS_TESTDATA_DIR=${CADUCEUS_TESTDATA_DIR};CADUCEUS_TOKENIZER_DIR=${CADUCEUS_TOKENIZER_DIR};CADUCEUS_BIN_DIR=${CMAKE_BINARY_DIR}/bin")
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
  # GPU tests skip themselves without a device: CTest must report them skipped, never passed.
  if("cuda" IN_LIST T_LABELS)
    set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
  endif()
  if(T_FIXTURES)
    set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "${T_FIXTURES}")
  endif()
endfunction()

# caduceus_tool(NAME SOURCES ... DEPS ...): an executable placed in <build>/bin.
function(caduceus_tool name)
  cmake_parse_arguments(X "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${X_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${X_DEPS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
  target_compile_definitions(${name} PRIVATE CADUCEUS_DEFAULT_TOKENIZER_DIR="${CADUCEUS_TOKENIZER_DIR}")
endfunction()
