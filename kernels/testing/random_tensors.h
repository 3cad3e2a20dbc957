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

// E4M3 weight bytes drawn uniformly from the 254 finite codes (both signs, subnormals and
// zeros included; never the NaN codes 0x7F/0xFF), and positive per-row scales around `scale`.
inline std::vector<uint8_t> RandomFp8(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> code(0, 253);
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    const int c = code(rng);  // 0..126 positive, 127..253 negative
    b = static_cast<uint8_t>(c < 127 ? c : 0x80 + (c - 127));
  }
  return v;
}

inline std::vector<float> RandomScales(size_t n, uint32_t seed, float scale = 1e-3f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.25f * scale, 4.0f * scale);
  std::vector<float> v(n);
  for (auto& s : v) s = dist(rng);
  return v;
}

}  // namespace caduceus::kernels::testing
