// Token sampling for one sequence: turns one fp32 logit row over the full vocabulary into one
// token, its logprob and the top alternatives.
//
// Processing order (same as vLLM):
//   1. penalties, on a copy of the row: repetition (HF: over the unique ids of prompt + generated
//      tokens, logit > 0 ? logit / pen : logit * pen), then frequency and presence (OpenAI: over
//      generated tokens only, logit -= freq * count + pres * (count > 0));
//   2. temperature: logits / T;
//   3. top-k: keep the k largest (ties at the k-th value broken towards the lowest ids);
//   4. top-p: on the distribution renormalized after top-k, keep the smallest prefix (by
//      probability desc, id asc) whose mass reaches top_p;
//   5. min-p: drop tokens with p < min_p * p_max;
//   6. draw from the renormalized survivors with a uniform that is a pure function of
//      (seed, step) — splitmix64, counter-based — so a preempted-and-recomputed sequence, or the
//      same sequence in another batch, samples the same token.
// Greedy (temperature < kGreedyTemperature, including 0) applies the penalties and then takes the
// argmax, ties to the lowest id; top-k/top-p/min-p are ignored (they always keep the argmax, so
// they could not change the result). Without penalties greedy is a pure argmax of the raw row.
//
// Logprobs (SampleResult::logprob and top_logprobs) are the log-softmax of the RAW model logits,
// before penalties, temperature and truncation, as vLLM reports by default.
//
// Non-finite logits: NaN is treated as -inf (never sampled), +inf as FLT_MAX. If every logit is
// NaN/-inf (before or after penalties), Sample returns INVALID_ARGUMENT instead of a token.
// Token ids outside [0, vocab) in the prompt or passed to Accept are ignored by the penalties.
//
// Efficiency (128k vocabulary, hundreds of sequences per step): no full sort, no per-call
// allocation once the thread_local scratch has grown. A Sample() is one max-per-64-block pass
// and one vectorized exp pass over the raw row (for the logprobs; skipped when
// params.skip_logprob and nothing else needs the raw sum), plus, depending on params:
//   greedy: nothing more (a first-index scan that skips blocks below the max);
//   top-k: the k-th largest block maximum bounds the top-k set from below, so only tokens above
//     it are gathered (typically ~2k of them for k = 50) and nth_element picks the k;
//   top-p without top-k: a second exp pass for the total mass when T != 1 or penalties are set,
//     then tokens within 8 nats of the best are gathered (widened until they provably hold
//     top_p of the mass), and the nucleus is cut by bucketing candidates on their logit and
//     sorting only the bucket where the cut falls;
//   no truncation: an inverse-CDF draw over per-block sums, scanning one block.
// Penalties add a copy of the row and one more max pass. Sample is const; scratch buffers are
// thread_local, so Sample may run concurrently for different sequences on different threads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/sampling/sampling_params.h"

namespace caduceus::sampling {

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;                    // of `token`, log-softmax of the raw logits
                                           // (0 with params.skip_logprob)
  std::vector<TokenLogprob> top_logprobs;  // params.top_logprobs entries, logprob desc, id asc
};

// The result of a greedy draw whose argmax was taken elsewhere (the lm_head's LinearArgmax, for
// params.ArgmaxSuffices()): `token`, or -1 when no logit was above -inf, which is the same
// INVALID_ARGUMENT that Sample returns for such a row.
absl::StatusOr<SampleResult> GreedyResult(int32_t token);

// Per-sequence state: token counts for the penalties. Not thread-safe for Accept; Sample is
// const and safe to call concurrently (on this or other samplers) as long as no Accept runs.
class SequenceSampler {
 public:
  // Invalid params are not fatal here: Sample then returns params.Validate()'s error.
  SequenceSampler(SamplingParams params, std::span<const int32_t> prompt_ids);

  // `step` = index of the token being generated (0 for the first). Errors: invalid params, an
  // empty row, or a row with no finite logit.
  absl::StatusOr<SampleResult> Sample(std::span<const float> logits, uint64_t step) const;

  // Records a generated token for the penalties.
  void Accept(int32_t token);

  const SamplingParams& params() const { return params_; }

 private:
  // Copies the row into `out` (sanitized) and applies the penalties in place.
  void ApplyPenalties(std::span<const float> logits, std::vector<float>* out) const;

  SamplingParams params_;
  absl::Status params_status_;
  // Unique prompt + generated ids; only filled when repetition_penalty != 1.
  absl::flat_hash_set<int32_t> seen_ids_;
  // Generated-token counts; only filled when frequency or presence penalty is set.
  absl::flat_hash_map<int32_t, int32_t> generated_counts_;
};

}  // namespace caduceus::sampling
