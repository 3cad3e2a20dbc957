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
// State: one cuBLAS handle and one workspace per (host thread, device), created on first use and
// released when the thread exits. The workspace only grows (geometrically). An event recorded
// after each use makes a call on a different stream wait for the previous one, so reusing the
// workspace across streams is safe.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdio>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/stream_workspace.cuh"

#define CADUCEUS_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                      \
    const cublasStatus_t caduceus_st_ = (expr);                                             \
    if (caduceus_st_ != CUBLAS_STATUS_SUCCESS) {                                            \
      ::caduceus::kernels::cuda::internal::Fail(#expr, cublasGetStatusString(caduceus_st_), \
                                                __FILE__, __LINE__);                        \
    }                                                                                       \
  } while (0)

namespace caduceus::kernels::cuda {
namespace {

using internal::StreamOf;

constexpr int kThreads = 256;
// cuBLAS's own scratch (recommended 32 MiB on Hopper). Giving it explicitly keeps cuBLAS from
// allocating behind our back and makes the handle usable on any stream.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

// A cuBLAS handle with its own workspace, and the stream-ordered scratch of the split
// activations and partial outputs, per (host thread, device).
class GemmContext {
 public:
  explicit GemmContext(int device) : device_(device), scratch_(device) {
    CADUCEUS_CUBLAS_CHECK(cublasCreate(&handle_));
    CADUCEUS_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
    CADUCEUS_CUBLAS_CHECK(cublasSetWorkspace(handle_, cublas_workspace_, kCublasWorkspaceBytes));
  }
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;

  // Runs at thread exit, when the process may already be tearing CUDA down: errors are ignored.
  ~GemmContext() {
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return;
    if (cudaSetDevice(device_) != cudaSuccess) return;
    scratch_.Synchronize();
    cublasDestroy(handle_);
    cudaFree(cublas_workspace_);
    cudaSetDevice(previous);
  }

  // Orders this call after the previous one on whatever stream that used, and binds the handle.
  void Begin(cudaStream_t stream) {
    scratch_.Begin(stream);
    CADUCEUS_CUBLAS_CHECK(cublasSetStream(handle_, stream));
  }
  void End(cudaStream_t stream) { scratch_.End(stream); }

  // A buffer of at least `bytes`, valid until the next call from this thread on this device.
  void* Buffer(size_t bytes, cudaStream_t stream) { return scratch_.Buffer(bytes, stream); }

  cublasHandle_t handle() const { return handle_; }

 private:
  int device_;
  internal::StreamWorkspace scratch_;
  cublasHandle_t handle_ = nullptr;
  void* cublas_workspace_ = nullptr;
};

GemmContext& ContextForCurrentDevice() {
  return internal::PerThreadForCurrentDevice<GemmContext>();
}

// x [m, k] fp32 -> split [2m, k] bf16: rows [0, m) = hi, rows [m, 2m) = lo.
__global__ void SplitBf16Kernel(const float* x, int64_t total, __nv_bfloat16* split) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    const __nv_bfloat16 hi = __float2bfloat16_rn(v);
    split[i] = hi;
    split[total + i] = __float2bfloat16_rn(v - __bfloat162float(hi));  // exact subtraction
  }
}

// y = parts[0:m] + parts[m:2m] (hi then lo, a fixed order).
__global__ void SumHalvesKernel(const float* parts, int64_t total, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = parts[i] + parts[total + i];
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

  // cuBLAS is column-major. Row-major parts[2m, n] is column-major C [n, 2m]; the row-major
  // weight w[n, k] is column-major A [k, n]; the row-major split [2m, k] is column-major B [k, 2m].
  // Hence C = A^T * B.
  const float alpha = 1.0f;
  const float beta = 0.0f;
  CADUCEUS_CUBLAS_CHECK(cublasGemmEx(ctx.handle(), CUBLAS_OP_T, CUBLAS_OP_N, n, 2 * m, k, &alpha, w,
                                     CUDA_R_16BF, k, split, CUDA_R_16BF, k, &beta, parts,
                                     CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return parts;
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

// One block per row: y[i, j] = hi + lo exactly as SumHalvesKernel forms it, then the argmax.
__global__ void ArgmaxHalvesKernel(const float* parts, int32_t n, int64_t total, int32_t* index,
                                   float* value) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * n;
  Candidate best{-INFINITY, -1};
  for (int32_t j = threadIdx.x; j < n; j += blockDim.x) {
    float v = parts[row + j] + parts[total + row + j];
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
  GemmContext& ctx = ContextForCurrentDevice();
  ctx.Begin(s);
  const float* parts = GemmHalves(ctx, x, m, k, w, n, s);
  internal::Launch(SumHalvesKernel, internal::GridFor(out_total, kThreads), kThreads, s, parts,
                   out_total, y);
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
  GemmContext& ctx = ContextForCurrentDevice();
  ctx.Begin(s);
  const float* parts = GemmHalves(ctx, x, m, k, w, n, s);
  internal::Launch(ArgmaxHalvesKernel, m, kThreads, s, parts, n, static_cast<int64_t>(m) * n, index,
                   value);
  ctx.End(s);
}

}  // namespace caduceus::kernels::cuda
