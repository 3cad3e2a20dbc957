// The public gRPC API's answers as OpenAI-compatible JSON: chat.completion, text_completion,
// their stream chunks, and error bodies with the HTTP status that goes with each gRPC code.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "caduceus/v1/generation.pb.h"
#include "router/http/openai_request.h"

namespace caduceus::text {
class Tokenizer;
}

namespace caduceus::router::http {

struct ResponseContext {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string id;        // "chatcmpl-<request id>" or "cmpl-<request id>"
  std::string model;     // the served model name
  int64_t created = 0;   // Unix seconds
  bool tokens_as_ids = false;
  const text::Tokenizer* tokenizer = nullptr;  // logprob tokens' text and bytes
};

// "chat.completion" or "text_completion" for a finished unary call: one choice per response
// (OpenAI's n), index in order; usage counts the prompt once and every choice's tokens.
std::string CompletionBody(const ResponseContext& context,
                           std::span<const v1::GenerateResponse> responses);
inline std::string CompletionBody(const ResponseContext& context,
                                  const v1::GenerateResponse& response) {
  return CompletionBody(context, std::span<const v1::GenerateResponse>(&response, 1));
}

// Stream chunks (each one SSE "data:" payload).
// The chat stream's first chunk: {"delta": {"role": "assistant", "content": ""}}.
std::string RoleChunk(const ResponseContext& context);
// One message's text, logprobs and finish reason; "" when it carries none of them (the first
// message may hold only prompt ids, or a UTF-8 character may still be pending).
std::string StreamChunk(const ResponseContext& context, const v1::GenerateStreamResponse& message);
// stream_options.include_usage: the last chunk, with no choices.
std::string UsageChunk(const ResponseContext& context, const v1::Usage& usage);

// OpenAI's finish_reason for ours ("stop", "length"; "abort" for a cancelled request).
const char* FinishReasonName(v1::FinishReason reason);

struct HttpError {
  int http_status = 500;
  std::string body;  // {"error": {"message", "type", "param", "code"}}
};
// INVALID_ARGUMENT/FAILED_PRECONDITION 400, UNAUTHENTICATED 401, NOT_FOUND 404,
// RESOURCE_EXHAUSTED 429, DEADLINE_EXCEEDED 504, UNAVAILABLE 503, CANCELLED 499, others 500.
HttpError ErrorFor(const absl::Status& status);
int HttpStatusFor(absl::StatusCode code);

}  // namespace caduceus::router::http
