// The CUDA backend as a loadable module (libcaduceus_backend_cuda.so), so that CPU-only
// processes never load the CUDA libraries: cuBLAS in the process makes civetweb (the Prometheus
// exposer) fail to start, and it costs hundreds of MB of mappings for nothing. The factory
// (kernel_table.cc) dlopens this file only for --device cuda[:K].
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "kernels/cuda/cuda_kernels.h"
#include "worker/backend/kernel_table.h"

extern "C" __attribute__((visibility("default"))) int caduceus_cuda_kernel_table(
    int ordinal, caduceus::backend::KernelTable* out, char* error, size_t error_size) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || ordinal >= count) {
    cudaGetLastError();
    std::snprintf(error, error_size, "cuda:%d: this machine has %d CUDA device(s)", ordinal, count);
    return 0;
  }
  namespace k = caduceus::kernels::cuda;
  *out = caduceus::backend::KernelTable{
      "cuda:" + std::to_string(ordinal), &k::EmbeddingGather, &k::RmsNorm, &k::AddRmsNorm,
      &k::Linear, &k::LinearFp8, &k::LinearArgmax, &k::Rope, &k::SiluMul, &k::KvCacheWrite, &k::PagedAttention,
      caduceus::backend::CudaMemoryOps(ordinal), caduceus::backend::CudaGraphOps()};
  return 1;
}
