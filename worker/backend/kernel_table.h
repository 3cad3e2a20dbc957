// A backend's kernels as a table of function pointers with the shared signatures of
// kernels/kernel_signatures.inc. The model holds one table and never names a device; the factory
// (backend.cc) is the only place that knows which implementations exist.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "kernels/kernels.h"
#include "worker/backend/device_memory.h"
#include "worker/backend/graph_ops.h"

namespace caduceus::backend {

struct KernelTable {
  std::string name;  // "cpu-avx512", "cpu-generic", "cuda:0", ...
  void (*embedding_gather)(const bf16*, int64_t, int64_t, int32_t, const int32_t*, int32_t, float*,
                           kernels::Stream);
  void (*rms_norm)(const float*, const bf16*, int32_t, int32_t, float, float*, kernels::Stream);
  void (*add_rms_norm)(float*, const float*, const bf16*, int32_t, int32_t, float, float*,
                       kernels::Stream);
  void (*linear)(const float*, int32_t, int32_t, const bf16*, int32_t, float*, kernels::Stream);
  void (*linear_fp8)(const float*, int32_t, int32_t, const uint8_t*, const float*, int32_t, float*,
                     kernels::Stream);
  void (*linear_argmax)(const float*, int32_t, int32_t, const bf16*, int32_t, int32_t*, float*,
                        kernels::Stream);
  void (*rope)(float*, int64_t, const int32_t*, int32_t, int32_t, int32_t, const float*,
               kernels::Stream);
  void (*silu_mul)(const float*, int32_t, int32_t, float*, kernels::Stream);
  void (*kv_cache_write)(const float*, const float*, int64_t, const int32_t*, int32_t,
                         kernels::PagedKvLayer, kernels::Stream);
  void (*paged_attention)(const float*, int64_t, int32_t, kernels::PagedKvLayer,
                          const kernels::AttentionBatch&, float, float*, kernels::Stream);
  // Where every pointer the kernels take lives, and how to get data there and back.
  MemoryOps memory;
  // Its compute stream and CUDA graphs (all null on the CPU).
  GraphOps graphs;
};

// "cpu" or "cuda[:K]" (UNIMPLEMENTED for cuda in builds without CUDA), or "emulated-device"
// (emulated_device.h: the CPU kernels behind the device-memory path, for tests).
absl::StatusOr<KernelTable> MakeKernelTable(const std::string& device);

// Symbols of the CUDA modules, loaded on first use from CADUCEUS_CUDA_MODULE_DIR if set, else
// next to the executable, else LD_LIBRARY_PATH; UNIMPLEMENTED when the file is missing. Everything
// CUDA a process uses comes through them, so processes that never ask load no CUDA library:
//   libcaduceus_backend_cuda.so  the kernels and device memory (CUDA runtime, cuBLAS);
//   libcaduceus_backend_nccl.so  the NCCL communicator of GPU worker groups (CUDA runtime, NCCL),
//                                a module of its own so that TP=1 never needs NCCL installed.
absl::StatusOr<void*> CudaModuleSymbol(const char* name);
absl::StatusOr<void*> NcclModuleSymbol(const char* name);

}  // namespace caduceus::backend
