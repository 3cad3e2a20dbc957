// LinearFp8 (weight-only FP8): y[i, j] = scale[j] * sum_p x[i, p] * e4m3(w[j, p]), fp32
// activations and accumulation.
//
// Every E4M3 value is a bf16 value, so both paths are Linear's (linear.cu) over the weights
// widened to bf16, followed by one fp32 multiplication by the row's scale, which is how the CPU
// twin forms it too (kernel_signatures.inc):
// - m <= kSkinnyRows (decode steps): the very skinny kernel of Linear (linear_common.cuh), reading
//   the E4M3 bytes and decoding them in registers. Its vector path loads 8 weights (8 bytes) per
//   lane and step, Linear's chunking of 16-byte bf16 loads, so a row's sum is bit for bit the one
//   Linear forms over the widened weights (and, as there, the same at any m up to 8). The weights
//   are read once, at one byte each: half the traffic of bf16 on the path decode is bound by.
// - above (prefill, larger batches): cuBLAS has no fp32 x FP8 GEMM, and its FP8 GEMMs need sm_89+
//   and FP8 activations. So the weights are widened to bf16 a chunk of output rows at a time
//   (at most kLinearFp8ChunkElements weights) into the stream's workspace, and each chunk runs
//   Linear's GEMM of the split activations (hi/lo bf16, ~2^-17 relative) into its columns of the
//   output (leading dimension n). The kernel that sums the halves also applies the scale; from
//   kTwoPassRows rows, where Linear's two GEMMs accumulate into y, a last pass scales y.
//   Chunks, not the whole matrix: a widened copy of every weight would be the bf16 model that FP8
//   exists to avoid. The chunk part of the workspace depends on k and n only (one chunk of the
//   largest matrix), so once the warm-up has run the largest step nothing grows.
// The workspace and the cuBLAS handle are Linear's (internal::GemmContext, per stream): they
// never run at once on one stream, so one buffer of the larger need serves both, grows
// stream-ordered, bumps WorkspaceGeneration, and spoils a graph capture instead of growing inside
// it, as for Linear.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/linear_fp8.h"
#include "kernels/cuda/stream_workspace.cuh"

namespace caduceus::kernels::cuda {
namespace {

using internal::GemmBf16;
using internal::GemmContext;
using internal::kSkinnyRows;
using internal::kTwoPassRows;
using internal::StreamOf;

constexpr int kThreads = 256;
// A chunk holds a multiple of this many output rows (unless it holds all n): its first output
// column j0 keeps y + j0 (and the partials' + j0) 64-byte aligned for cuBLAS, and its weights
// w + j0 * k keep the alignment of w for the widening kernel's 4-byte loads.
constexpr int64_t kChunkRowAlign = 16;

// Rows per chunk: at most max_elements / k (rounded down to kChunkRowAlign, at least that), the
// n rows spread evenly over as few chunks as that allows, so no chunk is a sliver (a GEMM of a
// few columns would leave the GPU idle).
int32_t ChunkRows(int32_t n, int32_t k, int64_t max_elements) {
  const int64_t most =
      std::max(kChunkRowAlign, max_elements / k / kChunkRowAlign * kChunkRowAlign);
  const int64_t chunks = (n + most - 1) / most;
  const int64_t even = (n + chunks - 1) / chunks;
  const int64_t rows = (even + kChunkRowAlign - 1) / kChunkRowAlign * kChunkRowAlign;
  return static_cast<int32_t>(std::min<int64_t>(rows, n));
}

size_t Align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// out[i] = bf16(e4m3(w[i])) for i < total: exact, every E4M3 value is a bf16. With `words` (w
// 4-byte aligned) four weights come in one 4-byte load and leave in one 8-byte store (out is the
// 256-byte aligned workspace); the total % 4 last ones, or all without `words`, one at a time.
__global__ void WidenE4M3Kernel(const uint8_t* w, int64_t total, bool words, bf16* out) {
  const int64_t start = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t groups = words ? total / 4 : 0;
  for (int64_t g = start; g < groups; g += stride) {
    const uint32_t word = reinterpret_cast<const uint32_t*>(w)[g];
    uint32_t bits[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // little-endian: the low byte is the earlier weight
      bits[e] = internal::F32ToBf16(internal::E4M3ToF32((word >> (8 * e)) & 0xFFu)).bits;
    }
    reinterpret_cast<uint2*>(out)[g] =
        make_uint2(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16));
  }
  for (int64_t i = groups * 4 + start; i < total; i += stride) {
    out[i] = internal::F32ToBf16(internal::E4M3ToF32(w[i]));
  }
}

// y[i, j] = (hi[i, j] + lo[i, j]) * scale[j] over [m, n]: the halves summed as Linear's
// SumHalvesKernel sums them (hi then lo), then the row's scale, each rounded once. Without lo
// (the two-pass GEMM already summed them into hi == y), y[i, j] = hi[i, j] * scale[j] in place.
// blockIdx.y strides over rows, so the column of an element is its thread's, never a division.
__global__ void ScaleColumnsKernel(const float* hi, const float* lo, int32_t m, int32_t n,
                                   const float* scale, float* y) {
  for (int64_t i = blockIdx.y; i < m; i += gridDim.y) {
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t at = i * n + j;
      const float sum = lo != nullptr ? hi[at] + lo[at] : hi[at];
      y[at] = __fmul_rn(sum, scale[j]);
    }
  }
}

}  // namespace

