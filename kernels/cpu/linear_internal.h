// Internal: the two Linear implementations the dispatcher chooses between.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/bf16.h"

namespace caduceus::kernels::cpu::internal {

// AVX-512F/BW (linear_avx512.cc, compiled with those flags; call only when the CPU has them).
void LinearAvx512(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y);
// Portable C++ (linear_generic.cc).
void LinearGeneric(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y);

// LinearFp8 (kernel_signatures.inc), one implementation per Linear.
void LinearFp8Avx512(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
                     int32_t n, float* y);
void LinearFp8Generic(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
                      int32_t n, float* y);

// Fused lm_head argmax (kernel_signatures.inc, LinearArgmax), one implementation per Linear.
void LinearArgmaxAvx512(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n,
                        int32_t* index, float* value);
void LinearArgmaxGeneric(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n,
                         int32_t* index, float* value);

bool CpuHasAvx512();

// The running argmax of one row, with the sampler's view of non-finite logits (NaN is -inf, +inf
// is FLT_MAX) and ties to the lowest index. Consider and Merge give the same result whatever the
// order in which the candidates arrive, so threads may split a row any way they like.
struct RowArgmax {
  float value = -std::numeric_limits<float>::infinity();
  int32_t index = -1;

  void Consider(float v, int32_t j) {
    if (std::isnan(v)) return;
    v = std::min(v, std::numeric_limits<float>::max());
    if (v > value || (v == value && index >= 0 && j < index)) {
      value = v;
      index = j;
    }
  }
  void Merge(const RowArgmax& other) {
    if (other.index >= 0) Consider(other.value, other.index);
  }
};

// Tiling shared by both implementations. Rows of x are processed in blocks that fit the L2 cache
// so each weight tile is read from memory once per block, not once per token.
inline constexpr int32_t kTokenBlock = 64;
inline constexpr int32_t kRowTile = 4;    // weight rows per micro-kernel
inline constexpr int32_t kTokenTile = 4;  // tokens per micro-kernel

// Chunk size for `schedule(dynamic)` over `tiles` independent tiles: about 32 chunks per thread.
// Dynamic rather than static because a serving worker shares its cores with the router's and
// clients' threads: with a static split, a thread preempted for a moment stalls the whole
// region at its barrier; with dynamic chunks the other threads take over its remaining tiles.
// Which thread computes a tile never changes its result (batch invariance holds).
int32_t DynamicChunk(int32_t tiles);

}  // namespace caduceus::kernels::cpu::internal
