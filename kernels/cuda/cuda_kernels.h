// CUDA implementations of the shared kernel signatures. Every pointer argument (including the
// arrays inside AttentionBatch and PagedKvLayer) is device memory; the AttentionBatch struct
// itself and the scalars live on the host. Kernels are enqueued on `stream.handle` (a
// cudaStream_t; null = the legacy default stream) and return without synchronizing.
#pragma once

#include "kernels/kernels.h"

#include <cstdint>
#include <string>

namespace caduceus::kernels::cuda {
#include "kernels/kernel_signatures.inc"

// Changes whenever a kernel workspace (Linear's, split attention's, any thread's) is reallocated
// or released. A CUDA graph that captured kernel calls holds their workspace pointers: replay it
// only while this is what it was at capture.
uint64_t WorkspaceGeneration();

// Frees the workspaces and the cuBLAS context of `stream` (after the work queued on it), before
// its owner destroys it. The kernels keep them per stream (per host thread on the default
// streams, for which this does nothing).
void ReleaseStream(Stream stream);

// The calling thread is capturing a CUDA graph (the model's decode-step graphs, through
// worker/backend/cuda_graphs.cc). Until EndThreadCapture, a CUDA or cuBLAS call of these kernels
// that fails does not abort the process as it otherwise does: nothing executes during a capture,
// the failure only makes the graph unusable. A workspace that would have to grow is such a
// failure too (CUDA refuses to free memory in a capture). EndThreadCapture returns the first
// failure (empty when none); the caller then discards the graph and runs the work eagerly, where
// a real fault aborts as usual.
void BeginThreadCapture();
std::string EndThreadCapture();
}  // namespace caduceus::kernels::cuda
