// Portable Linear for CPUs without AVX-512. Same accumulation scheme as the AVX-512 path (16
// partial sums per output, summed by a fixed tree), written so the compiler can vectorize the
// lane loop; results are batch-invariant within this path.
#include <algorithm>

#include "kernels/cpu/linear_internal.h"

namespace caduceus::kernels::cpu::internal {
namespace {

constexpr int kLanes = 16;

float Dot(const float* x, const bf16* w, int32_t k) {
  float acc[kLanes] = {};
  int32_t kk = 0;
  for (; kk + kLanes <= k; kk += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += x[kk + l] * Bf16ToFloat(w[kk + l]);
  }
  for (int l = 0; kk + l < k; ++l) acc[l] += x[kk + l] * Bf16ToFloat(w[kk + l]);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

}  // namespace

void LinearGeneric(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y) {
  for (int32_t m0 = 0; m0 < m; m0 += kTokenBlock) {
    const int32_t m1 = std::min(m, m0 + kTokenBlock);
#pragma omp parallel for schedule(static)
    for (int32_t j = 0; j < n; ++j) {
      const bf16* wj = w + static_cast<int64_t>(j) * k;
      for (int32_t i = m0; i < m1; ++i) {
        y[static_cast<int64_t>(i) * n + j] = Dot(x + static_cast<int64_t>(i) * k, wj, k);
      }
    }
  }
}

}  // namespace caduceus::kernels::cpu::internal
