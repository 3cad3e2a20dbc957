#include "tools/cli/generation_flags.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tools/cli/usage_error.h"

// std::optional flags are unset (std::nullopt) unless given on the command line, which is how we
// know whether to set the proto's presence-tracked (oneof) fields.
ABSL_FLAG(std::optional<int32_t>, max_new_tokens, std::nullopt,
          "maximum number of generated tokens [router default: 128]");
ABSL_FLAG(std::optional<double>, temperature, std::nullopt,
          "sampling temperature; 0 = greedy [router default: 1.0]");
ABSL_FLAG(int32_t, top_k, 0, "keep the k most likely tokens (0 = off)");
ABSL_FLAG(std::optional<double>, top_p, std::nullopt, "nucleus sampling mass (0, 1] [1.0]");
ABSL_FLAG(double, min_p, 0.0, "drop tokens below min_p * p(top token) (0 = off)");
ABSL_FLAG(std::optional<double>, repetition_penalty, std::nullopt,
          "HF repetition penalty (> 0) [1.0 = off]");
ABSL_FLAG(double, frequency_penalty, 0.0, "frequency penalty [-2, 2]");
ABSL_FLAG(double, presence_penalty, 0.0, "presence penalty [-2, 2]");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "sampling seed (same seed + prompt = same output) [random]");
ABSL_FLAG(std::optional<int32_t>, logprobs, std::nullopt,
          "report each generated token's logprob and its top-N alternatives (0-20)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop sequences (comma-separated; never emitted)");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past the model's end-of-sequence tokens");
ABSL_FLAG(std::vector<std::string>, logit_bias, {},
          "generate/chat: ID:BIAS pairs (comma-separated), bias in [-100, 100] added to the "
          "token's logit (OpenAI's logit_bias): -100 bans a token, +100 forces it");
ABSL_FLAG(int32_t, priority, 0,
          "generate/chat/score: lower values are served first (background jobs: e.g. 10)");

namespace caduceus::tools {

absl::StatusOr<caduceus::v1::GenerationParameters> GenerationParametersFromFlags() {
  caduceus::v1::GenerationParameters params;
  if (auto n = absl::GetFlag(FLAGS_max_new_tokens); n.has_value()) {
    // 0 would read as "unset" (the router's default) and a negative value does not fit uint32.
    if (*n < 1) return UsageError("--max-new-tokens must be >= 1");
    params.set_max_new_tokens(static_cast<uint32_t>(*n));
  }
  for (const std::string& s : absl::GetFlag(FLAGS_stop)) params.add_stop(s);
  params.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  params.set_priority(absl::GetFlag(FLAGS_priority));

  caduceus::v1::SamplingParameters& sampling = *params.mutable_sampling();
  if (auto t = absl::GetFlag(FLAGS_temperature)) sampling.set_temperature(static_cast<float>(*t));
  if (auto p = absl::GetFlag(FLAGS_top_p)) sampling.set_top_p(static_cast<float>(*p));
  if (auto r = absl::GetFlag(FLAGS_repetition_penalty)) {
    sampling.set_repetition_penalty(static_cast<float>(*r));
  }
  if (auto s = absl::GetFlag(FLAGS_seed)) sampling.set_seed(*s);
  sampling.set_top_k(absl::GetFlag(FLAGS_top_k));
  sampling.set_min_p(static_cast<float>(absl::GetFlag(FLAGS_min_p)));
  sampling.set_frequency_penalty(static_cast<float>(absl::GetFlag(FLAGS_frequency_penalty)));
  sampling.set_presence_penalty(static_cast<float>(absl::GetFlag(FLAGS_presence_penalty)));
  if (auto n = absl::GetFlag(FLAGS_logprobs)) {
    params.set_logprobs(true);
    sampling.set_top_logprobs(*n);
  }
  for (const std::string& pair : absl::GetFlag(FLAGS_logit_bias)) {
    const size_t colon = pair.find(':');
    int32_t id = 0;
    float bias = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(pair.substr(0, colon), &id) ||
        !absl::SimpleAtof(pair.substr(colon + 1), &bias)) {
      return UsageError(absl::StrCat("--logit-bias: '", pair, "' is not ID:BIAS"));
    }
    (*sampling.mutable_logit_bias())[id] = bias;
  }
  return params;
}

bool LogprobsRequested() { return absl::GetFlag(FLAGS_logprobs).has_value(); }

}  // namespace caduceus::tools
