// Portable Linear for CPUs without AVX-512. Same accumulation scheme as the AVX-512 path (16
// partial sums per output, summed by a fixed tree), written so the compiler can vectorize the
// lane loop; results are batch-invariant within this path.
#include <algorithm>

#include "common/fp8.h"
#include "kernels/cpu/fixed_order_sum.h"
#include "kernels/cpu/linear_internal.h"

namespace caduceus::kernels::cpu::internal {
namespace {

float Dot(const float* x, const bf16* w, int32_t k) {
  return FixedOrderSum(k, [&](int32_t i) { return x[i] * Bf16ToFloat(w[i]); });
}

// Every E4M3 byte widened once (exact).
struct Fp8Table {
  float value[256];
  Fp8Table() {
    for (int b = 0; b < 256; ++b) value[b] = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
  }
};

float DotFp8(const float* x, const uint8_t* w, int32_t k) {
  static const Fp8Table table;
  return FixedOrderSum(k, [&](int32_t i) { return x[i] * table.value[w[i]]; });
}

// y[i, j] = element(x row i, j) for the m x n outputs, output columns spread over the threads
// and token blocks kept in cache, as both Linear variants need.
template <typename Element>
void LinearRows(const float* x, int32_t m, int32_t k, int32_t n, float* y, Element element) {
  for (int32_t m0 = 0; m0 < m; m0 += kTokenBlock) {
    const int32_t m1 = std::min(m, m0 + kTokenBlock);
#pragma omp parallel for schedule(dynamic, DynamicChunk(n))
    for (int32_t j = 0; j < n; ++j) {
      for (int32_t i = m0; i < m1; ++i) {
        y[static_cast<int64_t>(i) * n + j] = element(x + static_cast<int64_t>(i) * k, j);
      }
    }
  }
}

}  // namespace

void LinearFp8Generic(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
                      int32_t n, float* y) {
  LinearRows(x, m, k, n, y, [&](const float* xi, int32_t j) {
    return DotFp8(xi, w + static_cast<int64_t>(j) * k, k) * scale[j];
  });
}

void LinearGeneric(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y) {
  LinearRows(x, m, k, n, y,
             [&](const float* xi, int32_t j) { return Dot(xi, w + static_cast<int64_t>(j) * k, k); });
}

void LinearArgmaxGeneric(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n,
                         int32_t* index, float* value) {
  for (int32_t i = 0; i < m; ++i) {
    const float* xi = x + static_cast<int64_t>(i) * k;
    RowArgmax best;
#pragma omp parallel
    {
      RowArgmax mine;
#pragma omp for schedule(dynamic, DynamicChunk(n)) nowait
      for (int32_t j = 0; j < n; ++j) mine.Consider(Dot(xi, w + static_cast<int64_t>(j) * k, k), j);
#pragma omp critical(caduceus_linear_argmax_generic)
      best.Merge(mine);
    }
    index[i] = best.index;
    value[i] = best.value;
  }
}

}  // namespace caduceus::kernels::cpu::internal
