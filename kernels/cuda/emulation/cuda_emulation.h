// Compiles a kernels/cuda .cu file as host C++ that runs its kernels on the CPU: included before
// the .cu file (see CMakeLists.txt next to this file), it maps the CUDA language onto simt.h.
//   - __global__/__device__ functions become host functions; __shared__ variables become static
//     (blocks run one at a time, so one copy serves every block of the grid);
//   - threadIdx/blockIdx/blockDim/gridDim read the running emulated thread;
//   - __syncthreads and __shfl_xor_sync switch threads (simt.h);
//   - the round-to-nearest intrinsics are plain IEEE single operations (built with
//     -ffp-contract=off, so nothing is fused that the source does not fuse with fmaf);
//   - internal::Launch (cuda_common.cuh) calls LaunchKernel below instead of <<<>>>.
// The CUDA runtime and cuBLAS the host code calls are emulated by cudart.cc and cublas.cc.
// Transcendentals (expf, sincosf) are the host's libm, not the GPU's: results may differ from a
// GPU in the last bits, which is why the tests compare CUDA against the CPU with tolerances, and
// CUDA against CUDA (paths, batch sizes, streams) bit for bit.
#pragma once

#if !defined(CADUCEUS_CUDA_EMULATION)
#error "cuda_emulation.h is for the host build of kernels/cuda only"
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

// Every standard header the .cu files and their includes use comes first: __noinline__ below
// would otherwise break libstdc++'s own __attribute__((__noinline__)).
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda/emulation/device_runtime.h"
#include "kernels/cuda/emulation/simt.h"

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __noinline__
#define __noinline__ __attribute__((noinline))

#define threadIdx (::caduceus::cuda_emulation::Current().thread_idx)
#define blockIdx (::caduceus::cuda_emulation::Current().block_idx)
#define blockDim (::caduceus::cuda_emulation::Current().block_dim)
#define gridDim (::caduceus::cuda_emulation::Current().grid_dim)
#define __syncthreads() ::caduceus::cuda_emulation::SyncThreads(__FILE__, __LINE__)
#define __shfl_xor_sync(...) ::caduceus::cuda_emulation::ShflXor(__FILE__, __LINE__, __VA_ARGS__)

namespace caduceus::cuda_emulation {

template <typename T>
T ShflXor(const char* file, int line, unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(sizeof(T) == 4 && std::is_trivially_copyable_v<T>, "32-bit shuffles only");
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits = ShuffleXor(file, line, mask, bits, lane_mask, width);
  std::memcpy(&value, &bits, 4);
  return value;
}

inline Dim3 ToDim3(dim3 d) { return {d.x, d.y, d.z}; }

template <typename T>
void CheckKernelArgument(const T& value, int index) {
  if constexpr (std::is_pointer_v<T>) {
    if (value != nullptr) CheckDevicePointer(value, index);
  }
}

// kernel<<<grid, block, 0, stream>>>(args...): validates like the runtime (configuration,
// stream), requires every non-null pointer argument to be device memory, then queues the grid
// with a copy of the arguments; it runs when the host next synchronizes (device_runtime.h), or
// each time a graph that captured it is launched.
template <typename... Params, typename... Args>
void LaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                  const Args&... args) {
  if (!CheckLaunch(grid, block, stream)) return;
  std::tuple<std::decay_t<Params>...> params(args...);
  std::apply(
      [](const auto&... p) {
        int index = 0;
        (CheckKernelArgument(p, index++), ...);
      },
      params);
  Enqueue(stream, [kernel, grid, block, params] {
    // Again when it runs: a graph replays its launches long after capture, and a pointer baked
    // into it may have been freed since.
    std::apply(
        [](const auto&... p) {
          int index = 0;
          (CheckKernelArgument(p, index++), ...);
        },
        params);
    RunGrid(ToDim3(grid), ToDim3(block), [&] { std::apply(kernel, params); });
  });
}

}  // namespace caduceus::cuda_emulation

// Device intrinsics the kernels use, with their IEEE semantics.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __uint_as_float(unsigned v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
// Streaming (evict-first) load: a plain load here.
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
// CUDA's integer min overloads (device code calls them unqualified).
template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
