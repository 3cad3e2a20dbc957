// Host-to-device copies of large host buffers (the weights at load time) through a pinned staging
// buffer in two halves: the host fills one half from the source (for weights: the memory-mapped
// safetensors, so this memcpy is where the file is read) while the DMA engine drains the other.
// A pageable cudaMemcpy does the read, a bounce copy and the DMA one after the other; overlapped,
// a load runs at the slower of disk and PCIe bandwidth.
//
// Used by the worker's CUDA memory ops (worker/backend/cuda_memory.cc) and measured against a
// plain pageable copy by the kernel benchmark (memory.h2d_*). Plain C++ header: no CUDA headers.
#pragma once

#include <cstddef>

namespace caduceus::kernels::cuda {

// Copies `bytes` from host memory to device memory on `device` and returns when the copy is
// complete. The staging stream is a blocking stream, so the copy is ordered with the legacy
// default stream like a plain cudaMemcpy. One 2 x 32 MiB pinned buffer per device, created on
// first use and kept; calls for one device are serialized. A CUDA error is fatal (kernels/cuda).
void StagedUpload(void* dst, const void* src, size_t bytes, int device);

// Below this size a plain cudaMemcpy is as fast (no staging round trip to amortize).
inline constexpr size_t kStagedUploadMinBytes = size_t{8} << 20;

}  // namespace caduceus::kernels::cuda
