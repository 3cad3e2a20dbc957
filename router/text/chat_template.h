// Renders a conversation into the prompt text the model was trained on, using the model's own
// Jinja chat template from its tokenizer_config.json (the same thing HF transformers'
// apply_chat_template does). The template is parsed once at load; rendering is a tree walk.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "router/text/jinja/template.h"

namespace caduceus::text {

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // Reads "chat_template" (a string, or the list-of-{name, template} form, taking "default"),
  // "bos_token" and "eos_token" (a string or an {"content": ...} object) from a Hugging Face
  // tokenizer_config.json and parses the template. NOT_FOUND if the file is missing,
  // INVALID_ARGUMENT if it has no usable template or the template is unsupported/malformed.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromTokenizerConfig(const std::string& path);
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromString(std::string template_text,
                                                                   std::string bos_token,
                                                                   std::string eos_token);

  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const;
  // `extra_context` (a JSON object, or null) adds variables such as "date_string" or "tools".
  // `messages`, `add_generation_prompt`, `bos_token` and `eos_token` always come from the
  // arguments and the config; extra keys with those names are rejected. Note nlohmann::json
  // stores object keys sorted, so `tools | tojson` lists keys alphabetically; use RenderJson
  // with ordered_json to keep the client's key order (as HF transformers does).
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt,
                                     const nlohmann::json& extra_context) const;
  // Same, with messages as JSON (a list of objects) so callers can pass tool calls or
  // structured tool results. Each message needs a string "role" and a string "content"
  // (tool-call turns may omit content; tool/ipython results may carry a JSON object/array).
  absl::StatusOr<std::string> RenderJson(const nlohmann::ordered_json& messages,
                                         bool add_generation_prompt,
                                         const nlohmann::ordered_json& extra_context) const;

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const std::string& source() const { return source_; }

  // Pins the clock strftime_now() reads (tests only; default: the real clock, local zone).
  void SetClockForTesting(absl::Time now, absl::TimeZone zone);

 private:
  ChatTemplate(std::unique_ptr<jinja::Template> tmpl, std::string source, std::string bos,
               std::string eos)
      : template_(std::move(tmpl)), source_(std::move(source)), bos_token_(std::move(bos)),
        eos_token_(std::move(eos)) {}

  template <typename Json>
  absl::StatusOr<std::string> RenderValues(jinja::Value messages, bool add_generation_prompt,
                                           const Json& extra_context) const;

  std::unique_ptr<jinja::Template> template_;
  std::string source_;
  std::string bos_token_;
  std::string eos_token_;
  bool fixed_clock_ = false;
  absl::Time now_;
  absl::TimeZone zone_;
};

}  // namespace caduceus::text
