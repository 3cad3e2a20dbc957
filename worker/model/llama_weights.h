// Pointers to every weight of a Llama model, resolved, shape-checked and placed once at load
// time (weight_placement.h says where they live: the mapped files, a host arena or the device).
// A tensor-parallel rank holds only its slices (shard_spec.h); the shapes below are then the
// local ones: heads, kv, I and V are the rank's counts, H stays whole.
//
// The projections that read the same input are fused at load time: q|k|v (rows of q_proj, then
// k_proj, then v_proj, each the rank's slice) and gate|up. The checkpoint keeps them apart (the
// Hugging Face layout); one Linear over the stacked rows computes all of them.
//
// Projections are bf16 or FP8 (docs/architecture.md, "FP8 weights"): FP8 when the checkpoint
// stores them so (quantization_config.h) or when LoadOptions asks to quantize at load time
// (fp8_quantize.h). Embeddings, norms and the lm_head always stay bf16.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bf16.h"
#include "worker/model/model_config.h"
#include "worker/model/shard_spec.h"
#include "worker/model/weight_placement.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {

// One projection matrix [out, in]: bf16 values, or E4M3 bytes with one fp32 scale per output row
// (the kernels' LinearFp8).
struct LinearWeight {
  const bf16* values = nullptr;   // bf16 weights; null when FP8
  const uint8_t* fp8 = nullptr;   // FP8 weights
  const float* scale = nullptr;   // [out], with fp8
};

struct LayerWeights {
  const bf16* input_norm = nullptr;  // [H]
  // [(heads + 2 kv)*hd, H]: q_proj, k_proj, v_proj rows; column-parallel (row slices; a
  // replicated kv head when kv heads < ranks)
  LinearWeight qkv_proj;
  LinearWeight o_proj;               // [H, heads*hd]  row-parallel: a column slice (a copy)
  const bf16* post_norm = nullptr;   // [H]            replicated
  LinearWeight gate_up_proj;         // [2I, H]: gate_proj then up_proj rows; column-parallel
  LinearWeight down_proj;            // [H, I]         row-parallel (a copy)
};

struct LlamaWeights {
  const bf16* embed_tokens = nullptr;  // [V, H] vocab-parallel: rows [vocab_begin, +V)
  std::vector<LayerWeights> layers;
  const bf16* final_norm = nullptr;  // [H]
  const bf16* lm_head = nullptr;     // [V, H] (the embedding when tie_word_embeddings)
  // How the projections are stored: "none" (bf16), "fp8" (the checkpoint's FP8), "fp8-online"
  // (quantized from bf16 at load time).
  const char* quantization = "none";

  // Only the rank's slices are read. Each tensor goes to `placement`; the store's pages and
  // copies of a source are released once the placement has its own copy. Pointers the placement
  // returns as views (mapped mode) refer into the store, which must outlive them.
  // `quantize_fp8`: projections stored as bf16/f16/f32 are quantized to FP8 (fp8_quantize.h).
  static absl::StatusOr<LlamaWeights> Load(const ModelConfig& config, const ShardLayout& layout,
                                           WeightStore& store, WeightPlacement& placement,
                                           bool quantize_fp8 = false);
  // Host-arena bytes the hot matrices take (of the whole model / of one rank's slices), bf16
  // projections. With a store: each projection at the size it will have (1 byte per weight when
  // FP8, stored so or quantized at load time).
  static size_t ArenaBytes(const ModelConfig& config);
  static size_t ArenaBytes(const ModelConfig& config, const ShardLayout& layout);
  static size_t ArenaBytes(const ModelConfig& config, const ShardLayout& layout,
                           const WeightStore& store, bool quantize_fp8);
};

}  // namespace caduceus::model
