// Seeded random inputs for the kernel tests (CPU and CUDA compare on the same data).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/bf16.h"

namespace caduceus::kernels::testing {

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<bf16> RandomBf16(size_t n, uint32_t seed, float scale = 1.0f) {
  std::vector<bf16> v(n);
  const auto f = RandomFloats(n, seed, scale);
  for (size_t i = 0; i < n; ++i) v[i] = FloatToBf16(f[i]);
  return v;
}

}  // namespace caduceus::kernels::testing
