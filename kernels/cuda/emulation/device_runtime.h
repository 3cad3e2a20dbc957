// What the emulated CUDA runtime (cudart.cc) offers the emulated launch (cuda_emulation.h) and
// the emulated cuBLAS (cublas.cc): the registry of emulated device memory and launch checks.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace caduceus::cuda_emulation {

// True when [p, p + bytes) lies inside one live emulated device allocation.
bool IsDeviceRange(const void* p, size_t bytes);

// Aborts, naming the argument, when a kernel argument is a pointer into anything but emulated
// device memory (on a GPU that is an illegal address, or silently wrong data with UVA).
void CheckDevicePointer(const void* p, int argument_index);

// The runtime's launch checks (grid and block limits, a live stream). On failure records the
// error for cudaGetLastError and returns false.
bool CheckLaunch(dim3 grid, dim3 block, cudaStream_t stream);

// Records `error` as the calling thread's last error (cudaGetLastError) and returns it.
cudaError_t SetLastError(cudaError_t error);

}  // namespace caduceus::cuda_emulation
