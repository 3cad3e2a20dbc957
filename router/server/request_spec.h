// A validated generation request, independent of how it arrived (prompt text, ids or chat).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "caduceus/v1/generation.pb.h"
#include "router/text/chat_template.h"
#include "router/text/tokenizer.h"
#include "router/text/tokenizer_utf8.h"
#include "worker/model/model_config.h"
#include "worker/sampling/sampling_params.h"

namespace caduceus::router {

// Input limits; every one of them is a router flag.
struct RequestLimits {
  int32_t max_stop_sequences = 16;
  int32_t max_stop_bytes = 256;
  int32_t max_prompt_bytes = 1 << 20;   // text, before tokenization
  int32_t default_max_new_tokens = 128;
};

struct RequestSpec {
  std::string request_id;
  std::vector<int32_t> prompt_ids;
  sampling::SamplingParams sampling;
  int32_t max_new_tokens = 128;
  // max_new_tokens came from --default-max-new-tokens (the request left it unset): the router
  // may lower it to what a replica's KV cache holds instead of refusing the request.
  bool max_new_tokens_defaulted = false;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool logprobs = false;
  int32_t priority = 0;  // lower first (GenerationParameters.priority)
  // A Score request: prompt_ids is context + continuation, and the continuation starts at
  // score_from (0: a generation). It generates one greedy token, which nobody sees.
  int32_t score_from = 0;
};

// What the validator needs to know about the model.
struct ModelTextContext {
  const text::Tokenizer* tokenizer = nullptr;
  const text::ChatTemplate* chat_template = nullptr;  // null: Chat is refused
  const model::ModelConfig* config = nullptr;
};

// INVALID_ARGUMENT naming the field and the allowed values; never crashes on any input.
// Unset sampling fields take the model's generation_config.json defaults when it has them
// (temperature, top_p, top_k), else the proto's documented defaults.
absl::StatusOr<RequestSpec> SpecFromGenerate(const v1::GenerateRequest& request,
                                             const ModelTextContext& model,
                                             const RequestLimits& limits);
absl::StatusOr<RequestSpec> SpecFromChat(const v1::ChatRequest& request,
                                         const ModelTextContext& model,
                                         const RequestLimits& limits);
// Context + continuation, tokenized as lm-eval-harness does for text (see ScoreRequest).
absl::StatusOr<RequestSpec> SpecFromScore(const v1::ScoreRequest& request,
                                          const ModelTextContext& model,
                                          const RequestLimits& limits);
// Chat messages -> prompt ids (template + tokenization), shared with Tokenize.
absl::StatusOr<std::vector<int32_t>> EncodeMessages(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    const ModelTextContext& model);
// True when `s` is well-formed UTF-8 (router/text/tokenizer_utf8.h).
using text::IsValidUtf8;

// request_id is echoed in every stream message and in logs; longer ones are INVALID_ARGUMENT.
inline constexpr size_t kMaxRequestIdBytes = 256;
absl::Status CheckRequestId(const std::string& id);

}  // namespace caduceus::router
