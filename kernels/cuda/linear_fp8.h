// LinearFp8's chunk bound (linear_fp8.cu), and the entry point that takes it as an argument. The
// tests call that one with small bounds: at the production bound a second chunk needs a matrix of
// more than 16M weights, far too slow for the CUDA emulation.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"

namespace caduceus::kernels::cuda::internal {

// Weights widened to bf16 at a time on LinearFp8's GEMM path (m > 8): 32 MiB of workspace.
inline constexpr int64_t kLinearFp8ChunkElements = int64_t{16} << 20;

// cuda::LinearFp8 with chunks of at most max(max_chunk_elements, 16 x k) weights.
void LinearFp8Chunked(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
                      int32_t n, float* y, int64_t max_chunk_elements, Stream stream);

}  // namespace caduceus::kernels::cuda::internal
