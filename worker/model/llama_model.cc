#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/rope.h"

namespace caduceus::model {

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             const LoadOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::LoadFromDir(model_dir));
  if (config.head_dim % 2 != 0 || config.head_dim > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, "/config.json: head_dim ", config.head_dim, " is not supported (even, <= 1024)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::Open(model_dir));
  ASSIGN_OR_RETURN(backend::KernelTable kernels, backend::MakeKernelTable(options.device));
  std::unique_ptr<WeightArena> arena;
  if (options.resident_weights) {
    ASSIGN_OR_RETURN(arena, WeightArena::Create(LlamaWeights::ArenaBytes(config)));
  }
  ASSIGN_OR_RETURN(LlamaWeights weights, LlamaWeights::Load(config, *store, arena.get()));
  return std::unique_ptr<LlamaModel>(new LlamaModel(std::move(config), std::move(store),
                                                    std::move(arena), std::move(weights),
                                                    std::move(kernels)));
}

LlamaModel::LlamaModel(ModelConfig config, std::unique_ptr<WeightStore> store,
                       std::unique_ptr<WeightArena> arena, LlamaWeights weights,
                       backend::KernelTable kernels)
    : config_(std::move(config)), store_(std::move(store)), arena_(std::move(arena)),
      weights_(std::move(weights)),
      kernels_(std::move(kernels)), inv_freq_(RopeInverseFrequencies(config_)) {}

int64_t LlamaModel::WeightBytesPerToken() const {
  const int64_t h = config_.hidden_size, inter = config_.intermediate_size;
  const int64_t q = int64_t{config_.num_heads} * config_.head_dim;
  const int64_t kv = int64_t{config_.num_kv_heads} * config_.head_dim;
  const int64_t per_layer = 2 * h + q * h + 2 * kv * h + h * q + 3 * inter * h;
  // One embedding row, all layers, the final norm and the whole lm_head.
  return 2 * (h + config_.num_layers * per_layer + h + int64_t{config_.vocab_size} * h);
}

absl::StatusOr<std::unique_ptr<KvCache>> LlamaModel::CreateKvCache(int32_t num_blocks) const {
  return KvCache::Create(config_.num_layers, config_.num_kv_heads, config_.head_dim, num_blocks);
}

absl::Status LlamaModel::ValidateBatch(const StepBatch& batch, const KvCache& cache) const {
  if (batch.sequences.empty()) return absl::InvalidArgumentError("step has no sequences");
  if (cache.num_layers() != config_.num_layers) {
    return absl::InvalidArgumentError("KV cache was made for another model");
  }
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceStep& seq = batch.sequences[s];
    if (seq.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has no new tokens"));
    }
    if (seq.start_pos < 0) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": negative start position"));
    }
    const int64_t end = int64_t{seq.start_pos} + static_cast<int64_t>(seq.tokens.size());
    if (end > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", s, ": positions up to ", end, " exceed the model's max context of ",
          config_.max_position_embeddings));
    }
    for (int32_t t : seq.tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": token id ", t,
                                                       " is outside the vocabulary [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
    const int64_t needed = (end + cache.block_size() - 1) / cache.block_size();
    if (static_cast<int64_t>(seq.block_table.size()) < needed) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": block table has ",
                                                     seq.block_table.size(), " blocks, ", needed,
                                                     " are needed for ", end, " positions"));
    }
    for (int64_t b = 0; b < needed; ++b) {
      const int32_t id = seq.block_table[b];
      if (id < 0 || id >= cache.num_blocks()) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": block id ", id,
                                                       " is outside the cache [0, ",
                                                       cache.num_blocks(), ")"));
      }
    }
  }
  return absl::OkStatus();
}

void LlamaModel::PrepareScratch(const StepBatch& batch, const KvCache& cache) {
  Scratch& sc = scratch_;
  sc.tokens.clear();
  sc.positions.clear();
  sc.slots.clear();
  sc.logit_rows.clear();
  sc.query_start.assign(1, 0);
  size_t max_blocks = 0;
  for (const SequenceStep& seq : batch.sequences) {
    max_blocks = std::max(max_blocks, seq.block_table.size());
  }
  sc.block_tables.assign(batch.sequences.size() * max_blocks, 0);
  const int32_t bs = cache.block_size();
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceStep& seq = batch.sequences[s];
    std::copy(seq.block_table.begin(), seq.block_table.end(),
              sc.block_tables.begin() + s * max_blocks);
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      const int32_t pos = seq.start_pos + static_cast<int32_t>(i);
      const int32_t row = static_cast<int32_t>(sc.tokens.size());
      sc.tokens.push_back(seq.tokens[i]);
      sc.positions.push_back(pos);
      sc.slots.push_back(seq.block_table[pos / bs] * bs + pos % bs);
      if (seq.all_logits || i + 1 == seq.tokens.size()) sc.logit_rows.push_back(row);
    }
    sc.query_start.push_back(static_cast<int32_t>(sc.tokens.size()));
  }
  const size_t n = sc.tokens.size();
  const size_t h = config_.hidden_size;
  const size_t q = size_t(config_.num_heads) * config_.head_dim;
  const size_t kv = size_t(config_.num_kv_heads) * config_.head_dim;
  const size_t inter = config_.intermediate_size;
  // resize() only reallocates when a step is larger than every step before it.
  sc.residual.resize(n * h);
  sc.normed.resize(n * h);
  sc.q.resize(n * q);
  sc.k.resize(n * kv);
  sc.v.resize(n * kv);
  sc.attn.resize(n * q);
  sc.proj.resize(n * h);
  sc.gate.resize(n * inter);
  sc.up.resize(n * inter);
  sc.act.resize(n * inter);
  sc.last_hidden.resize(sc.logit_rows.size() * h);
  block_table_width_ = static_cast<int32_t>(max_blocks);
}