namespace internal {

void LinearFp8Chunked(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
                      int32_t n, float* y, int64_t max_chunk_elements, Stream stream) {
  if (m <= 0 || n <= 0) return;
  const cudaStream_t s = StreamOf(stream);
  const int64_t out_total = static_cast<int64_t>(m) * n;
  if (k <= 0) {  // empty sums: 0, the CPU's 0 * scale for a positive scale
    CADUCEUS_CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * out_total, s));
    return;
  }
  if (m <= kSkinnyRows) {
    LaunchSkinny(x, m, k, w, scale, n, y, s);
    return;
  }
  GemmContext& ctx = GemmContextFor(s);
  ctx.Begin(s);
  const bool two_pass = m >= kTwoPassRows;
  const int32_t rows = ChunkRows(n, k, max_chunk_elements);
  const int64_t in_total = static_cast<int64_t>(m) * k;
  // Layout: [2m, k] bf16 split activations, [2m, n] fp32 partial outputs (one-pass only), then
  // the [rows, k] bf16 chunk, each 256-byte aligned. The chunk is sized by k and n, not by m.
  const size_t split_bytes = Align256(sizeof(__nv_bfloat16) * 2 * static_cast<size_t>(in_total));
  const size_t parts_bytes = two_pass ? 0 : Align256(sizeof(float) * 2 * out_total);
  const size_t chunk_bytes = sizeof(bf16) * static_cast<size_t>(rows) * k;
  const size_t bytes = split_bytes + parts_bytes + chunk_bytes;
  char* buffer = static_cast<char*>(ctx.Buffer(bytes, s));
  if (!ctx.Holds(bytes)) {
    // The workspace had to grow inside a graph capture: the capture is spoilt (its owner discards
    // it and reruns the call eagerly), and kernels given pointers past the buffer's end would
    // only be a hazard (the emulation refuses them outright). Enqueue nothing.
    ctx.End(s);
    return;
  }
  auto* split = reinterpret_cast<__nv_bfloat16*>(buffer);
  auto* parts = reinterpret_cast<float*>(buffer + split_bytes);
  auto* chunk = reinterpret_cast<bf16*>(buffer + split_bytes + parts_bytes);

  Launch(SplitBf16Kernel, GridFor(in_total, kThreads), kThreads, s, x, in_total, split);
  const bool words = reinterpret_cast<uintptr_t>(w) % 4 == 0;  // every chunk's too (kChunkRowAlign)
  for (int32_t j0 = 0; j0 < n; j0 += rows) {
    const int32_t cols = std::min(rows, n - j0);
    const int64_t elements = static_cast<int64_t>(cols) * k;
    // Stream order keeps this widening behind the previous chunk's GEMMs, which read the buffer.
    Launch(WidenE4M3Kernel, GridFor(words ? elements / 4 : elements, kThreads), kThreads, s,
           w + static_cast<int64_t>(j0) * k, elements, words, chunk);
    if (two_pass) {  // y = W·hi, then y += W·lo (Linear's GemmTwoPass, on this chunk's columns)
      GemmBf16(ctx, chunk, cols, k, split, m, /*accumulate=*/false, y + j0, n);
      GemmBf16(ctx, chunk, cols, k, split + in_total, m, /*accumulate=*/true, y + j0, n);
    } else {  // the hi and lo rows at once, into the [2m, n] partials
      GemmBf16(ctx, chunk, cols, k, split, 2 * m, /*accumulate=*/false, parts + j0, n);
    }
  }
  const dim3 grid(GridFor(n, kThreads), static_cast<unsigned>(std::min(m, 65535)));
  if (two_pass) {
    Launch(ScaleColumnsKernel, grid, kThreads, s, static_cast<const float*>(y),
           static_cast<const float*>(nullptr), m, n, scale, y);
  } else {
    Launch(ScaleColumnsKernel, grid, kThreads, s, static_cast<const float*>(parts),
           static_cast<const float*>(parts + out_total), m, n, scale, y);
  }
  ctx.End(s);
}

}  // namespace internal

void LinearFp8(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
               int32_t n, float* y, Stream stream) {
  internal::LinearFp8Chunked(x, m, k, w, scale, n, y, internal::kLinearFp8ChunkElements, stream);
}

}  // namespace caduceus::kernels::cuda
