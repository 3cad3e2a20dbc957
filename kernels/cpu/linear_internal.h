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

}  // namespace caduceus::kernels::cpu::internal
