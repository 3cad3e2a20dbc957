#include "worker/model/weight_arena.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace caduceus::model {

size_t WeightArena::Footprint(size_t bytes) { return (bytes + 63) / 64 * 64; }

absl::StatusOr<std::unique_ptr<WeightArena>> WeightArena::Create(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot reserve ", size, " bytes of memory for the weights: ", std::strerror(errno)));
  }
  // Best effort: without transparent huge pages the copy still works, only slower to read.
  const bool huge = madvise(base, size, MADV_HUGEPAGE) == 0;
  return std::unique_ptr<WeightArena>(new WeightArena(base, size, huge));
}

WeightArena::~WeightArena() { munmap(base_, size_); }

absl::StatusOr<void*> WeightArena::Allocate(size_t bytes) {
  const size_t need = Footprint(bytes);
  if (used_ + need > size_) {
    return absl::ResourceExhaustedError("weight arena is full (size computed wrongly)");
  }
  char* dst = base_ + used_;
  used_ += need;
  return dst;
}

}  // namespace caduceus::model
