// The one reduction scheme of the portable CPU kernels: 16 partial sums (lane l takes terms
// l, l+16, l+32, ...) combined by a fixed pairwise tree. Deterministic whatever the batch or
// thread, and written so the compiler vectorizes the lane loop without reassociating.
#pragma once

#include <cstdint>

namespace caduceus::kernels::cpu {

template <typename Term>
inline float FixedOrderSum(int32_t n, Term term) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += term(i + l);
  }
  for (int l = 0; i + l < n; ++l) acc[l] += term(i + l);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

}  // namespace caduceus::kernels::cpu
