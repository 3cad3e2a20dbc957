#include "worker/engine/block_allocator.h"

#include "absl/strings/str_cat.h"

namespace caduceus::engine {

BlockAllocator::BlockAllocator(int32_t num_blocks) : num_blocks_(num_blocks) {
  free_.reserve(num_blocks);
  // Hand out low ids first: pop_back takes from the end.
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int32_t count) {
  if (count > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", count, " blocks needed, ",
                                                     num_free(), " of ", num_blocks_, " free"));
  }
  std::vector<int32_t> out(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  return out;
}

void BlockAllocator::Free(const std::vector<int32_t>& blocks) {
  free_.insert(free_.end(), blocks.rbegin(), blocks.rend());
}

}  // namespace caduceus::engine
