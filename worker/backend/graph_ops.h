// The compute stream and CUDA graphs of a device backend, as plain function pointers next to its
// kernels (KernelTable::graphs), so that the model captures and replays decode steps without
// naming CUDA (worker/model/step_graphs.h). All null where there are no graphs (the CPU, the
// emulated-device test backend): every step then runs eagerly on the default stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace caduceus::backend {

struct GraphOps {
  // A stream for the model's kernels: a blocking stream, so it stays ordered with the legacy
  // default stream that the memory copies (MemoryOps) and the NCCL collectives use, while
  // being capturable (the legacy stream is not). Null when the device has none left.
  void* (*create_stream)(int device) = nullptr;
  void (*destroy_stream)(void* stream, int device) = nullptr;
  // Starts capturing the calling thread's work on `stream` into a graph.
  absl::Status (*begin_capture)(void* stream) = nullptr;
  // Ends the capture and instantiates the graph: an executable graph that `launch` runs on the
  // same stream, and its node count. Nothing captured has run. Errors: the capture was
  // invalidated (a synchronizing call or legacy-stream work during it) or could not be
  // instantiated; the stream is usable again either way.
  absl::StatusOr<void*> (*end_capture)(void* stream, size_t* nodes) = nullptr;
  absl::Status (*launch)(void* graph, void* stream) = nullptr;
  void (*destroy)(void* graph) = nullptr;
  // kernels::cuda::WorkspaceGeneration: a graph is valid only while this is what it was at
  // capture (the kernels' workspaces it holds pointers into have not been reallocated).
  uint64_t (*workspace_generation)() = nullptr;

  bool available() const { return create_stream != nullptr; }
};

// Defined only in the CUDA backend module (worker/backend/cuda_graphs.cc).
GraphOps CudaGraphOps();

}  // namespace caduceus::backend
