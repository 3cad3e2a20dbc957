// What caduceus-bench sends and when: random prompts and (with --rate) Poisson arrival times.
// Both are pure functions of the seed, so two runs send the same workload whatever the thread
// interleaving.
#pragma once

#include <cstdint>
#include <vector>

namespace caduceus::tools {

// Token ids are drawn from [1000, 100000): inside every Llama-3 vocabulary, clear of the special
// tokens, and random enough that the prefix cache does not make the benchmark optimistic.
inline constexpr int32_t kMinPromptId = 1000;
inline constexpr int32_t kMaxPromptIdExclusive = 100000;

// Request `index`'s prompt: length uniform in [length - jitter, length + jitter] (at least 1).
std::vector<int32_t> RandomPromptIds(uint64_t seed, uint64_t index, int32_t length, int32_t jitter);

// Send times (seconds from the start) of `count` requests arriving as a Poisson process of
// `rate` requests/s: exponential gaps with mean 1/rate. The first request arrives at its first gap.
std::vector<double> PoissonArrivalTimes(uint64_t seed, int64_t count, double rate);

}  // namespace caduceus::tools
