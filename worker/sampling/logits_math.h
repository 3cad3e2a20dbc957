// Vectorizable kernels over a full-vocabulary logit row, shared by the sampler. Internal to
// worker/sampling. Every kernel reads logits through Sanitize(), so a raw model row containing
// NaN or +-inf is handled the same way everywhere: NaN acts as -inf, +inf as FLT_MAX.
#pragma once

#include <bit>
#include <cfloat>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "common/fast_exp.h"

namespace caduceus::sampling::internal {

// Blocks let later passes skip most of a 128k row after one cheap max-per-block pass.
inline constexpr size_t kBlock = 64;

inline float Sanitize(float x) {
  // NaN != NaN; written with selects (no branches) so the loops that call it vectorize.
  const float no_nan = x != x ? -std::numeric_limits<float>::infinity() : x;
  return no_nan > FLT_MAX ? FLT_MAX : no_nan;
}

// exp(x) for x <= 0 (common/fast_exp.h; shared with the CPU attention kernel).
using ::caduceus::FastExpNonPositive;

// block_max[b] = max of Sanitize(x) over block b; returns the max over the whole row
// (-inf when every entry is NaN or -inf).
float BlockMax(std::span<const float> x, std::vector<float>* block_max);

// First index i with Sanitize(x[i]) == value (the lowest id among ties); -1 if none.
int32_t FirstIndexOf(std::span<const float> x, std::span<const float> block_max, float value);

// Sum over i of exp((Sanitize(x[i]) - max) * inv_t), blocked float sums accumulated in double
// (accurate to ~1e-6 relative over 128k entries). If block_sums is non-null it receives each
// block's sum, for inverse-CDF draws over the whole row.
double SumExp(std::span<const float> x, float max, float inv_t, std::vector<double>* block_sums);

// Indices of the n largest Sanitize(x[i]) ordered by (value desc, id asc); fewer if the row is
// shorter. Values are returned alongside.
struct IdValue {
  int32_t id;
  float value;
};
void TopN(std::span<const float> x, std::span<const float> block_max, int32_t n,
          std::vector<IdValue>* out);

// Writes to out[0, count) every i with Sanitize(x[i]) >= threshold (ascending id order) and
// returns count; `out` is grown to at least x.size() and never shrunk (entries past count are
// garbage). threshold may be -FLT_MAX to take every finite entry.
size_t CollectAtLeast(std::span<const float> x, std::span<const float> block_max, float threshold,
                      std::vector<IdValue>* out);

// Counter-based uniform draw in [0, 1): a pure function of (seed, step), so a sequence that is
// preempted and recomputed, or moved to another batch, draws the same number at the same step.
double UniformDraw(uint64_t seed, uint64_t step);

}  // namespace caduceus::sampling::internal
