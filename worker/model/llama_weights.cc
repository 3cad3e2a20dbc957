#include "worker/model/llama_weights.h"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/fp8_quantize.h"

namespace caduceus::model {
namespace {

// The seven projections of a layer, as fused groups (the first name's dtype decides the group's
// format; llama_weights.h).
constexpr const char* kQkv[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                "self_attn.v_proj.weight"};
constexpr const char* kO[] = {"self_attn.o_proj.weight"};
constexpr const char* kGateUp[] = {"mlp.gate_proj.weight", "mlp.up_proj.weight"};
constexpr const char* kDown[] = {"mlp.down_proj.weight"};

bool StoredFp8(const WeightStore& store, const std::string& name) {
  const TensorInfo* t = store.Find(name);
  return t != nullptr && t->dtype == DType::kF8E4M3;
}

// "<prefix>.weight" -> "<prefix>.weight_scale" (AutoFP8 and compressed-tensors spelling).
std::string ScaleName(const std::string& weight) { return weight + "_scale"; }

// A rank's slice of one checkpoint projection: rows [begin, end) of a [rows, cols] tensor
// (column-parallel), or columns [begin, end) (row-parallel).
struct Slice {
  std::string name;
  int64_t rows = 0, cols = 0;
  bool by_rows = true;
  int64_t begin = 0, end = 0;

  int64_t out_rows() const { return by_rows ? end - begin : rows; }
  int64_t in_cols() const { return by_rows ? cols : end - begin; }
};

class ProjectionLoader {
 public:
  ProjectionLoader(WeightStore& store, WeightPlacement& placement, bool quantize_fp8)
      : store_(store), placement_(placement), quantize_fp8_(quantize_fp8) {}

  // The slices' rows stacked as one matrix (see llama_weights.h), in the format the checkpoint
  // and the options give.
  absl::StatusOr<LinearWeight> Load(std::initializer_list<Slice> slices) {
    const std::span<const Slice> list(slices.begin(), slices.size());
    const bool fp8 = StoredFp8(store_, list[0].name);
    for (const Slice& s : list) {
      if (StoredFp8(store_, s.name) != fp8) {
        return absl::InvalidArgumentError(absl::StrCat(
            store_.model_dir(), ": '", s.name, "' and '", list[0].name, "' are fused into one "
            "matrix but only one of them is F8_E4M3; quantize both or neither"));
      }
    }
    if (fp8) {
      loaded_stored_fp8_ = true;
      return LoadFp8(list);
    }
    if (quantize_fp8_) {
      quantized_ = true;
      return QuantizeBf16(list);
    }
    return LoadBf16(list);
  }

  // What the loaded projections are (LlamaWeights::quantization): the checkpoint's FP8 wins
  // over load-time quantization of some bf16 ones.
  const char* quantization() const {
    return loaded_stored_fp8_ ? "fp8" : quantized_ ? "fp8-online" : "none";
  }

 private:
  absl::StatusOr<const bf16*> Bf16Slice(const Slice& s) {
    const int64_t dims[] = {s.rows, s.cols};
    if (s.by_rows) {
      // The whole tensor goes through GetBf16 so that an unsharded load takes exactly the
      // pointers (and converted copies) it always took.
      return s.begin == 0 && s.end == s.rows ? store_.GetBf16(s.name, dims)
                                             : store_.GetBf16Rows(s.name, dims, s.begin, s.end);
    }
    return s.begin == 0 && s.end == s.cols ? store_.GetBf16(s.name, dims)
                                           : store_.GetBf16Cols(s.name, dims, s.begin, s.end);
  }

  // Once the placement holds a copy, the store's pages and copies of the sources go.
  void ReleaseIfCopied(std::span<const Slice> list, bool copied) {
    if (!copied) return;
    for (const Slice& s : list) {
      store_.Release(s.name);
      store_.Release(ScaleName(s.name));
    }
  }

