#include "worker/model/llama_weights.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::model {

absl::StatusOr<LlamaWeights> LlamaWeights::Load(const ModelConfig& c, WeightStore& store) {
  const int64_t h = c.hidden_size, v = c.vocab_size, inter = c.intermediate_size;
  const int64_t q_out = int64_t{c.num_heads} * c.head_dim;
  const int64_t kv_out = int64_t{c.num_kv_heads} * c.head_dim;
  auto get = [&](const std::string& name,
                 std::initializer_list<int64_t> shape) -> absl::StatusOr<const bf16*> {
    std::vector<int64_t> dims(shape);
    return store.GetBf16(name, dims);
  };

  LlamaWeights w;
  ASSIGN_OR_RETURN(w.embed_tokens, get("model.embed_tokens.weight", {v, h}));
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights& l = w.layers[i];
    ASSIGN_OR_RETURN(l.input_norm, get(p + "input_layernorm.weight", {h}));
    ASSIGN_OR_RETURN(l.q_proj, get(p + "self_attn.q_proj.weight", {q_out, h}));
    ASSIGN_OR_RETURN(l.k_proj, get(p + "self_attn.k_proj.weight", {kv_out, h}));
    ASSIGN_OR_RETURN(l.v_proj, get(p + "self_attn.v_proj.weight", {kv_out, h}));
    ASSIGN_OR_RETURN(l.o_proj, get(p + "self_attn.o_proj.weight", {h, q_out}));
    ASSIGN_OR_RETURN(l.post_norm, get(p + "post_attention_layernorm.weight", {h}));
    ASSIGN_OR_RETURN(l.gate_proj, get(p + "mlp.gate_proj.weight", {inter, h}));
    ASSIGN_OR_RETURN(l.up_proj, get(p + "mlp.up_proj.weight", {inter, h}));
    ASSIGN_OR_RETURN(l.down_proj, get(p + "mlp.down_proj.weight", {h, inter}));
  }
  ASSIGN_OR_RETURN(w.final_norm, get("model.norm.weight", {h}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, get("lm_head.weight", {v, h}));
  }
  return w;
}

}  // namespace caduceus::model
