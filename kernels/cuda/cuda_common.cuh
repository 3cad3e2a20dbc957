// Internal helpers shared by the .cu files of kernels/cuda: error checks, stream and bf16
// conversions, deterministic block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
// Before the emulation's macros (it redefines __noinline__, which libstdc++ headers use).
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "kernels/kernels.h"

// The kernel signatures return void, and a failed launch or a sticky device error leaves the
// device unusable anyway, so a CUDA error is fatal: report where and abort. Except while the
// calling thread captures a CUDA graph (BeginThreadCapture): nothing runs then, a failure means
// the capture is unusable (CUDA invalidates it), and the graph's owner runs the work eagerly
// instead, so the failure is recorded for EndThreadCapture and the call goes on.
#define CADUCEUS_CUDA_CHECK(expr)                                                            \
  do {                                                                                       \
    const cudaError_t caduceus_err_ = (expr);                                                \
    if (caduceus_err_ != cudaSuccess) {                                                      \
      ::caduceus::kernels::cuda::internal::OnError(#expr, cudaGetErrorString(caduceus_err_), \
                                                   __FILE__, __LINE__);                      \
    }                                                                                        \
  } while (0)

// Checks the launch itself (bad configuration); does not synchronize.
#define CADUCEUS_CUDA_CHECK_LAUNCH() CADUCEUS_CUDA_CHECK(cudaGetLastError())

#if defined(CADUCEUS_CUDA_EMULATION)
#include "kernels/cuda/emulation/cuda_emulation.h"
#endif

namespace caduceus::kernels::cuda::internal {

[[noreturn]] inline void Fail(const char* what, const char* why, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: CUDA failure in %s: %s\n", file, line, what, why);
  std::abort();
}

// The calling thread's graph capture (BeginThreadCapture .. EndThreadCapture, cuda_kernels.h):
// whether one is open, and its first failure.
struct ThreadCapture {
  bool open = false;
  std::string first_failure;
};
inline ThreadCapture& CurrentThreadCapture() {
  thread_local ThreadCapture capture;
  return capture;
}
// Records `why` as the open capture's failure (the first one is kept).
inline void SpoilThreadCapture(const std::string& why) {
  ThreadCapture& c = CurrentThreadCapture();
  if (c.first_failure.empty()) c.first_failure = why;
}
// A failed CUDA or cuBLAS call: fatal, unless the thread is capturing (see CADUCEUS_CUDA_CHECK).
inline void OnError(const char* what, const char* why, const char* file, int line) {
  if (!CurrentThreadCapture().open) Fail(what, why, file, line);
  cudaGetLastError();  // not sticky: the eager rerun must not see it
  SpoilThreadCapture(std::string(file) + ":" + std::to_string(line) + ": " + what + ": " + why);
}

inline cudaStream_t StreamOf(Stream s) { return static_cast<cudaStream_t>(s.handle); }

// bf16 -> fp32 is exact: the bf16 bits are the high half of the float.
__device__ __forceinline__ float Bf16ToF32(bf16 v) {
  return __uint_as_float(static_cast<uint32_t>(v.bits) << 16);
}

// fp32 -> bf16, round to nearest even (cvt.rn.bf16.f32: subnormals kept, overflow to inf), as
// caduceus::FloatToBf16 on the host for every non-NaN input (a NaN stays a NaN, its payload may
// differ).
__device__ __forceinline__ bf16 F32ToBf16(float v) {
  return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
}

constexpr int kWarp = 32;

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly reduction over a warp. The order of operations depends only on the lane pattern, so
// every lane gets the same bits on every run.
template <typename Op>
__device__ __forceinline__ float WarpReduce(float v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}
__device__ __forceinline__ float WarpSum(float v) { return WarpReduce(v, SumOp{}); }

// Block-wide reduction for blockDim.x == kThreads (a multiple of 32). `scratch` holds
// kThreads / 32 floats. Warps reduce by butterfly, then every thread combines the warp results
// in warp order: a fixed tree, identical on every call. Ends with a barrier so scratch can be
// reused.
template <int kThreads, typename Op>
__device__ __forceinline__ float BlockReduce(float v, float* scratch, Op op) {
  constexpr int kWarps = kThreads / kWarp;
  v = WarpReduce(v, op);
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  float total = scratch[0];
  for (int w = 1; w < kWarps; ++w) total = op(total, scratch[w]);
  __syncthreads();
  return total;
}
template <int kThreads>
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  return BlockReduce<kThreads>(v, scratch, SumOp{});
}
template <int kThreads>
__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  return BlockReduce<kThreads>(v, scratch, MaxOp{});
}

// kernel<<<grid, block, 0, stream>>>(args...), then the launch check. Every kernel of
// kernels/cuda is launched here: the host build of these files (kernels/cuda/emulation, the CPU
// runs the grid) replaces this one line.
template <typename... Params, typename... Args>
inline void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                   const Args&... args) {
#if defined(CADUCEUS_CUDA_EMULATION)
  ::caduceus::cuda_emulation::LaunchKernel(kernel, grid, block, stream, args...);
#else
  kernel<<<grid, block, 0, stream>>>(args...);
#endif
  CADUCEUS_CUDA_CHECK_LAUNCH();
}

// Grid size for grid-stride loops over `total` items with `threads` per block, capped so huge
// launches stay within gridDim.x limits and do not oversubscribe.
inline unsigned GridFor(int64_t total, int threads, int64_t cap = 65535) {
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

}  // namespace caduceus::kernels::cuda::internal
