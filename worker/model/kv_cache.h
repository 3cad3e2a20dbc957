// Paged KV cache storage of one model replica (or one rank's heads of it): per layer, K and V
// arrays of [num_blocks][block_size][kv_heads][head_dim], fp32 or bf16 (kernels::KvDtype).
// Which blocks belong to which sequence is decided outside (the router's block manager); this
// class only holds the memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/kernels.h"
#include "worker/backend/device_memory.h"

namespace caduceus::model {

class KvCache {
 public:
  static constexpr int32_t kDefaultBlockSize = 16;

  // `memory`: where the cache lives (the model's backend); null means host memory. It must
  // outlive the cache.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(
      int32_t num_layers, int32_t kv_heads, int32_t head_dim, int32_t num_blocks,
      int32_t block_size = kDefaultBlockSize, const backend::MemoryOps* memory = nullptr,
      kernels::KvDtype dtype = kernels::KvDtype::kF32);
  // Bytes one block takes over all layers (K and V), for sizing from a memory budget.
  static int64_t BytesPerBlock(int32_t num_layers, int32_t kv_heads, int32_t head_dim,
                               int32_t block_size = kDefaultBlockSize,
                               kernels::KvDtype dtype = kernels::KvDtype::kF32);
  // The --kv-cache-dtype flag: "float32" or "bfloat16" (the Hugging Face dtype names), or "auto":
  // bfloat16 on a CUDA `device`, float32 elsewhere (the CPU's reference outputs were computed
  // with an fp32 cache). INVALID_ARGUMENT naming the flag otherwise.
  static absl::StatusOr<kernels::KvDtype> ParseDtype(const std::string& name,
                                                     const std::string& device);
  static const char* DtypeName(kernels::KvDtype dtype);

  // The KV-cache budget on a device: `utilization` of its `total_bytes`, less what is in use once
  // the weights are placed and the warm-up step ran (total_bytes - free_bytes). The headroom
  // (1 - utilization) x total is left for the CUDA context, NCCL and anything else on the device.
  // INVALID_ARGUMENT for a utilization outside (0, 1]; RESOURCE_EXHAUSTED, with the numbers, when
  // nothing is left.
  static absl::StatusOr<int64_t> DeviceBudget(double utilization, int64_t total_bytes,
                                              int64_t free_bytes);

  kernels::PagedKvLayer Layer(int32_t layer) const;
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t num_layers() const { return num_layers_; }
  kernels::KvDtype dtype() const { return dtype_; }

 private:
  KvCache(int32_t num_layers, int32_t kv_heads, int32_t head_dim, int32_t num_blocks,
          int32_t block_size, kernels::KvDtype dtype);
  int32_t num_layers_, kv_heads_, head_dim_, num_blocks_, block_size_;
  kernels::KvDtype dtype_;
  int64_t layer_bytes_;                    // one of K or V of one layer
  backend::DeviceArray<uint8_t> storage_;  // [layers][2][layer_bytes_]
};

}  // namespace caduceus::model
