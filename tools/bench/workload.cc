#include "tools/bench/workload.h"

#include <algorithm>
#include <random>

namespace caduceus::tools {

namespace {

// Separate streams for prompts and arrivals, and one per request, derived from the seed.
std::mt19937_64 Rng(uint64_t seed, uint64_t stream, uint64_t index) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(stream), static_cast<uint32_t>(index),
                    static_cast<uint32_t>(index >> 32)};
  return std::mt19937_64(seq);
}

}  // namespace

std::vector<int32_t> RandomPromptIds(uint64_t seed, uint64_t index, int32_t length, int32_t jitter) {
  std::mt19937_64 rng = Rng(seed, /*stream=*/1, index);
  int32_t n = length;
  if (jitter > 0) n = std::uniform_int_distribution<int32_t>(length - jitter, length + jitter)(rng);
  n = std::max(n, 1);
  std::uniform_int_distribution<int32_t> id(kMinPromptId, kMaxPromptIdExclusive - 1);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& t : ids) t = id(rng);
  return ids;
}

std::vector<double> PoissonArrivalTimes(uint64_t seed, int64_t count, double rate) {
  std::mt19937_64 rng = Rng(seed, /*stream=*/2, 0);
  std::exponential_distribution<double> gap(rate);
  std::vector<double> times;
  times.reserve(static_cast<size_t>(std::max<int64_t>(count, 0)));
  double t = 0;
  for (int64_t i = 0; i < count; ++i) {
    t += gap(rng);
    times.push_back(t);
  }
  return times;
}

}  // namespace caduceus::tools
