// Linear (y = x w^T) through cuBLAS.
//
// Our activations are fp32 and weights bf16, and cublasGemmEx has no bf16 x fp32 input mix.
// Rounding x to bf16 would move logits away from the fp32 reference (the CPU path refuses that
// trade, see docs/architecture.md), and widening the weights to fp32 would double their memory.
// So x is split into two bf16 parts, hi = bf16(x) and lo = bf16(x - hi), which together carry
// ~16 significant bits (relative error <= 2^-17), stacked as 2m rows of one bf16 GEMM with fp32
// accumulation on the tensor cores: y = W.hi + W.lo. The weights are streamed once per call (decode
// is bound by that read); the doubled FLOPs only matter for large prefills, where the tensor cores
// have ample headroom.
//
// Decode-sized calls (m <= kSkinnyRows, every decode step of up to 8 sequences) skip all of that:
// SkinnyLinearKernel reads each bf16 weight once and multiplies it with the fp32 activations
// directly (fp32 products and sums, no split), in one launch instead of three, without cuBLAS or
// a workspace. A row's bits depend only on k, the row and the weights, not on m (batch-invariant
// up to kSkinnyRows), and they are closer to the exact product than the split path.
//
// The cuBLAS context, the split and the skinny kernel live in linear_common.cuh, shared with
// LinearFp8 (linear_fp8.cu), which reuses both paths for FP8 weights.
//
// State: one cuBLAS handle and one workspace per (host thread, device), created on first use and
// released when the thread exits. The workspace only grows (geometrically). An event recorded
// after each use makes a call on a different stream wait for the previous one, so reusing the
// workspace across streams is safe.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdio>
#include <string>
#include <utility>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/stream_workspace.cuh"

namespace caduceus::kernels::cuda {
namespace {

using internal::StreamOf;

using internal::GemmBf16;
using internal::GemmContext;
using internal::kSkinnyRows;
using internal::kTwoPassRows;
using internal::LaunchSkinny;
using internal::SplitBf16Kernel;

constexpr int kThreads = 256;

GemmContext& ContextFor(cudaStream_t stream) { return internal::GemmContextFor(stream); }

// Output element i of the split path: parts[0:m] + parts[m:2m] (hi then lo, a fixed order). The
// one place the halves are summed, for Linear and for LinearArgmax alike.
struct SumOfHalves {
  const float* parts;
  int64_t total;  // m * n
  __device__ __forceinline__ float operator()(int64_t i) const {
    return parts[i] + parts[total + i];
  }
};

// Output element i already formed (the skinny path).
struct Formed {
  const float* y;
  __device__ __forceinline__ float operator()(int64_t i) const { return y[i]; }
};

__global__ void SumHalvesKernel(SumOfHalves halves, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < halves.total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = halves(i);
  }
}

// Enqueues the GEMM of the split activations: returns parts [2m, n] (hi rows, then lo rows) in
// the context's buffer, valid until ctx.End. Needs m, n, k > 0.
const float* GemmHalves(GemmContext& ctx, const float* x, int32_t m, int32_t k, const bf16* w,
                        int32_t n, cudaStream_t s) {
  const int64_t in_total = static_cast<int64_t>(m) * k;
  const int64_t out_total = static_cast<int64_t>(m) * n;
  // Layout: [2m, k] bf16 split activations, then (256-byte aligned) [2m, n] fp32 partial outputs.
  const size_t split_bytes = (sizeof(__nv_bfloat16) * 2 * in_total + 255) / 256 * 256;
  const size_t parts_bytes = sizeof(float) * 2 * out_total;
  char* buffer = static_cast<char*>(ctx.Buffer(split_bytes + parts_bytes, s));
  auto* split = reinterpret_cast<__nv_bfloat16*>(buffer);
  auto* parts = reinterpret_cast<float*>(buffer + split_bytes);

  internal::Launch(SplitBf16Kernel, internal::GridFor(in_total, kThreads), kThreads, s, x, in_total,
                   split);
  GemmBf16(ctx, w, n, k, split, 2 * m, /*accumulate=*/false, parts, n);  // hi and lo rows at once
  return parts;
}

// Prefill-sized Linear (m >= kTwoPassRows): y = W·hi, then y += W·lo (cuBLAS's beta = 1), two
// GEMMs of m rows. The weights are read twice, which costs nothing where the GEMM is compute-bound,
// and the [2m, n] partial outputs never exist: for an 8192-token 8B gate_up they were 1.9 GB of
// workspace (3.8 GB for 70B at TP=1), kept for the process's life and so taken from the KV cache.
// The epilogue's 1·acc + 1·y is the sum kernel's hi + lo, one rounding, same order of operands.
void GemmTwoPass(GemmContext& ctx, const float* x, int32_t m, int32_t k, const bf16* w, int32_t n,
                 float* y, cudaStream_t s) {
  const int64_t in_total = static_cast<int64_t>(m) * k;
  auto* split = static_cast<__nv_bfloat16*>(
      ctx.Buffer(sizeof(__nv_bfloat16) * 2 * static_cast<size_t>(in_total), s));
  internal::Launch(SplitBf16Kernel, internal::GridFor(in_total, kThreads), kThreads, s, x, in_total,
                   split);
  GemmBf16(ctx, w, n, k, split, m, /*accumulate=*/false, y, n);            // y = W·hi
  GemmBf16(ctx, w, n, k, split + in_total, m, /*accumulate=*/true, y, n);  // y += W·lo
}

// The sampler's view of one logit (NaN is -inf, +inf is FLT_MAX) and the argmax merge rule:
// larger value first, then the lower index; index -1 (nothing above -inf) never wins.
struct Candidate {
  float value;
  int32_t index;
};
__device__ __forceinline__ Candidate Better(Candidate a, Candidate b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

// One block per row: the argmax of y[i, :], each y[i, j] formed by `logit` exactly as Linear
// forms it (SumOfHalves on the split path, Formed on the skinny one).
template <typename Logit>
__global__ void ArgmaxKernel(Logit logit, int32_t n, int32_t* index, float* value) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * n;
  Candidate best{-INFINITY, -1};
  for (int32_t j = threadIdx.x; j < n; j += blockDim.x) {
    float v = logit(row + j);
    if (isnan(v) || v == -INFINITY) continue;
    best = Better(best, Candidate{fminf(v, FLT_MAX), j});
  }
  for (int offset = internal::kWarp / 2; offset > 0; offset /= 2) {
    const Candidate other{__shfl_xor_sync(0xffffffffu, best.value, offset),
                          __shfl_xor_sync(0xffffffffu, best.index, offset)};
    best = Better(best, other);
  }
  __shared__ Candidate warps[kThreads / internal::kWarp];
  const int lane = threadIdx.x % internal::kWarp, warp = threadIdx.x / internal::kWarp;
  if (lane == 0) warps[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    Candidate all = warps[0];
    for (int i = 1; i < static_cast<int>(blockDim.x) / internal::kWarp; ++i) {
      all = Better(all, warps[i]);
    }
    index[blockIdx.x] = all.index;
    value[blockIdx.x] = all.index < 0 ? -INFINITY : all.value;
  }
}

// Rows of an empty or zero-length product: every y[i, j] is 0 (k == 0) or there is no j (n == 0).
__global__ void FillArgmaxKernel(int32_t m, int32_t fill_index, float fill_value, int32_t* index,
                                 float* value) {
  for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < m; i += gridDim.x * blockDim.x) {
    index[i] = fill_index;
    value[i] = fill_value;
  }
}

}  // namespace

