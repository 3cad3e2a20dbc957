// Anonymous memory that holds the hot weight matrices of a CPU replica.
//
// Why copy weights out of the memory-mapped files: decode is bound by how fast the weights stream
// from DRAM, and page-cache pages are 4 KiB pages scattered in physical memory. Copied into one
// anonymous region with transparent huge pages requested, the same reads ran 1.5x faster on the
// CI machine (docs/performance.md). Each tensor's file pages are dropped right after its copy,
// so resident memory stays about 1x the weights. The embedding table stays mapped: only the rows
// of tokens actually seen are ever touched.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"

namespace caduceus::model {

class WeightArena {
 public:
  static absl::StatusOr<std::unique_ptr<WeightArena>> Create(size_t bytes);
  ~WeightArena();
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;

  // Room for `bytes` bytes (64-byte aligned), to be filled by the caller.
  // RESOURCE_EXHAUSTED when full.
  absl::StatusOr<void*> Allocate(size_t bytes);
  // Bytes an allocation of `bytes` takes, alignment included.
  static size_t Footprint(size_t bytes);
  bool huge_pages_requested() const { return huge_pages_; }

 private:
  WeightArena(void* base, size_t size, bool huge_pages)
      : base_(static_cast<char*>(base)), size_(size), huge_pages_(huge_pages) {}
  char* base_;
  size_t size_;
  size_t used_ = 0;
  bool huge_pages_;
};

}  // namespace caduceus::model
