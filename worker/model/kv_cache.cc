#include "worker/model/kv_cache.h"

#include <new>

#include "absl/strings/str_cat.h"

namespace caduceus::model {

int64_t KvCache::BytesPerBlock(int32_t num_layers, int32_t kv_heads, int32_t head_dim,
                               int32_t block_size, kernels::KvDtype dtype) {
  return int64_t{2} * num_layers * block_size * kv_heads * head_dim * kernels::KvDtypeBytes(dtype);
}

absl::StatusOr<kernels::KvDtype> KvCache::ParseDtype(const std::string& name,
                                                     const std::string& device) {
  if (name == "float32") return kernels::KvDtype::kF32;
  if (name == "bfloat16") return kernels::KvDtype::kBf16;
  if (name == "auto") {
    return device.rfind("cuda", 0) == 0 ? kernels::KvDtype::kBf16 : kernels::KvDtype::kF32;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--kv-cache-dtype ", name, ": expected auto, float32 or bfloat16"));
}

const char* KvCache::DtypeName(kernels::KvDtype dtype) {
  return dtype == kernels::KvDtype::kBf16 ? "bfloat16" : "float32";
}

absl::StatusOr<int64_t> KvCache::DeviceBudget(double utilization, int64_t total_bytes,
                                              int64_t free_bytes) {
  if (!(utilization > 0 && utilization <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-memory-utilization ", utilization, " must be in (0, 1]"));
  }
  const int64_t in_use = total_bytes - free_bytes;
  const int64_t budget =
      static_cast<int64_t>(utilization * static_cast<double>(total_bytes)) - in_use;
  if (budget <= 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no device memory left for the KV cache: ", in_use, " of ", total_bytes,
        " bytes are in use after loading the weights and the warm-up step, and "
        "--gpu-memory-utilization ", utilization, " allows ",
        static_cast<int64_t>(utilization * static_cast<double>(total_bytes)),
        "; raise it, lower --max-step-tokens, or use more tensor-parallel ranks"));
  }
  return budget;
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(int32_t num_layers, int32_t kv_heads,
                                                         int32_t head_dim, int32_t num_blocks,
                                                         int32_t block_size,
                                                         const backend::MemoryOps* memory,
                                                         kernels::KvDtype dtype) {
  static const backend::MemoryOps kHost = backend::HostMemoryOps();
  if (num_layers <= 0 || kv_heads <= 0 || head_dim <= 0 || num_blocks <= 0 || block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache dimensions must be positive: layers=", num_layers, " kv_heads=", kv_heads,
        " head_dim=", head_dim, " blocks=", num_blocks, " block_size=", block_size));
  }
  std::unique_ptr<KvCache> cache(
      new KvCache(num_layers, kv_heads, head_dim, num_blocks, block_size, dtype));
  const int64_t total = cache->layer_bytes_ * 2 * num_layers;
  // Host memory is not touched here: pages become resident as blocks are written.
  cache->storage_ = backend::DeviceArray<uint8_t>(memory != nullptr ? memory : &kHost);
  if (!cache->storage_.Reserve(static_cast<size_t>(total))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate the KV cache: ", num_blocks, " blocks x ",
        BytesPerBlock(num_layers, kv_heads, head_dim, block_size, dtype), " bytes"));
  }
  return cache;
}

KvCache::KvCache(int32_t num_layers, int32_t kv_heads, int32_t head_dim, int32_t num_blocks,
                 int32_t block_size, kernels::KvDtype dtype)
    : num_layers_(num_layers), kv_heads_(kv_heads), head_dim_(head_dim), num_blocks_(num_blocks),
      block_size_(block_size), dtype_(dtype),
      layer_bytes_(int64_t{num_blocks} * block_size * kv_heads * head_dim *
                   kernels::KvDtypeBytes(dtype)) {}

kernels::PagedKvLayer KvCache::Layer(int32_t layer) const {
  uint8_t* base = const_cast<uint8_t*>(storage_.data()) + layer_bytes_ * 2 * layer;
  return kernels::PagedKvLayer{base,     base + layer_bytes_, num_blocks_, block_size_,
                               kv_heads_, head_dim_,          dtype_};
}

}  // namespace caduceus::model
