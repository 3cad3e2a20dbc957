#include "worker/model/llama_weights.h"

#include <cstdint>
#include <initializer_list>
#include <span>
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
  const size_t per_layer = WeightArena::Footprint((q + 2 * kv) * h) +  // q|k|v
                           WeightArena::Footprint(h * q) +             // o_proj
                           WeightArena::Footprint(2 * inter * h) +     // gate|up
                           WeightArena::Footprint(h * inter);          // down_proj
  return c.num_layers * per_layer + (c.tie_word_embeddings ? 0 : WeightArena::Footprint(v * h));
}

absl::StatusOr<LlamaWeights> LlamaWeights::Load(const ModelConfig& c, const ShardLayout& l,
                                                WeightStore& store, WeightPlacement& placement) {
  const int64_t h = c.hidden_size, v = c.vocab_size, inter = c.intermediate_size;
  const int64_t hd = c.head_dim;
  const int64_t q_out = int64_t{c.num_heads} * hd;
  const int64_t kv_out = int64_t{c.num_kv_heads} * hd;
  // Rows [begin, end) of a [rows, cols] tensor. The whole tensor goes through GetBf16 so that an
  // unsharded load takes exactly the pointers (and converted copies) it always took.
  auto rows = [&](const std::string& name, int64_t nrows, int64_t ncols, int64_t begin,
                  int64_t end) -> absl::StatusOr<WeightPart> {
    const int64_t dims[] = {nrows, ncols};
    ASSIGN_OR_RETURN(const bf16* data, begin == 0 && end == nrows
                                           ? store.GetBf16(name, dims)
                                           : store.GetBf16Rows(name, dims, begin, end));
    return WeightPart{data, static_cast<size_t>((end - begin) * ncols)};
  };
  auto cols = [&](const std::string& name, int64_t nrows, int64_t ncols, int64_t begin,
                  int64_t end) -> absl::StatusOr<WeightPart> {
    const int64_t dims[] = {nrows, ncols};
    ASSIGN_OR_RETURN(const bf16* data, begin == 0 && end == ncols
                                           ? store.GetBf16(name, dims)
                                           : store.GetBf16Cols(name, dims, begin, end));
    return WeightPart{data, static_cast<size_t>(nrows * (end - begin))};
  };
  // Places the named tensors' parts as one matrix (hot) or one tensor (cold); once the placement
  // holds a copy, the store's pages and copies of the sources are dropped.
  auto place = [&](bool hot, std::initializer_list<std::string> names,
                   std::initializer_list<WeightPart> parts) -> absl::StatusOr<const bf16*> {
    const std::span<const WeightPart> list(parts.begin(), parts.size());
    const std::string& what = *names.begin();
    ASSIGN_OR_RETURN(const bf16* placed,
                     hot ? placement.Hot(list, what) : placement.Cold(list[0], what));
    if (placement.Copies(list.size(), hot)) {
      for (const std::string& name : names) store.Release(name);
    }
    return placed;
  };
  auto vec = [&](const std::string& name) -> absl::StatusOr<const bf16*> {
    const int64_t dims[] = {h};
    ASSIGN_OR_RETURN(const bf16* data, store.GetBf16(name, dims));
    return place(false, {name}, {WeightPart{data, static_cast<size_t>(h)}});
  };

  const int64_t q_begin = int64_t{l.q_head_begin} * hd, q_end = q_begin + int64_t{l.q_heads} * hd;
  const int64_t kv_begin = int64_t{l.kv_head_begin} * hd;
  const int64_t kv_end = kv_begin + int64_t{l.kv_heads} * hd;
  const int64_t i_begin = l.inter_begin, i_end = i_begin + l.inter;
  const int64_t v_begin = l.vocab_begin, v_end = v_begin + l.vocab;

  LlamaWeights w;
  {
    const std::string name = "model.embed_tokens.weight";
    ASSIGN_OR_RETURN(const WeightPart part, rows(name, v, h, v_begin, v_end));
    // The embedding is read a few rows per step; on a device it is also the tied lm_head.
    ASSIGN_OR_RETURN(w.embed_tokens, place(false, {name}, {part}));
  }
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    // Copying placements read every byte: ask the kernel for the next layer's pages while this
    // one is copied, so the disk stays busy. (Mapped mode reads pages when the kernels touch them.)
    if (placement.mode() != WeightPlacement::Mode::kMapped && i + 1 < c.num_layers) {
      const std::string next = absl::StrCat("model.layers.", i + 1, ".");
      for (const char* t : {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                            "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}) {
        store.Prefetch(next + t);
      }
    }
    LayerWeights& lw = w.layers[i];
    const std::string q = p + "self_attn.q_proj.weight", k = p + "self_attn.k_proj.weight";
    const std::string vn = p + "self_attn.v_proj.weight", o = p + "self_attn.o_proj.weight";
    const std::string g = p + "mlp.gate_proj.weight", u = p + "mlp.up_proj.weight";
    const std::string d = p + "mlp.down_proj.weight";
    ASSIGN_OR_RETURN(lw.input_norm, vec(p + "input_layernorm.weight"));
    ASSIGN_OR_RETURN(const WeightPart q_part, rows(q, q_out, h, q_begin, q_end));
    ASSIGN_OR_RETURN(const WeightPart k_part, rows(k, kv_out, h, kv_begin, kv_end));
    ASSIGN_OR_RETURN(const WeightPart v_part, rows(vn, kv_out, h, kv_begin, kv_end));
    ASSIGN_OR_RETURN(lw.qkv_proj, place(true, {q, k, vn}, {q_part, k_part, v_part}));
    ASSIGN_OR_RETURN(const WeightPart o_part, cols(o, h, q_out, q_begin, q_end));
    ASSIGN_OR_RETURN(lw.o_proj, place(true, {o}, {o_part}));
    ASSIGN_OR_RETURN(lw.post_norm, vec(p + "post_attention_layernorm.weight"));
    ASSIGN_OR_RETURN(const WeightPart g_part, rows(g, inter, h, i_begin, i_end));
    ASSIGN_OR_RETURN(const WeightPart u_part, rows(u, inter, h, i_begin, i_end));
    ASSIGN_OR_RETURN(lw.gate_up_proj, place(true, {g, u}, {g_part, u_part}));
    ASSIGN_OR_RETURN(const WeightPart d_part, cols(d, h, inter, i_begin, i_end));
    ASSIGN_OR_RETURN(lw.down_proj, place(true, {d}, {d_part}));
  }
  ASSIGN_OR_RETURN(w.final_norm, vec("model.norm.weight"));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;  // the same vocab rows as the embedding slice, placed once
  } else {
    const std::string name = "lm_head.weight";
    ASSIGN_OR_RETURN(const WeightPart part, rows(name, v, h, v_begin, v_end));
    ASSIGN_OR_RETURN(w.lm_head, place(true, {name}, {part}));
  }
  return w;
}

}  // namespace caduceus::model
