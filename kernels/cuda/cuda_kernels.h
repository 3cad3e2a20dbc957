// CUDA implementations of the shared kernel signatures. Every pointer argument (including the
// arrays inside AttentionBatch and PagedKvLayer) is device memory; the AttentionBatch struct
// itself and the scalars live on the host. Kernels are enqueued on `stream.handle` (a
// cudaStream_t; null = the legacy default stream) and return without synchronizing.
#pragma once

#include "kernels/kernels.h"

#include <cstdint>

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
}  // namespace caduceus::kernels::cuda