void Linear(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y,
            Stream stream) {
  if (m <= 0 || n <= 0) return;
  const cudaStream_t s = StreamOf(stream);
  const int64_t out_total = static_cast<int64_t>(m) * n;
  if (k <= 0) {  // empty sum
    CADUCEUS_CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * out_total, s));
    return;
  }
  if (m <= kSkinnyRows) {
    LaunchSkinny(x, m, k, w, /*scale=*/nullptr, n, y, s);
    return;
  }
  GemmContext& ctx = ContextFor(s);
  ctx.Begin(s);
  if (m >= kTwoPassRows) {
    GemmTwoPass(ctx, x, m, k, w, n, y, s);
  } else {
    const float* parts = GemmHalves(ctx, x, m, k, w, n, s);
    internal::Launch(SumHalvesKernel, internal::GridFor(out_total, kThreads), kThreads, s,
                     SumOfHalves{parts, out_total}, y);
  }
  ctx.End(s);
}

void LinearArgmax(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, int32_t* index,
                  float* value, Stream stream) {
  if (m <= 0) return;
  const cudaStream_t s = StreamOf(stream);
  if (n <= 0 || k <= 0) {
    internal::Launch(FillArgmaxKernel, internal::GridFor(m, kThreads), kThreads, s, m,
                     n <= 0 ? -1 : 0, n <= 0 ? -INFINITY : 0.0f, index, value);
    return;
  }
  GemmContext& ctx = ContextFor(s);
  ctx.Begin(s);
  const int64_t total = static_cast<int64_t>(m) * n;
  if (m <= kSkinnyRows) {
    float* y = static_cast<float*>(ctx.Buffer(sizeof(float) * static_cast<size_t>(total), s));
    LaunchSkinny(x, m, k, w, /*scale=*/nullptr, n, y, s);
    internal::Launch(ArgmaxKernel<Formed>, m, kThreads, s, Formed{y}, n, index, value);
  } else {
    const float* parts = GemmHalves(ctx, x, m, k, w, n, s);
    internal::Launch(ArgmaxKernel<SumOfHalves>, m, kThreads, s, SumOfHalves{parts, total}, n, index,
                     value);
  }
  ctx.End(s);
}

uint64_t WorkspaceGeneration() { return internal::WorkspaceGenerationCounter().load(); }

void BeginThreadCapture() {
  internal::ThreadCapture& c = internal::CurrentThreadCapture();
  c.open = true;
  c.first_failure.clear();
}

std::string EndThreadCapture() {
  internal::ThreadCapture& c = internal::CurrentThreadCapture();
  c.open = false;
  return std::exchange(c.first_failure, std::string());
}

void ReleaseStream(Stream stream) {
  const cudaStream_t s = StreamOf(stream);
  if (internal::IsSharedDefaultStream(s)) return;
  internal::ReleaseForStream<GemmContext>(s);
  internal::ReleaseForStream<internal::StreamWorkspace>(s);  // split attention's
}

}  // namespace caduceus::kernels::cuda
