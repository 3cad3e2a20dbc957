#include "worker/model/llama_weights.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::model {

size_t LlamaWeights::ArenaBytes(const ModelConfig& c) {
  const size_t h = c.hidden_size, inter = c.intermediate_size, v = c.vocab_size;
  const size_t q = size_t(c.num_heads) * c.head_dim, kv = size_t(c.num_kv_heads) * c.head_dim;
  const size_t per_layer = 2 * WeightArena::Footprint(q * h) + 2 * WeightArena::Footprint(kv * h) +
                           3 * WeightArena::Footprint(inter * h);
  return c.num_layers * per_layer + (c.tie_word_embeddings ? 0 : WeightArena::Footprint(v * h));
}

absl::StatusOr<LlamaWeights> LlamaWeights::Load(const ModelConfig& c, WeightStore& store,
                                                WeightArena* arena) {
  const int64_t h = c.hidden_size, v = c.vocab_size, inter = c.intermediate_size;
  const int64_t q_out = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_out = int64_t{c.num_kv_heads} * c.head_dim;
  auto get = [&](const std::string& name,
                 std::initializer_list<int64_t> shape) -> absl::StatusOr<const bf16*> {
    std::vector<int64_t> dims(shape);
    return store.GetBf16(name, dims);
  };
  // A matrix read on every step: into the arena when there is one.
  auto get_hot = [&](const std::string& name,
                     std::initializer_list<int64_t> shape) -> absl::StatusOr<const bf16*> {
    ASSIGN_OR_RETURN(const bf16* mapped, get(name, shape));
    if (arena == nullptr) return mapped;
    size_t count = 1;
    for (int64_t d : shape) count *= static_cast<size_t>(d);
    ASSIGN_OR_RETURN(const bf16* copy, arena->Copy(mapped, count));
    store.Release(name);
    return copy;
  };

  LlamaWeights w;
  ASSIGN_OR_RETURN(w.embed_tokens, get("model.embed_tokens.weight", {v, h}));
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights& l = w.layers[i];
    ASSIGN_OR_RETURN(l.input_norm, get(p + "input_layernorm.weight", {h}));
    ASSIGN_OR_RETURN(l.q_proj, get_hot(p + "self_attn.q_proj.weight", {q_out, h}));
    ASSIGN_OR_RETURN(l.k_proj, get_hot(p + "self_attn.k_proj.weight", {kv_out, h}));
    ASSIGN_OR_RETURN(l.v_proj, get_hot(p + "self_attn.v_proj.weight", {kv_out, h}));
    ASSIGN_OR_RETURN(l.o_proj, get_hot(p + "self_attn.o_proj.weight", {h, q_out}));
    ASSIGN_OR_RETURN(l.post_norm, get(p + "post_attention_layernorm.weight", {h}));
    ASSIGN_OR_RETURN(l.gate_proj, get_hot(p + "mlp.gate_proj.weight", {inter, h}));
    ASSIGN_OR_RETURN(l.up_proj, get_hot(p + "mlp.up_proj.weight", {inter, h}));
    ASSIGN_OR_RETURN(l.down_proj, get_hot(p + "mlp.down_proj.weight", {h, inter}));
  }
  ASSIGN_OR_RETURN(w.final_norm, get("model.norm.weight", {h}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, get_hot("lm_head.weight", {v, h}));
  }
  return w;
}

}  // namespace caduceus::model
