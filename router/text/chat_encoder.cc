#include "router/text/chat_encoder.h"

#include <string>
#include <string_view>

#include "common/status_macros.h"
#include "router/text/jinja/builtins.h"

namespace caduceus::text {
namespace {

void Append(std::vector<int32_t>* out, const std::vector<int32_t>& ids) {
  out->insert(out->end(), ids.begin(), ids.end());
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tokenizer,
                                                const ChatTemplate& chat_template,
                                                const std::vector<ChatMessage>& messages,
                                                bool add_generation_prompt) {
  ASSIGN_OR_RETURN(std::string rendered, chat_template.Render(messages, add_generation_prompt));
  // Locate each message's content in the rendered text, in order (templates emit messages in
  // order; Llama-3's trims the content, so look for the trimmed form when the raw one is absent).
  // Between contents lies template text: special tokens there are parsed; inside contents, not.
  std::vector<int32_t> ids;
  size_t cursor = 0;
  for (const ChatMessage& m : messages) {
    std::string_view content = m.content;
    size_t at = content.empty() ? std::string::npos : rendered.find(content, cursor);
    if (at == std::string::npos) {
      content = jinja::TrimWhitespace(content);  // the same rule as the `trim` filter
      at = content.empty() ? std::string::npos : rendered.find(content, cursor);
    }
    if (at == std::string::npos) continue;  // the template dropped or transformed this message
    Append(&ids, tokenizer.Encode(std::string_view(rendered).substr(cursor, at - cursor),
                                  /*allow_special=*/true));
    Append(&ids, tokenizer.Encode(content, /*allow_special=*/false));
    cursor = at + content.size();
  }
  Append(&ids, tokenizer.Encode(std::string_view(rendered).substr(cursor), /*allow_special=*/true));
  return ids;
}

}  // namespace caduceus::text
