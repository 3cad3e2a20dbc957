#include "worker/model/kv_cache.h"

#include <new>

#include "absl/strings/str_cat.h"

namespace caduceus::model {

int64_t KvCache::BytesPerBlock(int32_t num_layers, int32_t kv_heads, int32_t head_dim,
                               int32_t block_size) {
  return int64_t{2} * num_layers * block_size * kv_heads * head_dim * int64_t{sizeof(float)};
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
                                                         const backend::MemoryOps* memory) {
  static const backend::MemoryOps kHost = backend::HostMemoryOps();
  if (num_layers <= 0 || kv_heads <= 0 || head_dim <= 0 || num_blocks <= 0 || block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache dimensions must be positive: layers=", num_layers, " kv_heads=", kv_heads,
        " head_dim=", head_dim, " blocks=", num_blocks, " block_size=", block_size));
  }
  std::unique_ptr<KvCache> cache(new KvCache(num_layers, kv_heads, head_dim, num_blocks, block_size));
  const int64_t total = cache->layer_floats_ * 2 * num_layers;
  // Host memory is not touched here: pages become resident as blocks are written.
  cache->storage_ = backend::DeviceArray<float>(memory != nullptr ? memory : &kHost);
  if (!cache->storage_.Reserve(static_cast<size_t>(total))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate the KV cache: ", num_blocks, " blocks x ",
        BytesPerBlock(num_layers, kv_heads, head_dim, block_size), " bytes"));
  }
  return cache;
}

KvCache::KvCache(int32_t num_layers, int32_t kv_heads, int32_t head_dim, int32_t num_blocks,
                 int32_t block_size)
    : num_layers_(num_layers), kv_heads_(kv_heads), head_dim_(head_dim), num_blocks_(num_blocks),
      block_size_(block_size),
      layer_floats_(int64_t{num_blocks} * block_size * kv_heads * head_dim) {}

kernels::PagedKvLayer KvCache::Layer(int32_t layer) const {
  float* base = const_cast<float*>(storage_.data()) + layer_floats_ * 2 * layer;
  return kernels::PagedKvLayer{base, base + layer_floats_, num_blocks_, block_size_, kv_heads_,
                               head_dim_};
}

}  // namespace caduceus::model
