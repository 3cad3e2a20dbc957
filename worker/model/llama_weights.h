// Pointers to every weight of a Llama model, bf16, resolved and shape-checked once at load time.
// The pointers refer into the WeightStore (zero-copy mmap for bf16 files), which must outlive them.
// A tensor-parallel rank holds only its slices (shard_spec.h); the shapes below are then the
// local ones: heads, kv, I and V are the rank's counts, H stays whole.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/bf16.h"
#include "worker/model/model_config.h"
#include "worker/model/shard_spec.h"
#include "worker/model/weight_arena.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {

struct LayerWeights {
  const bf16* input_norm = nullptr;  // [H]
  const bf16* q_proj = nullptr;      // [heads*hd, H]  column-parallel: a row slice
  const bf16* k_proj = nullptr;      // [kv*hd, H]     column-parallel (or the replicated head)
  const bf16* v_proj = nullptr;      // [kv*hd, H]     column-parallel (or the replicated head)
  const bf16* o_proj = nullptr;      // [H, heads*hd]  row-parallel: a column slice (a copy)
  const bf16* post_norm = nullptr;   // [H]            replicated
  const bf16* gate_proj = nullptr;   // [I, H]         column-parallel
  const bf16* up_proj = nullptr;     // [I, H]         column-parallel
  const bf16* down_proj = nullptr;   // [H, I]         row-parallel (a copy)
};

struct LlamaWeights {
  const bf16* embed_tokens = nullptr;  // [V, H] vocab-parallel: rows [vocab_begin, +V)
  std::vector<LayerWeights> layers;
  const bf16* final_norm = nullptr;  // [H]
  const bf16* lm_head = nullptr;     // [V, H] (the embedding when tie_word_embeddings)

  // With `arena`, the projection matrices and lm_head are copied into it (and their file pages
  // released); without, every pointer refers into the memory-mapped files, except the column
  // slices of a sharded o_proj/down_proj, which are copies owned by the store. Only the rank's
  // slices are read.
  static absl::StatusOr<LlamaWeights> Load(const ModelConfig& config, WeightStore& store,
                                           WeightArena* arena = nullptr);
  static absl::StatusOr<LlamaWeights> Load(const ModelConfig& config, const ShardLayout& layout,
                                           WeightStore& store, WeightArena* arena);
  // Arena bytes needed for the matrices Load copies (of the whole model / of one rank's slices).
  static size_t ArenaBytes(const ModelConfig& config);
  static size_t ArenaBytes(const ModelConfig& config, const ShardLayout& layout);
};

}  // namespace caduceus::model
