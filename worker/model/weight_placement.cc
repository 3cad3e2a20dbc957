#include "worker/model/weight_placement.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::model {

namespace {

size_t TotalBytes(std::span<const WeightPart> parts) {
  size_t total = 0;
  for (const WeightPart& p : parts) total += p.bytes;
  return total;
}

// Stacks the parts into dst, in order.
void Concatenate(std::span<const WeightPart> parts, uint8_t* dst) {
  for (const WeightPart& p : parts) {
    std::memcpy(dst, p.data, p.bytes);
    dst += p.bytes;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<WeightPlacement>> WeightPlacement::Create(
    const backend::MemoryOps& memory, bool resident_weights, size_t arena_bytes) {
  if (!memory.host) {
    return std::unique_ptr<WeightPlacement>(new WeightPlacement(Mode::kDevice, memory, nullptr));
  }
  if (!resident_weights) {
    return std::unique_ptr<WeightPlacement>(new WeightPlacement(Mode::kMapped, memory, nullptr));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<WeightArena> arena, WeightArena::Create(arena_bytes));
  return std::unique_ptr<WeightPlacement>(
      new WeightPlacement(Mode::kHostArena, memory, std::move(arena)));
}

const void* WeightPlacement::HostCopy(std::span<const WeightPart> parts) {
  const size_t total = TotalBytes(parts);
  host_copies_.push_back(std::make_unique_for_overwrite<uint8_t[]>(std::max<size_t>(total, 1)));
  Concatenate(parts, host_copies_.back().get());
  placed_bytes_ += total;
  return host_copies_.back().get();
}

absl::StatusOr<const void*> WeightPlacement::Hot(std::span<const WeightPart> parts,
                                                 const std::string& what, bool transient) {
  const size_t total = TotalBytes(parts);
  switch (mode_) {
    case Mode::kDevice:
      return Upload(parts, what);
    case Mode::kHostArena: {
      absl::StatusOr<void*> dst = arena_->Allocate(total);
      if (!dst.ok()) return absl::ResourceExhaustedError(absl::StrCat(what, ": ", dst.status().message()));
      Concatenate(parts, static_cast<uint8_t*>(*dst));
      placed_bytes_ += total;
      return *dst;
    }
    case Mode::kMapped:
      if (parts.size() == 1 && !transient) return parts[0].data;
      return HostCopy(parts);
  }
  return absl::InternalError("unknown weight placement mode");
}

absl::StatusOr<const void*> WeightPlacement::Cold(WeightPart part, const std::string& what,
                                                  bool transient) {
  if (mode_ == Mode::kDevice) return Upload({&part, 1}, what);
  if (transient) return HostCopy({&part, 1});
  return part.data;
}

absl::StatusOr<const void*> WeightPlacement::Upload(std::span<const WeightPart> parts,
                                                    const std::string& what) {
  const size_t total = TotalBytes(parts);
  backend::DeviceArray<uint8_t> dev(&memory_);
  if (!dev.Reserve(total)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of device memory placing ", what, " (", total, " bytes) after ", placed_bytes_,
        " bytes of weights"));
  }
  uint8_t* dst = dev.data();
  for (const WeightPart& p : parts) {
    memory_.to_device(dst, p.data, p.bytes, memory_.device);
    dst += p.bytes;
  }
  placed_bytes_ += total;
  const void* placed = dev.data();
  device_.push_back(std::move(dev));
  return placed;
}

}  // namespace caduceus::model
