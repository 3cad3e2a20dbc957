// Internal: the two Linear implementations the dispatcher chooses between.
#pragma once

#include <cstdint>

#include "common/bf16.h"

namespace caduceus::kernels::cpu::internal {

// AVX-512F/BW (linear_avx512.cc, compiled with those flags; call only when the CPU has them).
void LinearAvx512(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y);
// Portable C++ (linear_generic.cc).
void LinearGeneric(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y);

bool CpuHasAvx512();

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