  absl::StatusOr<LinearWeight> LoadBf16(std::span<const Slice> list) {
    std::vector<WeightPart> parts;
    for (const Slice& s : list) {
      ASSIGN_OR_RETURN(const bf16* data, Bf16Slice(s));
      parts.push_back({data, static_cast<size_t>(s.out_rows() * s.in_cols()) * sizeof(bf16)});
    }
    ASSIGN_OR_RETURN(const void* placed, placement_.Hot(parts, list[0].name));
    ReleaseIfCopied(list, placement_.Copies(parts.size(), /*hot=*/true));
    return LinearWeight{static_cast<const bf16*>(placed), nullptr, nullptr};
  }

  absl::StatusOr<LinearWeight> QuantizeBf16(std::span<const Slice> list) {
    int64_t total_rows = 0;
    for (const Slice& s : list) total_rows += s.out_rows();
    const int64_t cols = list[0].in_cols();
    auto bytes = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(total_rows * cols));
    std::vector<float> scales(static_cast<size_t>(total_rows));
    int64_t row = 0;
    for (const Slice& s : list) {
      ASSIGN_OR_RETURN(const bf16* data, Bf16Slice(s));
      QuantizeRowsFp8(data, s.out_rows(), cols, bytes.get() + row * cols, scales.data() + row);
      row += s.out_rows();
      store_.Release(s.name);  // the bf16 source is no longer needed, whatever the placement
    }
    const WeightPart part{bytes.get(), static_cast<size_t>(total_rows * cols)};
    ASSIGN_OR_RETURN(const void* placed, placement_.Hot({&part, 1}, list[0].name, /*transient=*/true));
    ASSIGN_OR_RETURN(const float* scale, PlaceScales(scales, list[0].name));
    return LinearWeight{nullptr, static_cast<const uint8_t*>(placed), scale};
  }

  absl::StatusOr<LinearWeight> LoadFp8(std::span<const Slice> list) {
    std::vector<WeightPart> parts;
    std::vector<float> scales;
    for (const Slice& s : list) {
      const int64_t dims[] = {s.rows, s.cols};
      ASSIGN_OR_RETURN(const uint8_t* data, s.by_rows
                                                ? store_.GetFp8Rows(s.name, dims, s.begin, s.end)
                                                : store_.GetFp8Cols(s.name, dims, s.begin, s.end));
      parts.push_back({data, static_cast<size_t>(s.out_rows() * s.in_cols())});
      RETURN_IF_ERROR(AppendScales(s, scales));
    }
    ASSIGN_OR_RETURN(const void* placed, placement_.Hot(parts, list[0].name));
    ASSIGN_OR_RETURN(const float* scale, PlaceScales(scales, list[0].name));
    ReleaseIfCopied(list, placement_.Copies(parts.size(), /*hot=*/true));
    return LinearWeight{nullptr, static_cast<const uint8_t*>(placed), scale};
  }

  // The slice's output rows' scales: a per-tensor scale ([] or [1]) repeated, or its rows of a
  // per-channel one ([rows, 1] or [rows]).
  absl::Status AppendScales(const Slice& s, std::vector<float>& out) {
    const std::string name = ScaleName(s.name);
    const TensorInfo* t = store_.Find(name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(store_.model_dir(), ": '", s.name,
                                              "' is F8_E4M3 but its scale '", name,
                                              "' is missing"));
    }
    const bool per_tensor = t->NumElements() == 1 && t->shape.size() <= 1;
    const bool per_channel = (t->shape.size() == 1 && t->shape[0] == s.rows) ||
                             (t->shape.size() == 2 && t->shape[0] == s.rows && t->shape[1] == 1);
    if (!per_tensor && !per_channel) {
      return absl::InvalidArgumentError(absl::StrCat(
          t->file, ": scale '", name, "' has ", t->shape.size(), " dimensions and ",
          t->NumElements(), " elements; expected a per-tensor ([] or [1]) or per-channel ([",
          s.rows, ", 1] or [", s.rows, "]) scale"));
    }
    ASSIGN_OR_RETURN(const std::vector<float> values, store_.GetFloats(name));
    for (float v : values) {
      if (!std::isfinite(v) || v < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(t->file, ": scale '", name, "' holds ", v, " (scales are finite, >= 0)"));
      }
    }
    const int64_t first = s.by_rows ? s.begin : 0;
    for (int64_t r = first; r < first + s.out_rows(); ++r) {
      out.push_back(per_tensor ? values[0] : values[static_cast<size_t>(r)]);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<const float*> PlaceScales(const std::vector<float>& scales, const std::string& what) {
    ASSIGN_OR_RETURN(const void* placed,
                     placement_.Cold({scales.data(), scales.size() * sizeof(float)},
                                     absl::StrCat(what, " (scales)"), /*transient=*/true));
    return static_cast<const float*>(placed);
  }

  WeightStore& store_;
  WeightPlacement& placement_;
  const bool quantize_fp8_;
  bool loaded_stored_fp8_ = false;
  bool quantized_ = false;
};

}  // namespace

