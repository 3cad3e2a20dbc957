// Pointers to every weight of a Llama model, bf16, resolved and shape-checked once at load time.
// The pointers refer into the WeightStore (zero-copy mmap for bf16 files), which must outlive them.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/bf16.h"
#include "worker/model/model_config.h"
#include "worker/model/weight_arena.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {

struct LayerWeights {
  const bf16* input_norm = nullptr;  // [H]
  const bf16* q_proj = nullptr;      // [heads*hd, H]
  const bf16* k_proj = nullptr;      // [kv*hd, H]
  const bf16* v_proj = nullptr;      // [kv*hd, H]
  const bf16* o_proj = nullptr;      // [H, heads*hd]
  const bf16* post_norm = nullptr;   // [H]
  const bf16* gate_proj = nullptr;   // [I, H]
  const bf16* up_proj = nullptr;     // [I, H]
  const bf16* down_proj = nullptr;   // [H, I]
};

struct LlamaWeights {
  const bf16* embed_tokens = nullptr;  // [V, H]
  std::vector<LayerWeights> layers;
  const bf16* final_norm = nullptr;  // [H]
  const bf16* lm_head = nullptr;     // [V, H] (the embedding when tie_word_embeddings)

  // With `arena`, the projection matrices and lm_head are copied into it (and their file pages
  // released); without, every pointer refers into the memory-mapped files.
  static absl::StatusOr<LlamaWeights> Load(const ModelConfig& config, WeightStore& store,
                                           WeightArena* arena = nullptr);
  // Arena bytes needed for the matrices Load copies.
  static size_t ArenaBytes(const ModelConfig& config);
};

}  // namespace caduceus::model
