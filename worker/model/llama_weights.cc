#include "worker/model/llama_weights.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::model {

size_t LlamaWeights::ArenaBytes(const ModelConfig& c) {
  return ArenaBytes(c, ShardLayout::Full(c));
}

size_t LlamaWeights::ArenaBytes(const ModelConfig& c, const ShardLayout& l) {
  const size_t h = c.hidden_size, inter = l.inter, v = l.vocab;
  const size_t q = size_t(l.q_heads) * c.head_dim, kv = size_t(l.kv_heads) * c.head_dim;
  const size_t per_layer = 2 * WeightArena::Footprint(q * h) + 2 * WeightArena::Footprint(kv * h) +
                           3 * WeightArena::Footprint(inter * h);
  return c.num_layers * per_layer + (c.tie_word_embeddings ? 0 : WeightArena::Footprint(v * h));
}

absl::StatusOr<LlamaWeights> LlamaWeights::Load(const ModelConfig& c, WeightStore& store,
                                                WeightArena* arena) {
  return Load(c, ShardLayout::Full(c), store, arena);
}

absl::StatusOr<LlamaWeights> LlamaWeights::Load(const ModelConfig& c, const ShardLayout& l,
                                                WeightStore& store, WeightArena* arena) {
  const int64_t h = c.hidden_size, v = c.vocab_size, inter = c.intermediate_size;
  const int64_t hd = c.head_dim;
  const int64_t q_out = int64_t{c.num_heads} * hd;
  const int64_t kv_out = int64_t{c.num_kv_heads} * hd;
  // Rows [begin, end) of a [rows, cols] tensor. The whole tensor goes through GetBf16 so that an
  // unsharded load takes exactly the pointers (and converted copies) it always took.
  auto rows = [&](const std::string& name, int64_t nrows, int64_t ncols, int64_t begin,
                  int64_t end) -> absl::StatusOr<const bf16*> {
    const int64_t dims[] = {nrows, ncols};
    if (begin == 0 && end == nrows) return store.GetBf16(name, dims);
    return store.GetBf16Rows(name, dims, begin, end);
  };
  auto cols = [&](const std::string& name, int64_t nrows, int64_t ncols, int64_t begin,
                  int64_t end) -> absl::StatusOr<const bf16*> {
    const int64_t dims[] = {nrows, ncols};
    if (begin == 0 && end == ncols) return store.GetBf16(name, dims);
    return store.GetBf16Cols(name, dims, begin, end);
  };
  auto vec = [&](const std::string& name) -> absl::StatusOr<const bf16*> {
    const int64_t dims[] = {h};
    return store.GetBf16(name, dims);
  };
  // A matrix read on every step: into the arena when there is one (then the store's copy, if
  // any, and the file pages this process touched are dropped).
  auto hot = [&](const std::string& name, absl::StatusOr<const bf16*> slice,
                 int64_t count) -> absl::StatusOr<const bf16*> {
    ASSIGN_OR_RETURN(const bf16* src, std::move(slice));
    if (arena == nullptr) return src;
    ASSIGN_OR_RETURN(const bf16* copy, arena->Copy(src, static_cast<size_t>(count)));
    store.Release(name);
    return copy;
  };

  const int64_t q_begin = int64_t{l.q_head_begin} * hd, q_end = q_begin + int64_t{l.q_heads} * hd;
  const int64_t kv_begin = int64_t{l.kv_head_begin} * hd;
  const int64_t kv_end = kv_begin + int64_t{l.kv_heads} * hd;
  const int64_t i_begin = l.inter_begin, i_end = i_begin + l.inter;
  const int64_t v_begin = l.vocab_begin, v_end = v_begin + l.vocab;
  const int64_t q_local = q_end - q_begin, kv_local = kv_end - kv_begin, i_local = l.inter;

  LlamaWeights w;
  ASSIGN_OR_RETURN(w.embed_tokens, rows("model.embed_tokens.weight", v, h, v_begin, v_end));
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LayerWeights& lw = w.layers[i];
    const std::string q = p + "self_attn.q_proj.weight", k = p + "self_attn.k_proj.weight";
    const std::string vn = p + "self_attn.v_proj.weight", o = p + "self_attn.o_proj.weight";
    const std::string g = p + "mlp.gate_proj.weight", u = p + "mlp.up_proj.weight";
    const std::string d = p + "mlp.down_proj.weight";
    ASSIGN_OR_RETURN(lw.input_norm, vec(p + "input_layernorm.weight"));
    ASSIGN_OR_RETURN(lw.q_proj, hot(q, rows(q, q_out, h, q_begin, q_end), q_local * h));
    ASSIGN_OR_RETURN(lw.k_proj, hot(k, rows(k, kv_out, h, kv_begin, kv_end), kv_local * h));
    ASSIGN_OR_RETURN(lw.v_proj, hot(vn, rows(vn, kv_out, h, kv_begin, kv_end), kv_local * h));
    ASSIGN_OR_RETURN(lw.o_proj, hot(o, cols(o, h, q_out, q_begin, q_end), h * q_local));
    ASSIGN_OR_RETURN(lw.post_norm, vec(p + "post_attention_layernorm.weight"));
    ASSIGN_OR_RETURN(lw.gate_proj, hot(g, rows(g, inter, h, i_begin, i_end), i_local * h));
    ASSIGN_OR_RETURN(lw.up_proj, hot(u, rows(u, inter, h, i_begin, i_end), i_local * h));
    ASSIGN_OR_RETURN(lw.down_proj, hot(d, cols(d, h, inter, i_begin, i_end), h * i_local));
  }
  ASSIGN_OR_RETURN(w.final_norm, vec("model.norm.weight"));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;  // the same vocab rows as the embedding slice
  } else {
    const std::string name = "lm_head.weight";
    ASSIGN_OR_RETURN(w.lm_head, hot(name, rows(name, v, h, v_begin, v_end), l.vocab * h));
  }
  return w;
}

}  // namespace caduceus::model