size_t LlamaWeights::ArenaBytes(const ModelConfig& c) {
  return ArenaBytes(c, ShardLayout::Full(c));
}

size_t LlamaWeights::ArenaBytes(const ModelConfig& c, const ShardLayout& l) {
  const size_t h = c.hidden_size, inter = l.inter, v = l.vocab;
  const size_t q = size_t(l.q_heads) * c.head_dim, kv = size_t(l.kv_heads) * c.head_dim;
  const size_t per_layer = WeightArena::Footprint((q + 2 * kv) * h * sizeof(bf16)) +  // q|k|v
                           WeightArena::Footprint(h * q * sizeof(bf16)) +             // o_proj
                           WeightArena::Footprint(2 * inter * h * sizeof(bf16)) +     // gate|up
                           WeightArena::Footprint(h * inter * sizeof(bf16));          // down_proj
  return c.num_layers * per_layer +
         (c.tie_word_embeddings ? 0 : WeightArena::Footprint(v * h * sizeof(bf16)));
}

size_t LlamaWeights::ArenaBytes(const ModelConfig& c, const ShardLayout& l,
                                const WeightStore& store, bool quantize_fp8) {
  const size_t h = c.hidden_size, inter = l.inter, v = l.vocab;
  const size_t q = size_t(l.q_heads) * c.head_dim, kv = size_t(l.kv_heads) * c.head_dim;
  size_t total = c.tie_word_embeddings ? 0 : WeightArena::Footprint(v * h * sizeof(bf16));
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto bytes = [&](const char* first, size_t elements) {
      const bool fp8 = quantize_fp8 || StoredFp8(store, p + first);
      return WeightArena::Footprint(elements * (fp8 ? 1 : sizeof(bf16)));
    };
    total += bytes(kQkv[0], (q + 2 * kv) * h) + bytes(kO[0], h * q) +
             bytes(kGateUp[0], 2 * inter * h) + bytes(kDown[0], h * inter);
  }
  return total;
}

