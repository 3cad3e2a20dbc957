#include "worker/model/weight_placement.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::model {

namespace {

size_t TotalCount(std::span<const WeightPart> parts) {
  size_t total = 0;
  for (const WeightPart& p : parts) total += p.count;
  return total;
}

// Stacks the parts into dst, in order.
void Concatenate(std::span<const WeightPart> parts, bf16* dst) {
  for (const WeightPart& p : parts) {
    std::memcpy(dst, p.data, p.count * sizeof(bf16));
    dst += p.count;
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

absl::StatusOr<const bf16*> WeightPlacement::Hot(std::span<const WeightPart> parts,
                                                 const std::string& what) {
  const size_t total = TotalCount(parts);
  switch (mode_) {
    case Mode::kDevice:
      return Upload(parts, what);
    case Mode::kHostArena: {
      absl::StatusOr<bf16*> dst = arena_->Allocate(total);
      if (!dst.ok()) return absl::ResourceExhaustedError(absl::StrCat(what, ": ", dst.status().message()));
      Concatenate(parts, *dst);
      placed_bytes_ += total * sizeof(bf16);
      return *dst;
    }
    case Mode::kMapped:
      if (parts.size() == 1) return parts[0].data;
      host_copies_.push_back(std::make_unique<bf16[]>(total));
      Concatenate(parts, host_copies_.back().get());
      placed_bytes_ += total * sizeof(bf16);
      return host_copies_.back().get();
  }
  return absl::InternalError("unknown weight placement mode");
}

absl::StatusOr<const bf16*> WeightPlacement::Cold(WeightPart part, const std::string& what) {
  if (mode_ == Mode::kDevice) return Upload({&part, 1}, what);
  return part.data;
}

absl::StatusOr<const bf16*> WeightPlacement::Upload(std::span<const WeightPart> parts,
                                                    const std::string& what) {
  const size_t total = TotalCount(parts);
  backend::DeviceArray<bf16> dev(&memory_);
  if (!dev.Reserve(total)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of device memory placing ", what, " (", total * sizeof(bf16), " bytes) after ",
        placed_bytes_, " bytes of weights"));
  }
  bf16* dst = dev.data();
  for (const WeightPart& p : parts) {
    memory_.to_device(dst, p.data, p.count * sizeof(bf16), memory_.device);
    dst += p.count;
  }
  placed_bytes_ += total * sizeof(bf16);
  const bf16* placed = dev.data();
  device_.push_back(std::move(dev));
  return placed;
}

}  // namespace caduceus::model
