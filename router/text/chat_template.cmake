# Jinja chat-template renderer (router/text/jinja/ + chat_template.{h,cc}). Included by
# router/text/CMakeLists.txt.
caduceus_library(caduceus_chat_template
  SOURCES
    jinja/value.cc
    jinja/lexer.cc
    jinja/names.cc
    jinja/parser.cc
    jinja/builtins.cc
    jinja/evaluator.cc
    jinja/template.cc
    chat_template.cc
  DEPS absl::status absl::statusor absl::strings absl::str_format absl::time
       absl::flat_hash_map nlohmann_json::nlohmann_json caduceus_common)

caduceus_test(caduceus_jinja_test
  SOURCES jinja/lexer_test.cc jinja/template_test.cc
  DEPS caduceus_chat_template)

caduceus_test(caduceus_chat_template_test
  SOURCES chat_template_test.cc
  DEPS caduceus_chat_template)
