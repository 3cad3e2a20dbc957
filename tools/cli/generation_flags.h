// The sampling and generation flags of `caduceus-cli generate|chat` (the same names as
// caduceus-generate's) and the GenerationParameters message they describe.
#pragma once

#include "absl/status/statusor.h"
#include "caduceus/v1/generation.pb.h"

namespace caduceus::tools {

// Fields whose proto default is not 0 (temperature, top_p, repetition_penalty, seed,
// max_new_tokens) are only set when their flag was given, so the router's defaults apply
// otherwise. Range checks are left to the router, which names the field in its INVALID_ARGUMENT
// message; only what the message cannot carry (a negative token count) is a usage error here.
absl::StatusOr<caduceus::v1::GenerationParameters> GenerationParametersFromFlags();

// Whether --logprobs was given: the JSON output then has a "logprobs" list.
bool LogprobsRequested();

}  // namespace caduceus::tools
