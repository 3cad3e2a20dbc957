// CUDA implementations of the shared kernel signatures. Every pointer argument (including the
// arrays inside AttentionBatch and PagedKvLayer) is device memory; the AttentionBatch struct
// itself and the scalars live on the host. Kernels are enqueued on `stream.handle` (a
// cudaStream_t; null = the legacy default stream) and return without synchronizing.
#pragma once

#include "kernels/kernels.h"

namespace caduceus::kernels::cuda {
#include "kernels/kernel_signatures.inc"
}  // namespace caduceus::kernels::cuda
