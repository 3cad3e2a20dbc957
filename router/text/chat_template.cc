#include "router/text/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::text {
namespace {

using jinja::Value;
using jinja::ValueDict;
using jinja::ValueList;

// bos/eos tokens appear either as plain strings or as AddedToken objects.
absl::StatusOr<std::string> TokenField(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer config: \"", key, "\" must be a string or {\"content\": string}"));
}

absl::StatusOr<std::string> TemplateField(const nlohmann::json& config) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    return absl::InvalidArgumentError("tokenizer config has no \"chat_template\"");
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
    return absl::InvalidArgumentError("tokenizer config: \"chat_template\" list has no \"default\" entry");
  }
  return absl::InvalidArgumentError("tokenizer config: \"chat_template\" must be a string or a list");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromTokenizerConfig(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open tokenizer config ", path));
  std::stringstream buffer;
  buffer << file.rdbuf();
  nlohmann::json config = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  auto prefix = [&](absl::Status s) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  };
  auto text = TemplateField(config);
  if (!text.ok()) return prefix(text.status());
  auto bos = TokenField(config, "bos_token");
  if (!bos.ok()) return prefix(bos.status());
  auto eos = TokenField(config, "eos_token");
  if (!eos.ok()) return prefix(eos.status());
  auto result = FromString(*std::move(text), *std::move(bos), *std::move(eos));
  if (!result.ok()) return prefix(result.status());
  return result;
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromString(std::string template_text,
                                                                       std::string bos_token,
                                                                       std::string eos_token) {
  ASSIGN_OR_RETURN(auto tmpl, jinja::Template::Parse(template_text));
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(tmpl), std::move(template_text),
                                                        std::move(bos_token), std::move(eos_token)));
}

void ChatTemplate::SetClockForTesting(absl::Time now, absl::TimeZone zone) {
  fixed_clock_ = true;
  now_ = now;
  zone_ = zone;
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  return Render(messages, add_generation_prompt, nlohmann::json());
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt,
                                                 const nlohmann::json& extra_context) const {
  ValueList list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    list.push_back(Value::Dict({{"role", Value::String(m.role)}, {"content", Value::String(m.content)}}));
  }
  return RenderValues(Value::List(std::move(list)), add_generation_prompt, extra_context);
}

absl::StatusOr<std::string> ChatTemplate::RenderJson(const nlohmann::ordered_json& messages,
                                                     bool add_generation_prompt,
                                                     const nlohmann::ordered_json& extra_context) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON array");
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::ordered_json& m = messages[i];
    if (!m.is_object()) return absl::InvalidArgumentError(absl::StrCat("message ", i, " is not an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, ": \"role\" must be a string"));
    }
    // Content is text; only tool-call turns may omit it and only tool results may be JSON.
    auto content = m.find("content");
    const bool has_content = content != m.end() && !content->is_null();
    const bool tool_result = *role == "tool" || *role == "ipython";
    if (has_content && !content->is_string() && !(tool_result && content->is_structured())) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, ": \"content\" must be a string"));
    }
    if (!has_content && !m.contains("tool_calls")) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, ": \"content\" is missing"));
    }
  }
  ASSIGN_OR_RETURN(Value list, Value::FromJson(messages));
  return RenderValues(std::move(list), add_generation_prompt, extra_context);
}

template <typename Json>
absl::StatusOr<std::string> ChatTemplate::RenderValues(Value messages, bool add_generation_prompt,
                                                       const Json& extra_context) const {
  ValueDict context;
  if (!extra_context.is_null()) {
    if (!extra_context.is_object()) return absl::InvalidArgumentError("extra_context must be a JSON object");
    for (const auto& [key, value] : extra_context.items()) {
      if (key == "messages" || key == "add_generation_prompt" || key == "bos_token" || key == "eos_token") {
        return absl::InvalidArgumentError(absl::StrCat("extra_context may not set \"", key, "\""));
      }
      ASSIGN_OR_RETURN(Value v, Value::FromJson(value));
      context.emplace_back(key, std::move(v));
    }
  }
  context.emplace_back("messages", std::move(messages));
  context.emplace_back("add_generation_prompt", Value::Bool(add_generation_prompt));
  context.emplace_back("bos_token", Value::String(bos_token_));
  context.emplace_back("eos_token", Value::String(eos_token_));
  if (fixed_clock_) return template_->Render(context, now_, zone_);
  return template_->Render(context);
}

}  // namespace caduceus::text