absl::StatusOr<LlamaWeights> LlamaWeights::Load(const ModelConfig& c, const ShardLayout& l,
                                                WeightStore& store, WeightPlacement& placement,
                                                bool quantize_fp8) {
  const int64_t h = c.hidden_size, v = c.vocab_size, inter = c.intermediate_size;
  const int64_t hd = c.head_dim;
  const int64_t q_out = int64_t{c.num_heads} * hd;
  const int64_t kv_out = int64_t{c.num_kv_heads} * hd;
  ProjectionLoader projections(store, placement, quantize_fp8);
  // Rows [begin, end) of a [rows, cols] bf16 tensor, placed cold (read a few rows per step) or
  // hot (read whole every step).
  auto place_rows = [&](const std::string& name, int64_t nrows, int64_t begin, int64_t end,
                        bool hot) -> absl::StatusOr<const bf16*> {
    const int64_t dims[] = {nrows, h};
    ASSIGN_OR_RETURN(const bf16* data, begin == 0 && end == nrows
                                           ? store.GetBf16(name, dims)
                                           : store.GetBf16Rows(name, dims, begin, end));
    const WeightPart part{data, static_cast<size_t>((end - begin) * h) * sizeof(bf16)};
    ASSIGN_OR_RETURN(const void* placed, hot ? placement.Hot({&part, 1}, name)
                                             : placement.Cold(part, name));
    if (placement.Copies(1, hot)) store.Release(name);
    return static_cast<const bf16*>(placed);
  };
  auto vec = [&](const std::string& name) -> absl::StatusOr<const bf16*> {
    const int64_t dims[] = {h};
    ASSIGN_OR_RETURN(const bf16* data, store.GetBf16(name, dims));
    ASSIGN_OR_RETURN(const void* placed,
                     placement.Cold({data, static_cast<size_t>(h) * sizeof(bf16)}, name));
    if (placement.Copies(1, false)) store.Release(name);
    return static_cast<const bf16*>(placed);
  };

  const int64_t q_begin = int64_t{l.q_head_begin} * hd, q_end = q_begin + int64_t{l.q_heads} * hd;
  const int64_t kv_begin = int64_t{l.kv_head_begin} * hd;
  const int64_t kv_end = kv_begin + int64_t{l.kv_heads} * hd;
  const int64_t i_begin = l.inter_begin, i_end = i_begin + l.inter;
  const int64_t v_begin = l.vocab_begin, v_end = v_begin + l.vocab;

  LlamaWeights w;
  // The embedding is read a few rows per step; on a device it is also the tied lm_head.
  ASSIGN_OR_RETURN(w.embed_tokens, place_rows("model.embed_tokens.weight", v, v_begin, v_end, false));
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    // Copying placements read every byte: ask the kernel for the next layer's pages while this
    // one is copied, so the disk stays busy. (Mapped mode reads pages when the kernels touch them.)
    if (placement.mode() != WeightPlacement::Mode::kMapped && i + 1 < c.num_layers) {
      const std::string next = absl::StrCat("model.layers.", i + 1, ".");
      for (auto group : {std::span<const char* const>(kQkv), std::span<const char* const>(kO),
                         std::span<const char* const>(kGateUp), std::span<const char* const>(kDown)}) {
        for (const char* t : group) store.Prefetch(next + t);
      }
    }
    LayerWeights& lw = w.layers[i];
    ASSIGN_OR_RETURN(lw.input_norm, vec(p + "input_layernorm.weight"));
    ASSIGN_OR_RETURN(lw.qkv_proj, projections.Load({{p + kQkv[0], q_out, h, true, q_begin, q_end},
                                                     {p + kQkv[1], kv_out, h, true, kv_begin, kv_end},
                                                     {p + kQkv[2], kv_out, h, true, kv_begin, kv_end}}));
    ASSIGN_OR_RETURN(lw.o_proj, projections.Load({{p + kO[0], h, q_out, false, q_begin, q_end}}));
    ASSIGN_OR_RETURN(lw.post_norm, vec(p + "post_attention_layernorm.weight"));
    ASSIGN_OR_RETURN(lw.gate_up_proj,
                     projections.Load({{p + kGateUp[0], inter, h, true, i_begin, i_end},
                                       {p + kGateUp[1], inter, h, true, i_begin, i_end}}));
    ASSIGN_OR_RETURN(lw.down_proj, projections.Load({{p + kDown[0], h, inter, false, i_begin, i_end}}));
  }
  w.quantization = projections.quantization();
  ASSIGN_OR_RETURN(w.final_norm, vec("model.norm.weight"));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;  // the same vocab rows as the embedding slice, placed once
  } else {
    ASSIGN_OR_RETURN(w.lm_head, place_rows("lm_head.weight", v, v_begin, v_end, true));
  }
  return w;
}

}  // namespace caduceus::model