absl::Status LlamaModel::Forward(const StepBatch& batch, KvCache& cache, StepLogits* logits) {
  RETURN_IF_ERROR(ValidateBatch(batch, cache));
  PrepareScratch(batch, cache);
  Scratch& sc = scratch_;
  const backend::KernelTable& k = kernels_;
  const ModelConfig& c = config_;
  const int32_t n = static_cast<int32_t>(sc.tokens.size());
  const int32_t h = c.hidden_size;
  const int32_t q_dim = c.num_heads * c.head_dim;
  const int32_t kv_dim = c.num_kv_heads * c.head_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const kernels::AttentionBatch attention{static_cast<int32_t>(batch.sequences.size()),
                                          sc.query_start.data(), sc.positions.data(),
                                          sc.block_tables.data(), block_table_width_};

  k.embedding_gather(weights_.embed_tokens, 0, c.vocab_size, h, sc.tokens.data(), n,
                     sc.residual.data(), {});
  k.rms_norm(sc.residual.data(), weights_.layers[0].input_norm, n, h, eps, sc.normed.data(), {});
  for (int32_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    const kernels::PagedKvLayer kv = cache.Layer(layer);
    k.linear(sc.normed.data(), n, h, w.q_proj, q_dim, sc.q.data(), {});
    k.linear(sc.normed.data(), n, h, w.k_proj, kv_dim, sc.k.data(), {});
    k.linear(sc.normed.data(), n, h, w.v_proj, kv_dim, sc.v.data(), {});
    k.rope(sc.q.data(), sc.k.data(), sc.positions.data(), n, c.num_heads, c.num_kv_heads,
           c.head_dim, inv_freq_.data(), {});
    k.kv_cache_write(sc.k.data(), sc.v.data(), sc.slots.data(), n, kv, {});
    k.paged_attention(sc.q.data(), c.num_heads, kv, attention, scale, sc.attn.data(), {});
    k.linear(sc.attn.data(), n, q_dim, w.o_proj, h, sc.proj.data(), {});
    k.add_rms_norm(sc.residual.data(), sc.proj.data(), w.post_norm, n, h, eps, sc.normed.data(), {});
    k.linear(sc.normed.data(), n, h, w.gate_proj, c.intermediate_size, sc.gate.data(), {});
    k.linear(sc.normed.data(), n, h, w.up_proj, c.intermediate_size, sc.up.data(), {});
    k.silu_mul(sc.gate.data(), sc.up.data(), n, c.intermediate_size, sc.act.data(), {});
    k.linear(sc.act.data(), n, c.intermediate_size, w.down_proj, h, sc.proj.data(), {});
    const bf16* next_norm =
        layer + 1 < c.num_layers ? weights_.layers[layer + 1].input_norm : weights_.final_norm;
    k.add_rms_norm(sc.residual.data(), sc.proj.data(), next_norm, n, h, eps, sc.normed.data(), {});
  }

  // lm_head only for the rows whose logits were asked for (the last token of each sequence).
  const int32_t rows = static_cast<int32_t>(sc.logit_rows.size());
  for (int32_t r = 0; r < rows; ++r) {
    std::copy_n(sc.normed.data() + static_cast<size_t>(sc.logit_rows[r]) * h, h,
                sc.last_hidden.data() + static_cast<size_t>(r) * h);
  }
  logits->vocab_size = c.vocab_size;
  logits->values.resize(static_cast<size_t>(rows) * c.vocab_size);
  k.linear(sc.last_hidden.data(), rows, h, weights_.lm_head, c.vocab_size, logits->values.data(), {});
  logits->row_begin.clear();
  int32_t row = 0;
  for (const SequenceStep& seq : batch.sequences) {
    logits->row_begin.push_back(row);
    row += seq.all_logits ? static_cast<int32_t>(seq.tokens.size()) : 1;
  }
  return absl::OkStatus();
}

}  // namespace caduceus::model
