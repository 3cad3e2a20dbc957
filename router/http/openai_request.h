// OpenAI-compatible request bodies (/v1/chat/completions, /v1/completions) translated into the
// public gRPC API's messages, so that an HTTP call runs through exactly the same validation,
// scheduler, audit and metrics as a gRPC one (see docs/openai-http.md).
//
// Only the translation is checked here (JSON types, OpenAI fields we cannot honour); the values
// themselves (temperature range, stop limits, context length) are the router's to validate, so
// that both APIs refuse the same things with the same words.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "caduceus/v1/generation.pb.h"

namespace caduceus::router::http {

enum class Endpoint { kChatCompletions, kCompletions };

struct OpenAiCall {
  Endpoint endpoint = Endpoint::kChatCompletions;
  v1::ChatRequest chat;          // kChatCompletions
  v1::GenerateRequest generate;  // kCompletions
  std::string model;             // as the client named it ("" when absent)
  bool stream = false;
  // OpenAI's n: choices wanted (unary calls only, at most kMaxChoices). The front sends n
  // requests; with a seed s, choice i samples with seed s + i.
  int n = 1;
  bool include_usage = false;    // stream_options.include_usage: a last chunk with usage
  // vLLM's return_tokens_as_token_ids: logprob tokens as "token_id:<id>" (exact, and what a
  // client needs when a token is only part of a UTF-8 character).
  bool tokens_as_ids = false;

  v1::GenerationParameters* mutable_params() {
    return endpoint == Endpoint::kChatCompletions ? chat.mutable_params()
                                                  : generate.mutable_params();
  }
  void set_request_id(const std::string& id) {
    chat.set_request_id(id);
    generate.set_request_id(id);
  }
};

// INVALID_ARGUMENT naming the OpenAI field for a body that is not JSON, a field of the wrong
// type, or a feature this server does not provide (n > 1 when streaming, tools, echo, ...).
// Fields OpenAI defines but that do not change the output (user, metadata, store) are ignored,
// as are unknown ones. `max_tokens` unset leaves the router's --default-max-new-tokens; for
// completions OpenAI's own default of 16 applies.
absl::StatusOr<OpenAiCall> ParseOpenAiRequest(Endpoint endpoint, std::string_view body);

inline constexpr int kMaxChoices = 16;

}  // namespace caduceus::router::http
