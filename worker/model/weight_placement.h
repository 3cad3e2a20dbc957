// Where the weights a model runs on live, and the one place that copies them there.
//
// LlamaWeights::Load resolves every tensor (or this rank's slice of it) in the WeightStore, then
// hands it here; what comes back is the pointer the kernels read. Three modes, picked from the
// backend and LoadOptions::resident_weights:
//   - device (a non-host backend): every tensor is uploaded into device memory, one allocation
//     per placed matrix; the backend's to_device stages large copies through pinned memory.
//   - host arena (CPU, resident weights): the matrices read on every step are copied into one
//     huge-page WeightArena (weight_arena.h); norms and the embedding table stay mapped.
//   - mapped (CPU, resident_weights off): everything is read from the mapped files, except that
//     a fused matrix (q|k|v, gate|up) cannot be a view of several tensors and is a host copy.
// A matrix is "fused" when several parts are placed as one: their rows stacked in the order
// given, so that one Linear computes them all (one GEMM launch instead of three on a GPU, one
// pass over the activations and one thread-pool dispatch on the CPU).
//
// Parts are bytes, whatever their element type (bf16 matrices, FP8 matrices and their fp32
// scales). Data the loader made itself (weights quantized at load time, expanded scales) is
// `transient`: it dies after the call, so every mode copies it.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/backend/device_memory.h"
#include "worker/model/weight_arena.h"

namespace caduceus::model {

// `bytes` bytes at `data` (host memory: a mapping, a store-owned copy or the loader's own).
struct WeightPart {
  const void* data = nullptr;
  size_t bytes = 0;
};

class WeightPlacement {
 public:
  enum class Mode { kMapped, kHostArena, kDevice };

  // `arena_bytes`: what the hot matrices need in kHostArena mode (LlamaWeights::ArenaBytes).
  // `memory` is copied: the placement's device allocations refer to its own copy.
  static absl::StatusOr<std::unique_ptr<WeightPlacement>> Create(const backend::MemoryOps& memory,
                                                                 bool resident_weights,
                                                                 size_t arena_bytes);
  WeightPlacement(const WeightPlacement&) = delete;
  WeightPlacement& operator=(const WeightPlacement&) = delete;

  // A matrix read whole on every step: the parts' rows stacked in order. `what` names it in
  // errors (RESOURCE_EXHAUSTED when the arena or the device is full).
  absl::StatusOr<const void*> Hot(std::span<const WeightPart> parts, const std::string& what,
                                  bool transient = false);
  // A tensor read sparsely (the embedding table: only the rows of tokens seen) or tiny (norms,
  // scales).
  absl::StatusOr<const void*> Cold(WeightPart part, const std::string& what,
                                   bool transient = false);

  // True when the pointers returned are copies, never the parts themselves: the store may then
  // drop its copies and pages of the sources (WeightStore::Release).
  bool Copies(size_t num_parts, bool hot) const {
    return mode_ == Mode::kDevice || (hot && (mode_ == Mode::kHostArena || num_parts > 1));
  }
  Mode mode() const { return mode_; }
  // Bytes of weights this placement holds (copies only; mapped pages are not counted).
  size_t placed_bytes() const { return placed_bytes_; }

 private:
  WeightPlacement(Mode mode, const backend::MemoryOps& memory, std::unique_ptr<WeightArena> arena)
      : mode_(mode), memory_(memory), arena_(std::move(arena)) {}
  absl::StatusOr<const void*> Upload(std::span<const WeightPart> parts, const std::string& what);
  const void* HostCopy(std::span<const WeightPart> parts);

  Mode mode_;
  const backend::MemoryOps memory_;
  std::unique_ptr<WeightArena> arena_;                   // kHostArena
  std::vector<backend::DeviceArray<uint8_t>> device_;    // kDevice: owners of the uploads
  std::vector<std::unique_ptr<uint8_t[]>> host_copies_;  // host modes: fused and transient data
  size_t placed_bytes_ = 0;
};

}  // namespace caduceus::model
