// Per-request sampling parameters (OpenAI / vLLM vocabulary) and their validation.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace caduceus::sampling {

// Temperatures below this are treated as greedy (like vLLM's _SAMPLING_EPS): dividing logits by a
// near-zero temperature would overflow, and the result is argmax anyway.
inline constexpr float kGreedyTemperature = 1e-5f;
inline constexpr int32_t kMaxTopLogprobs = 20;
// OpenAI's range for a logit bias: -100 bans a token in practice, +100 forces it.
inline constexpr float kMaxLogitBias = 100.0f;
inline constexpr int32_t kMaxLogitBiasEntries = 1024;

struct SamplingParams {
  float temperature = 1.0f;  // [0, inf); < kGreedyTemperature => greedy (argmax, ties to lowest id)
  int32_t top_k = 0;         // 0 => disabled; else keep the k most likely (>= vocab => disabled)
  float top_p = 1.0f;        // nucleus, (0, 1]; 1 => disabled
  float min_p = 0.0f;        // [0, 1]: drop tokens with p < min_p * p_max; 0 => disabled
  float repetition_penalty = 1.0f;  // HF semantics (> 0): over prompt + generated ids,
                                    // logit > 0 ? logit / pen : logit * pen
  float frequency_penalty = 0.0f;   // OpenAI semantics [-2, 2]: logit -= freq * count(generated)
  float presence_penalty = 0.0f;    // [-2, 2]: logit -= pres * (count(generated) > 0)
  uint64_t seed = 0;                // same seed + same logits + same step => same token
  int32_t top_logprobs = 0;         // [0, 20]: alternatives reported per step
  // SampleResult::logprob is left 0 instead of computed. A greedy draw then needs no
  // log-sum-exp over the vocabulary (about half of its cost); the router sets it for requests
  // that did not ask for logprobs.
  bool skip_logprob = false;
  // (token id, bias in [-100, 100]) added to the token's logit after the penalties and before
  // temperature and truncation (OpenAI's logit_bias); at most kMaxLogitBiasEntries, each token
  // once. Logprobs still describe the model's own distribution. Ids outside the vocabulary are
  // ignored here (the router refuses them).
  std::vector<std::pair<int32_t, float>> logit_bias;

  // INVALID_ARGUMENT naming the offending parameter and its allowed range, e.g.
  // "top_p must be in (0, 1], got 1.5". NaN fails every range check.
  absl::Status Validate() const;

  bool IsGreedy() const { return temperature < kGreedyTemperature; }
  bool HasPenalties() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }
  // Whether the row is changed before the draw (penalties with history, or a logit bias).
  bool ModifiesLogits() const { return HasPenalties() || !logit_bias.empty(); }
  // The token is the plain argmax of the raw logits and nothing else of the row is reported, so
  // the lm_head may compute the argmax alone (kernels' LinearArgmax) instead of the logits row.
  bool ArgmaxSuffices() const {
    return IsGreedy() && !ModifiesLogits() && skip_logprob && top_logprobs == 0;
  }
};

}  // namespace caduceus::sampling
