// What Linear (linear.cu) and LinearFp8 (linear_fp8.cu) share: the per-stream cuBLAS context and
// workspace, the bf16 hi/lo split of the activations with its GEMM, and the skinny (m <= 8)
// kernel, a template on the weight element so that both read their weights in the same order.
// One context type for both files: a stream has one cuBLAS handle and one growing workspace, sized
// by whichever of the two needs more (they never run at once on one stream), released by
// ReleaseStream (linear.cu).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/stream_workspace.cuh"

#define CADUCEUS_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                      \
    const cublasStatus_t caduceus_st_ = (expr);                                             \
    if (caduceus_st_ != CUBLAS_STATUS_SUCCESS) {                                            \
      ::caduceus::kernels::cuda::internal::OnError(#expr, cublasGetStatusString(caduceus_st_), \
                                                   __FILE__, __LINE__);                     \
    }                                                                                       \
  } while (0)

namespace caduceus::kernels::cuda::internal {

// cuBLAS's own scratch (recommended 32 MiB on Hopper). Giving it explicitly keeps cuBLAS from
// allocating behind our back and makes the handle usable on any stream.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

constexpr int kSkinnyRows = 8;  // largest m the skinny path takes
// From this many rows Linear runs two GEMMs into y instead of one into [2m, n] partials
// (GemmTwoPass): prefill steps, where the partials would be gigabytes and the GEMM is compute-bound.
constexpr int kTwoPassRows = 256;
constexpr int kSkinnyColumns = 8;  // output columns per block: one per warp
constexpr int kSkinnyChunk = 8;    // weights per lane per step: one vector load

// A cuBLAS handle with its own workspace, and the stream-ordered scratch of the split
// activations and partial outputs (and LinearFp8's dequantized weights), per stream (ForStream).
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
    WorkspaceGenerationCounter().fetch_add(1);  // cuBLAS's workspace goes too
    scratch_.Synchronize();
    cublasDestroy(handle_);
    cudaFree(cublas_workspace_);
    cudaSetDevice(previous);
  }

  // Orders this call after the previous one on whatever stream that used, and binds the handle.
  // cublasSetStream resets the handle to cuBLAS's default workspace pool (cuBLAS docs,
  // cublasSetStream), which would allocate behind our back, inside graph captures too: our
  // workspace goes back on with it, and only when the stream changes.
  void Begin(cudaStream_t stream) {
    scratch_.Begin(stream);
    if (!bound_ || stream != bound_stream_) {
      CADUCEUS_CUBLAS_CHECK(cublasSetStream(handle_, stream));
      CADUCEUS_CUBLAS_CHECK(cublasSetWorkspace(handle_, cublas_workspace_, kCublasWorkspaceBytes));
      bound_stream_ = stream;
      bound_ = true;
    }
  }
  void End(cudaStream_t stream) { scratch_.End(stream); }

  // A buffer of at least `bytes`, valid until the next call from this thread on this device.
  void* Buffer(size_t bytes, cudaStream_t stream) { return scratch_.Buffer(bytes, stream); }
  // Whether the buffer holds `bytes` (false after Buffer refused to grow inside a capture).
  bool Holds(size_t bytes) const { return scratch_.capacity() >= bytes; }

  cublasHandle_t handle() const { return handle_; }

 private:
  int device_;
  StreamWorkspace scratch_;
  cublasHandle_t handle_ = nullptr;
  void* cublas_workspace_ = nullptr;
  cudaStream_t bound_stream_ = nullptr;
  bool bound_ = false;
};

inline GemmContext& GemmContextFor(cudaStream_t stream) { return ForStream<GemmContext>(stream); }

// x [m, k] fp32 -> split [2m, k] bf16: rows [0, m) = hi, rows [m, 2m) = lo. `static`: each .cu
// file (a separate device module) launches its own copy.
static __global__ void SplitBf16Kernel(const float* x, int64_t total, __nv_bfloat16* split) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    const __nv_bfloat16 hi = __float2bfloat16_rn(v);
    split[i] = hi;
    split[total + i] = __float2bfloat16_rn(v - __bfloat162float(hi));  // exact subtraction
  }
}

