#include "router/http/openai_response.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "router/text/tokenizer.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::router::http {
namespace {

using nlohmann::ordered_json;

// Every string we put in JSON came from a tokenizer or a client: never let invalid UTF-8 throw.
std::string Dump(const ordered_json& j) {
  return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

struct TokenText {
  std::string text;        // valid UTF-8 (pieces of a character replaced)
  ordered_json bytes;      // the exact bytes, as OpenAI's "bytes" list
};

TokenText TokenOf(const ResponseContext& c, int32_t id) {
  TokenText t;
  t.bytes = ordered_json::array();
  absl::StatusOr<std::string> raw =
      c.tokenizer != nullptr ? c.tokenizer->TokenBytes(id) : absl::NotFoundError("");
  if (raw.ok()) {
    for (unsigned char b : *raw) t.bytes.push_back(b);
    t.text = text::SanitizeUtf8(*raw);
  }
  if (c.tokens_as_ids) t.text = absl::StrCat("token_id:", id);
  return t;
}

ordered_json ChatLogprobs(const ResponseContext& c,
                          const google::protobuf::RepeatedPtrField<v1::GeneratedTokenLogprobs>& lps) {
  ordered_json content = ordered_json::array();
  for (const v1::GeneratedTokenLogprobs& lp : lps) {
    TokenText t = TokenOf(c, lp.token_id());
    ordered_json entry = {{"token", t.text}, {"logprob", lp.logprob()}, {"bytes", t.bytes}};
    ordered_json top = ordered_json::array();
    for (const v1::TokenLogprob& alt : lp.top_logprobs()) {
      TokenText a = TokenOf(c, alt.token_id());
      top.push_back({{"token", a.text}, {"logprob", alt.logprob()}, {"bytes", a.bytes}});
    }
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return {{"content", std::move(content)}};
}

// The legacy completions form; text_offset counts bytes of the tokens' text from `offset`.
ordered_json CompletionLogprobs(const ResponseContext& c,
                                const google::protobuf::RepeatedPtrField<v1::GeneratedTokenLogprobs>& lps,
                                int64_t offset) {
  ordered_json tokens = ordered_json::array(), token_logprobs = ordered_json::array(),
               top_logprobs = ordered_json::array(), text_offset = ordered_json::array();
  for (const v1::GeneratedTokenLogprobs& lp : lps) {
    TokenText t = TokenOf(c, lp.token_id());
    text_offset.push_back(offset);
    offset += static_cast<int64_t>(t.text.size());
    tokens.push_back(t.text);
    token_logprobs.push_back(lp.logprob());
    ordered_json top = ordered_json::object();
    for (const v1::TokenLogprob& alt : lp.top_logprobs()) top[TokenOf(c, alt.token_id()).text] = alt.logprob();
    top_logprobs.push_back(std::move(top));
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs},
          {"top_logprobs", top_logprobs}, {"text_offset", text_offset}};
}

ordered_json UsageJson(const v1::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens()},
          {"completion_tokens", u.generated_tokens()},
          {"total_tokens", u.prompt_tokens() + u.generated_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens()}}}};
}

ordered_json Envelope(const ResponseContext& c, bool chunk) {
  const bool chat = c.endpoint == Endpoint::kChatCompletions;
  return {{"id", c.id},
          {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", c.created},
          {"model", c.model}};
}

ordered_json FinishJson(v1::FinishReason reason) {
  if (reason == v1::FINISH_REASON_UNSPECIFIED) return nullptr;
  return FinishReasonName(reason);
}

}  // namespace

const char* FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "abort";
    default:
      return "stop";
  }
}

std::string CompletionBody(const ResponseContext& c, std::span<const v1::GenerateResponse> responses) {
  ordered_json j = Envelope(c, /*chunk=*/false);
  ordered_json choices = ordered_json::array();
  v1::Usage usage;
  for (size_t i = 0; i < responses.size(); ++i) {
    const v1::GenerateResponse& r = responses[i];
    ordered_json choice = {{"index", i}};
    const bool with_logprobs = r.logprobs_size() > 0;
    if (c.endpoint == Endpoint::kChatCompletions) {
      choice["message"] = {{"role", "assistant"}, {"content", r.text()}};
      choice["logprobs"] = with_logprobs ? ChatLogprobs(c, r.logprobs()) : ordered_json(nullptr);
    } else {
      choice["text"] = r.text();
      choice["logprobs"] =
          with_logprobs ? CompletionLogprobs(c, r.logprobs(), 0) : ordered_json(nullptr);
    }
    choice["finish_reason"] = FinishJson(r.finish_reason());
    choices.push_back(std::move(choice));
    // The prompt once (the choices share it), every choice's generated tokens.
    if (i == 0) {
      usage.set_prompt_tokens(r.usage().prompt_tokens());
      usage.set_cached_prompt_tokens(r.usage().cached_prompt_tokens());
    }
    usage.set_generated_tokens(usage.generated_tokens() + r.usage().generated_tokens());
  }
  j["choices"] = std::move(choices);
  j["usage"] = UsageJson(usage);
  return Dump(j);
}

std::string RoleChunk(const ResponseContext& c) {
  ordered_json j = Envelope(c, /*chunk=*/true);
  j["choices"] = ordered_json::array(
      {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
        {"finish_reason", nullptr}}});
  return Dump(j);
}

std::string StreamChunk(const ResponseContext& c, const v1::GenerateStreamResponse& m) {
  const bool finished = m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  if (m.text_delta().empty() && m.logprobs_size() == 0 && !finished) return "";
  ordered_json j = Envelope(c, /*chunk=*/true);
  ordered_json choice = {{"index", 0}};
  const bool with_logprobs = m.logprobs_size() > 0;
  if (c.endpoint == Endpoint::kChatCompletions) {
    choice["delta"] = m.text_delta().empty() ? ordered_json::object()
                                             : ordered_json{{"content", m.text_delta()}};
    choice["logprobs"] = with_logprobs ? ChatLogprobs(c, m.logprobs()) : ordered_json(nullptr);
  } else {
    choice["text"] = m.text_delta();
    // Offsets within this chunk's text (a stream does not keep the running count).
    choice["logprobs"] = with_logprobs ? CompletionLogprobs(c, m.logprobs(), 0) : ordered_json(nullptr);
  }
  choice["finish_reason"] = FinishJson(m.finish_reason());
  j["choices"] = ordered_json::array({std::move(choice)});
  return Dump(j);
}

std::string UsageChunk(const ResponseContext& c, const v1::Usage& usage) {
  ordered_json j = Envelope(c, /*chunk=*/true);
  j["choices"] = ordered_json::array();
  j["usage"] = UsageJson(usage);
  return Dump(j);
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;  // the client went away (nginx's convention); nobody reads it
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

HttpError ErrorFor(const absl::Status& status) {
  HttpError e;
  e.http_status = HttpStatusFor(status.code());
  const char* type = e.http_status == 400   ? "invalid_request_error"
                     : e.http_status == 401 ? "authentication_error"
                     : e.http_status == 404 ? "not_found_error"
                     : e.http_status == 429 ? "rate_limit_error"
                     : e.http_status == 503 ? "service_unavailable"
                                            : "server_error";
  ordered_json j = {{"error",
                     {{"message", std::string(status.message())},
                      {"type", type},
                      {"param", nullptr},
                      {"code", absl::AsciiStrToLower(absl::StatusCodeToString(status.code()))}}}};
  e.body = Dump(j);
  return e;
}

}  // namespace caduceus::router::http
