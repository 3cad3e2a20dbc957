#include "worker/sampling/sampling_params.h"

#include <cmath>

#include "absl/container/flat_hash_set.h"

#include "absl/strings/str_cat.h"

namespace caduceus::sampling {
namespace {

// Every check is written as "!(value is inside)" so that NaN, which fails all comparisons, is
// rejected by the same test.
absl::Status OutOfRange(const char* name, const char* range, float got) {
  return absl::InvalidArgumentError(absl::StrCat(name, " must be ", range, ", got ", got));
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f && std::isfinite(temperature))) {
    return OutOfRange("temperature", "a finite value >= 0", temperature);
  }
  if (top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 disables it), got ", top_k));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) return OutOfRange("top_p", "in (0, 1]", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return OutOfRange("min_p", "in [0, 1]", min_p);
  if (!(repetition_penalty > 0.0f && std::isfinite(repetition_penalty))) {
    return OutOfRange("repetition_penalty", "a finite value > 0", repetition_penalty);
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "in [-2, 2]", frequency_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "in [-2, 2]", presence_penalty);
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ", top_logprobs));
  }
  if (logit_bias.size() > static_cast<size_t>(kMaxLogitBiasEntries)) {
    return absl::InvalidArgumentError(absl::StrCat("logit_bias has ", logit_bias.size(),
                                                   " entries; at most ", kMaxLogitBiasEntries));
  }
  absl::flat_hash_set<int32_t> biased;
  for (const auto& [token, bias] : logit_bias) {
    if (!(bias >= -kMaxLogitBias && bias <= kMaxLogitBias)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit_bias of token ", token, " must be in [-100, 100], got ", bias));
    }
    if (!biased.insert(token).second) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias names token ", token, " twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace caduceus::sampling
