// Pointers to every weight of a Llama model, bf16, resolved, shape-checked and placed once at load
// time (weight_placement.h says where they live: the mapped files, a host arena or the device).
// A tensor-parallel rank holds only its slices (shard_spec.h); the shapes below are then the
// local ones: heads, kv, I and V are the rank's counts, H stays whole.
//
// The projections that read the same input are fused at load time: q|k|v (rows of q_proj, then
// k_proj, then v_proj, each the rank's slice) and gate|up. The checkpoint keeps them apart (the
// Hugging Face layout); one Linear over the stacked rows computes all of them.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/bf16.h"
#include "worker/model/model_config.h"
#include "worker/model/shard_spec.h"
#include "worker/model/weight_placement.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {

struct LayerWeights {
  const bf16* input_norm = nullptr;  // [H]
  // [(heads + 2 kv)*hd, H]: q_proj, k_proj, v_proj rows; column-parallel (row slices; a
  // replicated kv head when kv heads < ranks)
  const bf16* qkv_proj = nullptr;
  const bf16* o_proj = nullptr;      // [H, heads*hd]  row-parallel: a column slice (a copy)
  const bf16* post_norm = nullptr;   // [H]            replicated
  const bf16* gate_up_proj = nullptr;  // [2I, H]: gate_proj then up_proj rows; column-parallel
  const bf16* down_proj = nullptr;   // [H, I]         row-parallel (a copy)
};

struct LlamaWeights {
  const bf16* embed_tokens = nullptr;  // [V, H] vocab-parallel: rows [vocab_begin, +V)
  std::vector<LayerWeights> layers;
  const bf16* final_norm = nullptr;  // [H]
  const bf16* lm_head = nullptr;     // [V, H] (the embedding when tie_word_embeddings)

  // Only the rank's slices are read. Each tensor goes to `placement`; the store's pages and
  // copies of a source are released once the placement has its own copy. Pointers the placement
  // returns as views (mapped mode) refer into the store, which must outlive them.
  static absl::StatusOr<LlamaWeights> Load(const ModelConfig& config, const ShardLayout& layout,
                                           WeightStore& store, WeightPlacement& placement);
  // Host-arena bytes the hot matrices take (of the whole model / of one rank's slices).
  static size_t ArenaBytes(const ModelConfig& config);
  static size_t ArenaBytes(const ModelConfig& config, const ShardLayout& layout);
};

}  // namespace caduceus::model