// Row-major out[rows, n] (row stride ldc >= n) = split[rows, k] · w[n, k]^T, fp32, added to out
// when `accumulate` (cuBLAS's beta = 1). cuBLAS is column-major: row-major out is column-major C
// [n, rows] with leading dimension ldc, the row-major weight w[n, k] is column-major A [k, n] and
// the row-major split [rows, k] is column-major B [k, rows]. Hence C = A^T * B. LinearFp8 passes
// ldc > n to write one chunk of output columns.
inline void GemmBf16(GemmContext& ctx, const void* w, int32_t n, int32_t k,
                     const __nv_bfloat16* split, int32_t rows, bool accumulate, float* out,
                     int32_t ldc) {
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CADUCEUS_CUBLAS_CHECK(cublasGemmEx(ctx.handle(), CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w,
                                     CUDA_R_16BF, k, split, CUDA_R_16BF, k, &beta, out, CUDA_R_32F,
                                     ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// An E4M3 byte (common/fp8.h) as its exact fp32 value, without cuda_fp8.h (the emulation has no
// FP8 types) and without fp32 subnormals (whose handling FTZ would change). The magnitude bits
// shifted into an IEEE half, (b & 0x7F) << 7 with the sign at bit 15, encode value * 2^-8 for
// every finite code: the exponent biases differ by 8 (15 vs 7) and the mantissa widens from 3 to
// 10 bits, and E4M3's subnormals (exponent field 0, m/8 * 2^-6) land on the half's subnormals
// (m/8 * 2^-14), the same 2^-8 apart. Half -> fp32 is exact (a half subnormal is a normal float),
// and so is * 256 (every E4M3 value is a normal float). The NaN codes give +-480 (the signature
// leaves NaN weights unspecified).
__device__ __forceinline__ float E4M3ToF32(uint32_t byte) {
  const uint32_t half_bits = ((byte & 0x7Fu) << 7) | ((byte & 0x80u) << 8);
  return __fmul_rn(__half2float(__ushort_as_half(static_cast<unsigned short>(half_bits))), 256.0f);
}

// The skinny kernel's weight reads, as exact fp32, per element type: one weight, or kSkinnyChunk
// consecutive weights in one aligned load (16 bytes of bf16, 8 bytes of E4M3).
__device__ __forceinline__ float WeightToF32(const bf16* w, int64_t p) { return Bf16ToF32(w[p]); }
__device__ __forceinline__ float WeightToF32(const uint8_t* w, int64_t p) {
  return E4M3ToF32(w[p]);
}
__device__ __forceinline__ void LoadWeightChunk(const bf16* w, int64_t p,
                                                float (&wv)[kSkinnyChunk]) {
  const uint4 packed = *reinterpret_cast<const uint4*>(w + p);
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {  // little-endian: the low half is the earlier element
    wv[2 * e] = __uint_as_float(words[e] << 16);
    wv[2 * e + 1] = __uint_as_float(words[e] & 0xffff0000u);
  }
}
__device__ __forceinline__ void LoadWeightChunk(const uint8_t* w, int64_t p,
                                                float (&wv)[kSkinnyChunk]) {
  const uint2 packed = *reinterpret_cast<const uint2*>(w + p);
  const uint32_t words[2] = {packed.x, packed.y};
#pragma unroll
  for (int e = 0; e < kSkinnyChunk; ++e) {  // little-endian: the low byte is the earlier element
    wv[e] = E4M3ToF32((words[e / 4] >> (8 * (e % 4))) & 0xFFu);
  }
}

// y[r, j] = sum_p x[r, p] * w[j, p] (times scale[j] when scale is not null) for r < m <=
// kSkinnyRows. One warp per column j; lane l sums the chunks p = (l + 32 t) * 8 .. + 7 (t = 0, 1,
// ...) in ascending order, one fp32 partial per row, then a butterfly adds the 32 partials.
// `vector` (host-checked: k % 8 == 0, x 16-byte and w chunk-aligned) reads a chunk with one
// weight load and two float4 of activations; otherwise lane l reads elements l, l + 32, ... one at
// a time. Either way the order depends on k and alignment, never on m, so a row gives the same
// bits alone or with up to 7 others; and never on the weight type, so an E4M3 matrix gives the
// sums its bf16 widening would (then one multiplication by the row's scale).
template <typename Weight>
__global__ void __launch_bounds__(kSkinnyColumns* kWarp)
    SkinnyLinearKernel(const float* x, int32_t m, int32_t k, const Weight* w, const float* scale,
                       int32_t n, bool vector, float* y) {
  const int lane = threadIdx.x % kWarp;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSkinnyColumns + threadIdx.x / kWarp;
  if (j >= n) return;  // the whole warp: nothing below synchronizes beyond the warp
  const Weight* wj = w + j * k;
  float acc[kSkinnyRows] = {};
  if (vector) {
    for (int64_t p = static_cast<int64_t>(lane) * kSkinnyChunk; p < k;
         p += kWarp * kSkinnyChunk) {
      float wv[kSkinnyChunk];
      LoadWeightChunk(wj, p, wv);
#pragma unroll
      for (int r = 0; r < kSkinnyRows; ++r) {
        if (r >= m) break;
        const float4* xr = reinterpret_cast<const float4*>(x + static_cast<int64_t>(r) * k + p);
        const float4 a = xr[0], b = xr[1];
        const float xv[kSkinnyChunk] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int e = 0; e < kSkinnyChunk; ++e) acc[r] = fmaf(xv[e], wv[e], acc[r]);
      }
    }
  } else {
    for (int64_t p = lane; p < k; p += kWarp) {
      const float wv = WeightToF32(wj, p);
#pragma unroll
      for (int r = 0; r < kSkinnyRows; ++r) {
        if (r >= m) break;
        acc[r] = fmaf(x[static_cast<int64_t>(r) * k + p], wv, acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kSkinnyRows; ++r) {
    if (r >= m) break;  // m is the same for every lane: the shuffles stay warp-uniform
    const float sum = WarpSum(acc[r]);
    if (lane == 0) {
      y[static_cast<int64_t>(r) * n + j] = scale != nullptr ? __fmul_rn(sum, scale[j]) : sum;
    }
  }
}

// Launches SkinnyLinearKernel for m <= kSkinnyRows (scale: null for bf16 weights).
template <typename Weight>
void LaunchSkinny(const float* x, int32_t m, int32_t k, const Weight* w, const float* scale,
                  int32_t n, float* y, cudaStream_t s) {
  const bool vector = k % kSkinnyChunk == 0 &&
                      reinterpret_cast<uintptr_t>(w) % (kSkinnyChunk * sizeof(Weight)) == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const unsigned grid =
      static_cast<unsigned>((static_cast<int64_t>(n) + kSkinnyColumns - 1) / kSkinnyColumns);
  Launch(SkinnyLinearKernel<Weight>, grid, kSkinnyColumns * kWarp, s, x, m, k, w, scale, n, vector,
         y);
}

}  // namespace caduceus::kernels::cuda::internal
