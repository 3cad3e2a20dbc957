# Llama-3 tokenizer + incremental detokenizer (included by router/text/CMakeLists.txt).
caduceus_library(caduceus_tokenizer
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/tokenizer_utf8.cc
    ${CMAKE_CURRENT_LIST_DIR}/pretokenizer.cc
    ${CMAKE_CURRENT_LIST_DIR}/byte_level_bpe.cc
    ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cc
    ${CMAKE_CURRENT_LIST_DIR}/detokenizer.cc
  DEPS
    absl::status absl::statusor absl::strings absl::flat_hash_map absl::synchronization
  PRIVATE_DEPS
    nlohmann_json::nlohmann_json ICU::uc)

caduceus_test(caduceus_tokenizer_test
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/tokenizer_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/pretokenizer_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/detokenizer_test.cc
  DEPS caduceus_tokenizer nlohmann_json::nlohmann_json)

if(benchmark_FOUND)
  caduceus_tool(caduceus-bench-tokenizer SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bench.cc
    DEPS caduceus_tokenizer nlohmann_json::nlohmann_json benchmark::benchmark)
  target_compile_definitions(caduceus-bench-tokenizer PRIVATE
    CADUCEUS_DEFAULT_CORPUS="${CADUCEUS_FIXTURES_DIR}/tokenizer/corpus.json")
endif()
