// Free list of KV-cache block ids for the single-process engine (the router has its own block
// manager with prefix reuse; this one only needs allocate/free and leak checks).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace caduceus::engine {

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);
  // RESOURCE_EXHAUSTED when fewer than `count` blocks are free (nothing is allocated then).
  absl::StatusOr<std::vector<int32_t>> Allocate(int32_t count);
  void Free(const std::vector<int32_t>& blocks);
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_blocks() const { return num_blocks_; }

 private:
  int32_t num_blocks_;
  std::vector<int32_t> free_;
};

}  // namespace caduceus::engine
