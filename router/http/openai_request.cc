#include "router/http/openai_request.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::router::http {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& field, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

std::string TypeName(const json& v) { return v.is_number_integer() ? "integer" : v.type_name(); }

absl::Status WrongType(const std::string& field, const std::string& expected, const json& v) {
  return Invalid(field, absl::StrCat("expected ", expected, ", got ", TypeName(v)));
}

// The field's value, or null when it is absent or JSON null (OpenAI clients send null for
// "unset").
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<double>> Number(const json& body, const char* name) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return WrongType(name, "a number", *v);
  const double d = v->get<double>();
  if (!std::isfinite(d)) return Invalid(name, "not a finite number");
  return d;
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& body, const char* name) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(name, "out of range");
    }
    return static_cast<int64_t>(u);
  }
  if (!v->is_number_integer()) return WrongType(name, "an integer", *v);
  return v->get<int64_t>();
}

absl::StatusOr<std::optional<bool>> Bool(const json& body, const char* name) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return WrongType(name, "true or false", *v);
  return v->get<bool>();
}

// Refuses a field this server does not implement, unless it holds the value that means "off".
absl::Status RefuseUnsupported(const json& body) {
  for (const char* name : {"tools", "functions", "prediction", "audio", "modalities"}) {
    const json* v = Field(body, name);
    if (v != nullptr && !v->empty()) {
      return Invalid(name, "not supported by this server; remove the field");
    }
  }
  for (const char* name : {"tool_choice", "function_call"}) {
    const json* v = Field(body, name);
    if (v != nullptr && *v != "none") return Invalid(name, "not supported by this server (no tools)");
  }
  if (const json* v = Field(body, "response_format"); v != nullptr) {
    const json* type = v->is_object() ? Field(*v, "type") : nullptr;
    if (type == nullptr || *type != "text") {
      return Invalid("response_format", "only {\"type\": \"text\"} is supported");
    }
  }
  if (const json* v = Field(body, "suffix"); v != nullptr && *v != "") {
    return Invalid("suffix", "not supported by this server");
  }
  ASSIGN_OR_RETURN(auto echo, Bool(body, "echo"));
  if (echo.value_or(false)) return Invalid("echo", "not supported by this server");
  ASSIGN_OR_RETURN(auto best_of, Integer(body, "best_of"));
  if (best_of.has_value() && *best_of != 1) {
    return Invalid("best_of", absl::StrCat(*best_of, " candidates asked; this server does not "
                                               "rank candidates (use n and pick yourself)"));
  }
  return absl::OkStatus();
}

