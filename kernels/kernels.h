// Types shared by every kernel backend. The kernel signatures themselves are in
// kernel_signatures.inc, included once into namespace kernels::cpu (kernels/cpu/cpu_kernels.h,
// host memory) and once into kernels::cuda (kernels/cuda/cuda_kernels.h, device memory, `Stream`
// carrying the cudaStream_t): one list of signatures, two implementations. Model code reaches
// them only through a Backend, so it never needs an #ifdef.
//
// Numerics: bf16 weights, fp32 activations, fp32 accumulation. Every output element is reduced
// in an order that depends only on the reduction length, never on the batch size, the number of
// threads or the tile it falls into, so a sequence's results are bit-identical whatever else runs
// in the same step (see docs/architecture.md, "batch invariance").
#pragma once

#include <cstdint>

#include "common/bf16.h"

namespace caduceus::kernels {

// Opaque execution stream: cudaStream_t for CUDA kernels, ignored by CPU kernels.
struct Stream {
  void* handle = nullptr;
};

// Element type of the paged KV cache. bf16 halves the cache (twice the tokens in the same memory,
// half the bytes attention reads) at the cost of rounding every stored key and value to bf16
// (round to nearest even); scores, softmax and sums stay fp32. fp32 is what the reference
// outputs were computed with.
enum class KvDtype : int32_t { kF32 = 0, kBf16 = 1 };
inline constexpr int32_t KvDtypeBytes(KvDtype d) { return d == KvDtype::kBf16 ? 2 : 4; }

// Paged KV cache of one layer. Layout [num_blocks][block_size][kv_heads][head_dim] of `dtype`
// (float or bf16). A token at logical position p of a sequence lives in block
// block_table[p / block_size], slot p % block_size.
struct PagedKvLayer {
  void* k = nullptr;
  void* v = nullptr;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  KvDtype dtype = KvDtype::kF32;
};

// Which cached positions each query token of a flat batch attends to.
// Sequence s owns query rows [query_start[s], query_start[s+1]); its query row i sits at position
// positions[row] and attends causally to positions [0, positions[row]] through block table row s
// (block_tables + s * max_blocks_per_seq).
struct AttentionBatch {
  int32_t num_seqs = 0;
  const int32_t* query_start = nullptr;  // [num_seqs + 1]
  const int32_t* positions = nullptr;    // [num_tokens]
  const int32_t* block_tables = nullptr; // [num_seqs][max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  // Query rows in the batch (= query_start[num_seqs]) when the host knows it; 0 = unknown (no
  // split). Lets a device kernel size its grid without reading query_start (the CUDA kernel
  // splits long contexts across blocks when few rows would underfill the GPU; the result bits
  // do not depend on it). The CPU kernel ignores it.
  int32_t num_tokens = 0;
};

}  // namespace caduceus::kernels
