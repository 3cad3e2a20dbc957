// Fuzzes the Jinja chat-template engine (lexer, parser, evaluator) with template text: a
// template that parses is rendered over a short conversation. Errors are fine; crashes, hangs
// and unbounded memory are not (libFuzzer's -timeout and -rss_limit_mb catch the last two).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "router/text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string source(reinterpret_cast<const char*>(data), size);
  auto tmpl = caduceus::text::ChatTemplate::FromString(std::move(source), "<|begin_of_text|>",
                                                       "<|eot_id|>");
  if (!tmpl.ok()) return 0;
  const std::vector<caduceus::text::ChatMessage> messages = {
      {"system", "You are a clinical assistant."},
      {"user", "Dose of amoxicillin for a 20 kg child?"},
      {"assistant", "25-45 mg/kg/day divided every 12 hours."},
      {"user", "And for penicillin allergy?"}};
  for (bool add_generation_prompt : {false, true}) {
    (*tmpl)->Render(messages, add_generation_prompt).IgnoreError();
  }
  return 0;
}