// OpenAI's logit_bias: {"<token id>": bias, ...}; the keys are token ids written as strings.
// Ranges and the vocabulary are the gRPC validator's to check (one place for the messages).
absl::Status ParseLogitBias(const json& body, v1::SamplingParameters* s) {
  const json* v = Field(body, "logit_bias");
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_object()) return WrongType("logit_bias", "an object of token id -> bias", *v);
  for (const auto& [key, bias] : v->items()) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(key, &id) || id < 0) {
      return Invalid("logit_bias", "keys must be token ids (decimal integers >= 0)");
    }
    if (!bias.is_number()) return WrongType("logit_bias values", "numbers", bias);
    (*s->mutable_logit_bias())[id] = static_cast<float>(bias.get<double>());
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const json& body, v1::GenerationParameters* params) {
  const json* v = Field(body, "stop");
  if (v == nullptr) return absl::OkStatus();
  if (v->is_string()) {
    params->add_stop(v->get<std::string>());
    return absl::OkStatus();
  }
  if (!v->is_array()) return WrongType("stop", "a string or an array of strings", *v);
  for (const json& s : *v) {
    if (!s.is_string()) return WrongType("stop[]", "a string", s);
    params->add_stop(s.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseIdArray(const char* field, const json& v,
                          google::protobuf::RepeatedField<int32_t>* out) {
  if (!v.is_array()) return WrongType(field, "an array of token ids", v);
  for (const json& id : v) {
    if (!id.is_number_integer()) return WrongType(field, "integer token ids", id);
    const int64_t i = id.get<int64_t>();
    if (i < 0 || i > std::numeric_limits<int32_t>::max()) {
      return Invalid(field, absl::StrCat(i, " is not a token id"));
    }
    out->Add(static_cast<int32_t>(i));
  }
  return absl::OkStatus();
}

// Sampling and length fields shared by both endpoints.
absl::Status ParseParameters(const json& body, Endpoint endpoint, OpenAiCall* call) {
  v1::GenerationParameters* p = call->mutable_params();
  v1::SamplingParameters* s = p->mutable_sampling();

  std::optional<int64_t> max_tokens;
  for (const char* name : {"max_completion_tokens", "max_tokens"}) {
    ASSIGN_OR_RETURN(auto v, Integer(body, name));
    if (!v.has_value() || max_tokens.has_value()) continue;
    if (*v < 1 || *v > std::numeric_limits<int32_t>::max()) {
      return Invalid(name, absl::StrCat("must be >= 1, got ", *v));
    }
    max_tokens = v;
  }
  // OpenAI's completions default; chat leaves the router's --default-max-new-tokens.
  if (!max_tokens.has_value() && endpoint == Endpoint::kCompletions) max_tokens = 16;
  if (max_tokens.has_value()) p->set_max_new_tokens(static_cast<uint32_t>(*max_tokens));

  ASSIGN_OR_RETURN(auto temperature, Number(body, "temperature"));
  if (temperature.has_value()) s->set_temperature(static_cast<float>(*temperature));
  ASSIGN_OR_RETURN(auto top_p, Number(body, "top_p"));
  if (top_p.has_value()) s->set_top_p(static_cast<float>(*top_p));
  ASSIGN_OR_RETURN(auto top_k, Integer(body, "top_k"));
  if (top_k.has_value()) {
    // vLLM spells "off" -1; here it is 0.
    if (*top_k < -1 || *top_k > std::numeric_limits<int32_t>::max()) {
      return Invalid("top_k", absl::StrCat("must be -1 (off) or >= 0, got ", *top_k));
    }
    s->set_top_k(*top_k == -1 ? 0 : static_cast<int32_t>(*top_k));
  }
  ASSIGN_OR_RETURN(auto min_p, Number(body, "min_p"));
  if (min_p.has_value()) s->set_min_p(static_cast<float>(*min_p));
  ASSIGN_OR_RETURN(auto repetition, Number(body, "repetition_penalty"));
  if (repetition.has_value()) s->set_repetition_penalty(static_cast<float>(*repetition));
  ASSIGN_OR_RETURN(auto frequency, Number(body, "frequency_penalty"));
  if (frequency.has_value()) s->set_frequency_penalty(static_cast<float>(*frequency));
  ASSIGN_OR_RETURN(auto presence, Number(body, "presence_penalty"));
  if (presence.has_value()) s->set_presence_penalty(static_cast<float>(*presence));
  ASSIGN_OR_RETURN(auto seed, Integer(body, "seed"));
  if (seed.has_value()) s->set_seed(static_cast<uint64_t>(*seed));
  RETURN_IF_ERROR(ParseLogitBias(body, s));

  // Chat: logprobs is a boolean and top_logprobs the number of alternatives; completions:
  // logprobs is that number (null: none).
  if (endpoint == Endpoint::kChatCompletions) {
    ASSIGN_OR_RETURN(auto logprobs, Bool(body, "logprobs"));
    ASSIGN_OR_RETURN(auto top, Integer(body, "top_logprobs"));
    if (top.has_value() && *top > 0 && !logprobs.value_or(false)) {
      return Invalid("top_logprobs", "needs \"logprobs\": true");
    }
    p->set_logprobs(logprobs.value_or(false));
    if (top.has_value()) {
      if (*top < 0 || *top > 20) return Invalid("top_logprobs", absl::StrCat("must be in [0, 20], got ", *top));
      s->set_top_logprobs(static_cast<int32_t>(*top));
    }
  } else {
    const json* v = Field(body, "logprobs");
    if (v != nullptr && v->is_boolean()) {  // some clients send the chat form here
      p->set_logprobs(v->get<bool>());
    } else {
      ASSIGN_OR_RETURN(auto top, Integer(body, "logprobs"));
      if (top.has_value()) {
        if (*top < 0 || *top > 20) return Invalid("logprobs", absl::StrCat("must be in [0, 20], got ", *top));
        p->set_logprobs(true);
        s->set_top_logprobs(static_cast<int32_t>(*top));
      }
    }
  }

  RETURN_IF_ERROR(ParseStop(body, p));
  if (const json* v = Field(body, "stop_token_ids"); v != nullptr) {
    RETURN_IF_ERROR(ParseIdArray("stop_token_ids", *v, p->mutable_stop_token_ids()));
  }
  ASSIGN_OR_RETURN(auto priority, Integer(body, "priority"));
  if (priority.has_value()) {
    if (*priority < std::numeric_limits<int32_t>::min() || *priority > std::numeric_limits<int32_t>::max()) {
      return Invalid("priority", "out of range");
    }
    p->set_priority(static_cast<int32_t>(*priority));
  }
  ASSIGN_OR_RETURN(auto ignore_eos, Bool(body, "ignore_eos"));
  p->set_ignore_eos(ignore_eos.value_or(false));

  ASSIGN_OR_RETURN(auto stream, Bool(body, "stream"));
  call->stream = stream.value_or(false);
  if (const json* v = Field(body, "stream_options"); v != nullptr) {
    if (!v->is_object()) return WrongType("stream_options", "an object", *v);
    ASSIGN_OR_RETURN(auto include_usage, Bool(*v, "include_usage"));
    call->include_usage = include_usage.value_or(false);
  }
  ASSIGN_OR_RETURN(auto as_ids, Bool(body, "return_tokens_as_token_ids"));
  call->tokens_as_ids = as_ids.value_or(false);
  ASSIGN_OR_RETURN(auto n, Integer(body, "n"));
  if (n.has_value()) {
    if (*n < 1 || *n > kMaxChoices) {
      return Invalid("n", absl::StrCat("must be in [1, ", kMaxChoices, "], got ", *n));
    }
    if (*n > 1 && call->stream) {
      return Invalid("n", "more than one choice is only served without \"stream\" (send several "
                          "streaming requests)");
    }
    call->n = static_cast<int>(*n);
  }
  return absl::OkStatus();
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined).
absl::StatusOr<std::string> MessageContent(const json& message, const std::string& field) {
  const json* content = Field(message, "content");
  if (content == nullptr) return Invalid(field + ".content", "missing (tool calls are not supported)");
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) return WrongType(field + ".content", "a string or an array of parts", *content);
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const json& part = (*content)[i];
    const std::string part_field = absl::StrCat(field, ".content[", i, "]");
    if (!part.is_object()) return WrongType(part_field, "an object", part);
    const json* type = Field(part, "type");
    if (type == nullptr || *type != "text") {
      return Invalid(part_field + ".type", "only \"text\" parts are supported (a text-only model)");
    }
    const json* t = Field(part, "text");
    if (t == nullptr || !t->is_string()) return Invalid(part_field + ".text", "expected a string");
    text += t->get<std::string>();
  }
  return text;
}

absl::Status ParseMessages(const json& body, v1::ChatRequest* chat) {
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return Invalid("messages", "required");
  if (!messages->is_array()) return WrongType("messages", "an array", *messages);
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return WrongType(field, "an object", m);
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) return Invalid(field + ".role", "expected a string");
    v1::ChatMessage* out = chat->add_messages();
    // OpenAI renamed "system" to "developer" for its newer models; the template knows "system".
    out->set_role(*role == "developer" ? std::string("system") : role->get<std::string>());
    ASSIGN_OR_RETURN(auto content, MessageContent(m, field));
    out->set_content(std::move(content));
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const json& body, v1::GenerateRequest* generate) {
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Invalid("prompt", "required");
  if (prompt->is_string()) {
    generate->set_prompt(prompt->get<std::string>());
    return absl::OkStatus();
  }
  if (!prompt->is_array()) return WrongType("prompt", "a string or an array of token ids", *prompt);
  if (prompt->empty()) return Invalid("prompt", "empty");
  const json& first = (*prompt)[0];
  if (first.is_number_integer()) return ParseIdArray("prompt", *prompt, generate->mutable_prompt_ids());
  // A batch of prompts: one is accepted (the SDKs wrap a single prompt so).
  if (prompt->size() != 1) {
    return Invalid("prompt", absl::StrCat(prompt->size(), " prompts; this server takes one per "
                                                           "request (send several requests)"));
  }
  if (first.is_string()) {
    generate->set_prompt(first.get<std::string>());
    return absl::OkStatus();
  }
  return ParseIdArray("prompt[0]", first, generate->mutable_prompt_ids());
}

}  // namespace

absl::StatusOr<OpenAiCall> ParseOpenAiRequest(Endpoint endpoint, std::string_view body_text) {
  // No exceptions: a body that is not JSON (or not UTF-8) is a discarded value.
  const json body = json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return absl::InvalidArgumentError("the request body is not valid JSON (UTF-8)");
  }
  if (!body.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  OpenAiCall call;
  call.endpoint = endpoint;
  if (const json* model = Field(body, "model"); model != nullptr) {
    if (!model->is_string()) return WrongType("model", "a string", *model);
    call.model = model->get<std::string>();
  }
  RETURN_IF_ERROR(RefuseUnsupported(body));
  RETURN_IF_ERROR(ParseParameters(body, endpoint, &call));
  absl::Status st = endpoint == Endpoint::kChatCompletions ? ParseMessages(body, &call.chat)
                                                           : ParsePrompt(body, &call.generate);
  if (!st.ok()) return st;
  return call;
}

}  // namespace caduceus::router::http
