#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/rope.h"

namespace caduceus::model {
namespace {

// y [m, out] = x [m, in] times a projection, bf16 or FP8 (llama_weights.h).
void Project(const backend::KernelTable& k, const float* x, int32_t m, int32_t in,
             const LinearWeight& w, int32_t out, float* y, kernels::Stream st) {
  if (w.fp8 != nullptr) {
    k.linear_fp8(x, m, in, w.fp8, w.scale, out, y, st);
  } else {
    k.linear(x, m, in, w.values, out, y, st);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             const LoadOptions& options,
                                                             parallel::Communicator* comm) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::LoadFromDir(model_dir));
  if (config.head_dim % 2 != 0 || config.head_dim > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, "/config.json: head_dim ", config.head_dim, " is not supported (even, <= 1024)"));
  }
  ShardLayout layout = ShardLayout::Full(config);
  if (options.shard.size != 1 || options.shard.rank != 0) {
    absl::StatusOr<ShardLayout> made = ShardLayout::Make(config, options.shard);
    if (!made.ok()) {
      return absl::Status(made.status().code(),
                          absl::StrCat(model_dir, "/config.json: ", made.status().message()));
    }
    layout = *made;
    if (comm == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor-parallel size ", options.shard.size,
                                                     " needs a communicator"));
    }
  }
  if (comm != nullptr && (comm->size() != options.shard.size || comm->rank() != options.shard.rank)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "communicator is rank ", comm->rank(), " of ", comm->size(), " but the shard is rank ",
        options.shard.rank, " of ", options.shard.size));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::Open(model_dir));
  ASSIGN_OR_RETURN(backend::KernelTable kernels, backend::MakeKernelTable(options.device));
  ASSIGN_OR_RETURN(std::unique_ptr<WeightPlacement> placement,
                   WeightPlacement::Create(kernels.memory, options.resident_weights,
                                           LlamaWeights::ArenaBytes(config, layout, *store,
                                                                    options.quantize_fp8)));
  ASSIGN_OR_RETURN(LlamaWeights weights, LlamaWeights::Load(config, layout, *store, *placement,
                                                            options.quantize_fp8));
  // A group of one runs exactly the unsharded code path: no collectives at all.
  parallel::Communicator* group = layout.spec.size > 1 ? comm : nullptr;
  std::unique_ptr<LlamaModel> model(new LlamaModel(std::move(config), layout, group,
                                                   std::move(store), std::move(placement),
                                                   std::move(weights), std::move(kernels)));
  model->kv_dtype_ = options.kv_dtype;
  model->graphs_ = std::make_unique<StepGraphs>(&model->kernels_, options.graphs);
  if (!model->kernels_.memory.host) RETURN_IF_ERROR(model->UploadRopeFrequencies());
  return model;
}

absl::Status LlamaModel::UploadRopeFrequencies() {
  const backend::MemoryOps* m = &kernels_.memory;
  d_inv_freq_ = backend::DeviceArray<float>(m);
  if (!d_inv_freq_.Reserve(inv_freq_.size())) {
    return absl::ResourceExhaustedError("out of device memory for the RoPE frequencies");
  }
  m->to_device(d_inv_freq_.data(), inv_freq_.data(), inv_freq_.size() * sizeof(float), m->device);
  return absl::OkStatus();
}

LlamaModel::StepMetadata LlamaModel::UploadMetadata(int32_t* device) {
  Scratch& sc = scratch_;
  const std::vector<int32_t>* parts[] = {&sc.tokens, &sc.positions, &sc.slots, &sc.query_start,
                                         &sc.block_tables};
  if (kernels_.memory.host) {
    return {sc.tokens.data(), sc.positions.data(), sc.slots.data(), sc.query_start.data(),
            sc.block_tables.data()};
  }
  // One host buffer, one copy: each synchronous copy costs a host round trip on a GPU.
  sc.meta.clear();
  size_t offsets[5];
  for (int i = 0; i < 5; ++i) {
    offsets[i] = sc.meta.size();
    sc.meta.insert(sc.meta.end(), parts[i]->begin(), parts[i]->end());
  }
  // Reserve was checked in PrepareScratch (or by the caller, for a graph step's buffer).
  int32_t* d = device != nullptr ? device : sc.d_meta.data();
  kernels_.memory.to_device(d, sc.meta.data(), sc.meta.size() * sizeof(int32_t),
                            kernels_.memory.device);
  return {d + offsets[0], d + offsets[1], d + offsets[2], d + offsets[3], d + offsets[4]};
}

LlamaModel::LlamaModel(ModelConfig config, ShardLayout layout, parallel::Communicator* comm,
                       std::unique_ptr<WeightStore> store,
                       std::unique_ptr<WeightPlacement> placement, LlamaWeights weights,
                       backend::KernelTable kernels)
    : config_(std::move(config)), layout_(layout), comm_(comm), store_(std::move(store)),
      placement_(std::move(placement)), weights_(std::move(weights)),
      kernels_(std::move(kernels)),
      inv_freq_(RopeInverseFrequencies(config_)), scratch_(&kernels_.memory) {}

absl::Status LlamaModel::AllReduce(float* data, size_t count) {
  if (comm_ == nullptr) return absl::OkStatus();
  return comm_->AllReduceSum(data, count);
}

int64_t LlamaModel::WeightBytesPerToken() const {
  const int64_t h = config_.hidden_size, inter = layout_.inter;
  const int64_t q = int64_t{layout_.q_heads} * config_.head_dim;
  const int64_t kv = int64_t{layout_.kv_heads} * config_.head_dim;
  // Projections at their stored width (1 byte per FP8 weight plus a 4-byte scale per row).
  auto bytes = [](const LinearWeight& w, int64_t rows, int64_t cols) {
    return w.fp8 != nullptr ? rows * cols + 4 * rows : 2 * rows * cols;
  };
  int64_t layers = 0;
  for (const LayerWeights& w : weights_.layers) {
    layers += 2 * (2 * h) + bytes(w.qkv_proj, q + 2 * kv, h) + bytes(w.o_proj, h, q) +
              bytes(w.gate_up_proj, 2 * inter, h) + bytes(w.down_proj, h, inter);
  }
  // One embedding row, all layers, the final norm and the rank's whole lm_head slice.
  return 2 * h + layers + 2 * h + 2 * int64_t{layout_.vocab} * h;
}

absl::StatusOr<std::unique_ptr<KvCache>> LlamaModel::CreateKvCache(int32_t num_blocks) const {
  return KvCache::Create(config_.num_layers, layout_.kv_heads, config_.head_dim, num_blocks,
                         KvCache::kDefaultBlockSize, &kernels_.memory, kv_dtype_);
}

int64_t LlamaModel::KvCacheBytesPerBlock() const {
  return KvCache::BytesPerBlock(config_.num_layers, layout_.kv_heads, config_.head_dim,
                                KvCache::kDefaultBlockSize, kv_dtype_);
}

absl::Status LlamaModel::ValidateBatch(const StepBatch& batch, const KvCache& cache) const {
  if (batch.sequences.empty()) return absl::InvalidArgumentError("step has no sequences");
  if (cache.num_layers() != config_.num_layers) {
    return absl::InvalidArgumentError("KV cache was made for another model");
  }
  if (cache.num_layers() > 0 && cache.Layer(0).kv_heads != layout_.kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache holds ", cache.Layer(0).kv_heads,
                                                   " KV heads, this rank has ", layout_.kv_heads));
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

absl::Status LlamaModel::WarmUp(int32_t max_step_tokens, int32_t max_step_sequences) {
  if (max_step_tokens <= 0 || max_step_sequences <= 0) {
    return absl::InvalidArgumentError("warm-up needs a positive step size");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> scratch_cache, CreateKvCache(1));
  const int32_t block = scratch_cache->block_size();
  // Sequences start at position 0 and none may pass the model's context.
  const int32_t longest = config_.max_position_embeddings;
  int32_t seqs = std::min(max_step_sequences, max_step_tokens);
  head_row_group_ = seqs;
  seqs = std::max<int32_t>(seqs, (max_step_tokens + longest - 1) / longest);
  const int32_t base = max_step_tokens / seqs, extra = max_step_tokens % seqs;
  const std::vector<int32_t> tokens(base + 1, 0);
  // Every block-table entry is the one scratch block: tokens overwrite each other's slots, which
  // is harmless for a step whose results nobody reads, and every slot a sequence reads was
  // written by the step itself.
  const std::vector<int32_t> table((base + 1 + block - 1) / block, 0);
  StepBatch batch;
  for (int32_t s = 0; s < seqs; ++s) {
    const size_t len = static_cast<size_t>(base + (s < extra ? 1 : 0));
    batch.sequences.push_back({std::span<const int32_t>(tokens.data(), len), 0, table});
  }
  StepLogits logits;
  RETURN_IF_ERROR(Forward(batch, *scratch_cache, &logits));
  // The greedy path's buffers: as many argmax_only rows, one token each.
  batch.sequences.clear();
  for (int32_t s = 0; s < std::min(max_step_sequences, max_step_tokens); ++s) {
    batch.sequences.push_back({std::span<const int32_t>(tokens.data(), 1), 0, table});
    batch.sequences.back().argmax_only = true;
  }
  RETURN_IF_ERROR(Forward(batch, *scratch_cache, &logits));
  // Speculative decoding asks a greedy sequence for the argmax of every guessed row: up to a
  // whole step's tokens. Reserved here so that no later step allocates device memory (the KV
  // cache takes what is left after the warm-up).
  Scratch& sc = scratch_;
  const size_t rows = static_cast<size_t>(max_step_tokens);
  const size_t ranks = comm_ != nullptr ? static_cast<size_t>(comm_->size()) : 1;
  // Likewise the lm_head's gathered input rows: a step whose logits or argmax rows are not its
  // first rows in order (guessed or scored sequences next to a prefill chunk) copies up to one
  // hidden row per token there. Host memory grows on demand; device memory must not.
  const bool gather_rows_ok =
      kernels_.memory.host || sc.last_hidden.Reserve(rows * static_cast<size_t>(config_.hidden_size));
  if (!(gather_rows_ok && sc.argmax_index.Reserve(rows) && sc.argmax_value.Reserve(rows) &&
        sc.gathered_index.Reserve(ranks * rows) && sc.gathered_value.Reserve(ranks * rows))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of ", kernels_.name, " memory for the greedy tokens of a ", rows, "-token step"));
  }
  return absl::OkStatus();
}

std::optional<GraphShape> LlamaModel::GraphShapeFor(const StepBatch& batch,
                                                     const KvCache& cache) const {
  if (kernels_.memory.host) return std::nullopt;
  size_t width = 0;
  for (const SequenceStep& seq : batch.sequences) {
    if (seq.tokens.size() != 1 || seq.all_logits) return std::nullopt;  // not a decode step
    width = std::max(width, seq.block_table.size());
  }
  const int32_t max_width =
      (config_.max_position_embeddings + cache.block_size() - 1) / cache.block_size();
  return graphs_->ShapeFor(static_cast<int32_t>(batch.sequences.size()),
                           static_cast<int32_t>(width), max_width);
}

StepGraphs::Stamp LlamaModel::GraphStamp(const KvCache& cache, const int32_t* metadata) const {
  const Scratch& sc = scratch_;
  StepGraphs::Stamp stamp = {sc.residual.data(), sc.normed.data(), sc.qkv.data(),
                             sc.attn.data(),     sc.proj.data(),   sc.gate_up.data(),
                             sc.act.data(),      d_inv_freq_.data(), metadata};
  for (int32_t layer = 0; layer < cache.num_layers(); ++layer) {
    stamp.push_back(cache.Layer(layer).k);
    stamp.push_back(cache.Layer(layer).v);
  }
  return stamp;
}

absl::Status LlamaModel::PrepareScratch(const StepBatch& batch, const KvCache& cache,
                                        const GraphShape* shape) {
  Scratch& sc = scratch_;
  sc.tokens.clear();
  sc.positions.clear();
  sc.slots.clear();
  sc.logit_rows.clear();
  sc.argmax_rows.clear();
  sc.query_start.assign(1, 0);
  size_t max_blocks = 0;
  for (const SequenceStep& seq : batch.sequences) {
    max_blocks = std::max(max_blocks, seq.block_table.size());
  }
  if (shape != nullptr) max_blocks = static_cast<size_t>(shape->width);
  sc.num_seqs = shape != nullptr ? shape->batch : static_cast<int32_t>(batch.sequences.size());
  // Padding sequences' rows are all block 0: valid, and only position 0 of it is read.
  sc.block_tables.assign(static_cast<size_t>(sc.num_seqs) * max_blocks, 0);
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
      if (seq.all_logits) {
        if (static_cast<int32_t>(i) >= seq.logits_from) {
          (seq.argmax_only ? sc.argmax_rows : sc.logit_rows).push_back(row);
        }
      } else if (i + 1 == seq.tokens.size()) {
        (seq.argmax_only ? sc.argmax_rows : sc.logit_rows).push_back(row);
      }
    }
    sc.query_start.push_back(static_cast<int32_t>(sc.tokens.size()));
  }
  // Padding rows up to the graph's batch: token 0 at position 0, stored nowhere (slot -1).
  for (int32_t s = static_cast<int32_t>(batch.sequences.size()); s < sc.num_seqs; ++s) {
    sc.tokens.push_back(0);
    sc.positions.push_back(0);
    sc.slots.push_back(-1);
    sc.query_start.push_back(static_cast<int32_t>(sc.tokens.size()));
  }
  // The lm_head's input rows: those that need logits, then the argmax_only ones.
  sc.argmax_count = static_cast<int32_t>(sc.argmax_rows.size());
  sc.logit_rows.insert(sc.logit_rows.end(), sc.argmax_rows.begin(), sc.argmax_rows.end());
  sc.rows_in_place = true;
  for (size_t r = 0; r < sc.logit_rows.size(); ++r) {
    sc.rows_in_place = sc.rows_in_place && sc.logit_rows[r] == static_cast<int32_t>(r);
  }
  const size_t n = sc.tokens.size();
  const size_t h = config_.hidden_size;
  const size_t q = size_t(layout_.q_heads) * config_.head_dim;
  const size_t kv = size_t(layout_.kv_heads) * config_.head_dim;
  const size_t inter = layout_.inter;
  // Reserve() only reallocates when a step is larger than every step before it.
  const size_t rows = sc.logit_rows.size();
  const size_t am = static_cast<size_t>(sc.argmax_count), full = rows - am;
  const size_t ranks = comm_ != nullptr ? static_cast<size_t>(comm_->size()) : 1;
  bool ok = sc.residual.Reserve(n * h) && sc.normed.Reserve(n * h) &&
            sc.qkv.Reserve(n * (q + 2 * kv)) && sc.attn.Reserve(n * q) && sc.proj.Reserve(n * h) &&
            sc.gate_up.Reserve(n * 2 * inter) && sc.act.Reserve(n * inter) &&
            (sc.rows_in_place || sc.last_hidden.Reserve(rows * h));
  const size_t head_rows = std::min(full, static_cast<size_t>(std::max(1, head_row_group_)));
  if (!kernels_.memory.host || comm_ != nullptr) {
    ok = ok && sc.logits.Reserve(head_rows * layout_.vocab);
  }
  if (comm_ != nullptr) {
    ok = ok && sc.gathered_logits.Reserve(head_rows * config_.vocab_size);
  }
  ok = ok && sc.argmax_index.Reserve(am) && sc.argmax_value.Reserve(am) &&
       sc.gathered_index.Reserve(ranks * am) && sc.gathered_value.Reserve(ranks * am);
  sc.host_index.resize(ranks * am);
  sc.host_value.resize(ranks * am);
  if (!kernels_.memory.host && shape == nullptr) {
    ok = ok && sc.d_meta.Reserve(3 * n + sc.query_start.size() + sc.block_tables.size());
  }
  if (!ok) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of ", kernels_.name, " memory for the activations of a ", n, "-token step"));
  }
  block_table_width_ = static_cast<int32_t>(max_blocks);
  return absl::OkStatus();
}

absl::Status LlamaModel::Forward(const StepBatch& batch, KvCache& cache, StepLogits* logits) {
  RETURN_IF_ERROR(ValidateBatch(batch, cache));
  // A decode step that may run from graphs: padded to its shape, its metadata in the shape's own
  // device buffer (the address its graphs read). Without room for that buffer it runs eagerly.
  const std::optional<GraphShape> shape = GraphShapeFor(batch, cache);
  const GraphShape* graph_shape = shape.has_value() ? &*shape : nullptr;
  int32_t* graph_meta = nullptr;
  if (graph_shape != nullptr) {
    const size_t b = static_cast<size_t>(graph_shape->batch);
    // tokens, positions, slots, query_start, block tables (UploadMetadata's layout).
    graph_meta = graphs_->Metadata(*graph_shape, 3 * b + (b + 1) +
                                                     b * static_cast<size_t>(graph_shape->width));
    if (graph_meta == nullptr) graph_shape = nullptr;
  }
  RETURN_IF_ERROR(PrepareScratch(batch, cache, graph_shape));
  Scratch& sc = scratch_;
  const backend::KernelTable& k = kernels_;
  const backend::MemoryOps& mem = kernels_.memory;
  const ModelConfig& c = config_;
  const ShardLayout& l = layout_;
  const int32_t n = static_cast<int32_t>(sc.tokens.size());
  const int32_t h = c.hidden_size;
  // Local sizes: the whole model when unsharded.
  const int32_t q_dim = l.q_heads * c.head_dim;
  const int32_t kv_dim = l.kv_heads * c.head_dim;
  const int32_t qkv_dim = q_dim + 2 * kv_dim;  // the fused projection's width
  const size_t acts = static_cast<size_t>(n) * h;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  // Metadata where the kernels read it (host vectors themselves on the CPU).
  const StepMetadata meta = UploadMetadata(graph_meta);
  const int32_t* tokens = meta.tokens;
  const int32_t* positions = meta.positions;
  const int32_t* slots = meta.slots;
  const int32_t* query_start = meta.query_start;
  const int32_t* block_tables = meta.block_tables;
  const float* inv_freq = mem.host ? inv_freq_.data() : d_inv_freq_.data();
  kernels::AttentionBatch attention{sc.num_seqs, query_start, positions, block_tables,
                                    block_table_width_};
  attention.num_tokens = n;  // lets a device kernel size its grid (split long decodes)
  float* residual = sc.residual.data();
  float* normed = sc.normed.data();
  float* proj = sc.proj.data();

  // The device work of the step, between the collectives: run now, or captured into and replayed
  // from CUDA graphs (step_graphs.h). Kernels go to the model's compute stream.
  const kernels::Stream st = graphs_->stream();
  StepGraphs::Step step =
      graphs_->Begin(graph_shape, graph_shape != nullptr ? GraphStamp(cache, graph_meta)
                                                         : StepGraphs::Stamp{});
  auto all_reduce = [&](float* data) -> absl::Status {
    if (comm_ == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(step.Cut());  // a collective ends a graph piece
    return comm_->AllReduceSum(data, acts);
  };

  // Each rank gathers the tokens in its vocabulary rows (zeros elsewhere); the sum completes them.
  step.Run([&] {
    k.embedding_gather(weights_.embed_tokens, l.vocab_begin, l.vocab, h, tokens, n, residual, st);
  });
  RETURN_IF_ERROR(all_reduce(residual));
  step.Run([&] { k.rms_norm(residual, weights_.layers[0].input_norm, n, h, eps, normed, st); });
  // The pieces may run after this loop (kept for the eager fallback until the step's end): loop
  // locals are captured by value, the weights by reference to their (stable) storage.
  for (int32_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& layer_weights = weights_.layers[layer];
    const kernels::PagedKvLayer kv = cache.Layer(layer);
    step.Run([&, kv, &w = layer_weights] {
      // One Linear for q|k|v; each token's row holds its q, k and v heads in that order.
      float* qkv = sc.qkv.data();
      Project(k, normed, n, h, w.qkv_proj, qkv_dim, qkv, st);
      k.rope(qkv, qkv_dim, positions, n, l.q_heads + l.kv_heads, c.head_dim, inv_freq, st);
      k.kv_cache_write(qkv + q_dim, qkv + q_dim + kv_dim, qkv_dim, slots, n, kv, st);
      k.paged_attention(qkv, qkv_dim, l.q_heads, kv, attention, scale, sc.attn.data(), st);
      // Row-parallel o_proj: each rank's heads give a partial sum of the output.
      Project(k, sc.attn.data(), n, q_dim, w.o_proj, h, proj, st);
    });
    RETURN_IF_ERROR(all_reduce(proj));
    step.Run([&, &w = layer_weights] {
      k.add_rms_norm(residual, proj, w.post_norm, n, h, eps, normed, st);
      Project(k, normed, n, h, w.gate_up_proj, 2 * l.inter, sc.gate_up.data(), st);
      k.silu_mul(sc.gate_up.data(), n, l.inter, sc.act.data(), st);
      Project(k, sc.act.data(), n, l.inter, w.down_proj, h, proj, st);
    });
    RETURN_IF_ERROR(all_reduce(proj));
    const bf16* next_norm =
        layer + 1 < c.num_layers ? weights_.layers[layer + 1].input_norm : weights_.final_norm;
    step.Run([&, next_norm] { k.add_rms_norm(residual, proj, next_norm, n, h, eps, normed, st); });
  }
  RETURN_IF_ERROR(step.Finish());

  // lm_head only for the rows whose logits or greedy token were asked for (the last token of each
  // sequence, or every token with all_logits): first the rows that need logits, then the
  // argmax_only rows.
  const int32_t rows = static_cast<int32_t>(sc.logit_rows.size());
  const int32_t full = rows - sc.argmax_count;
  // The lm_head's input rows, contiguous: `normed` itself when they are its first rows in order
  // (decode steps whose sequences all want logits, or all greedy tokens), else copies.
  const float* head_in = normed;
  if (!sc.rows_in_place) {
    for (int32_t r = 0; r < rows; ++r) {
      mem.device_copy(sc.last_hidden.data() + static_cast<size_t>(r) * h,
                      normed + static_cast<size_t>(sc.logit_rows[r]) * h, sizeof(float) * h,
                      mem.device);
    }
    head_in = sc.last_hidden.data();
  }
  if (logits == nullptr && comm_ == nullptr) return absl::OkStatus();  // nobody reads the head
  if (logits != nullptr) {
    logits->vocab_size = c.vocab_size;
    logits->values.resize(static_cast<size_t>(full) * c.vocab_size);
  }
  // In groups of head_row_group_ rows (one group unless a scored request asks for more rows
  // than the warm-up's step had); each group's logits reach the host before the next one
  // reuses the device buffers (same stream).
  const int32_t group = std::max(1, head_row_group_);
  for (int32_t r0 = 0; r0 < full; r0 += group) {
    const int32_t g = std::min(group, full - r0);
    const float* in = head_in + static_cast<size_t>(r0) * h;
    float* host_rows =
        logits != nullptr ? logits->values.data() + static_cast<size_t>(r0) * c.vocab_size : nullptr;
    if (comm_ == nullptr) {
      // Host backends write the logits in place; device backends copy them back.
      float* out = mem.host ? host_rows : sc.logits.data();
      k.linear(in, g, h, weights_.lm_head, c.vocab_size, out, st);
      if (!mem.host) {
        mem.to_host(host_rows, out, static_cast<size_t>(g) * c.vocab_size * sizeof(float), mem.device);
      }
      continue;
    }
    // Vocab-parallel lm_head: rank r computes columns [r * V/size, (r+1) * V/size) of every row.
    // The gather lands [rank][row][local column]; logits rows want [row][rank][local column]: one
    // strided copy per rank puts each rank's block in its columns on the way to the host (at batch
    // 256 with a 128k vocabulary that is 131 MB not copied a second time by one host thread).
    const size_t lv = static_cast<size_t>(l.vocab), per_rank = static_cast<size_t>(g) * lv;
    k.linear(in, g, h, weights_.lm_head, l.vocab, sc.logits.data(), st);
    RETURN_IF_ERROR(comm_->AllGather(sc.logits.data(), per_rank, sc.gathered_logits.data()));
    // Every collective of the step (a device communicator may defer them) before the host reads.
    RETURN_IF_ERROR(comm_->Flush());
    for (int32_t rank = 0; host_rows != nullptr && rank < l.spec.size; ++rank) {
      mem.to_host_2d(host_rows + rank * lv, sizeof(float) * c.vocab_size,
                     sc.gathered_logits.data() + rank * per_rank, sizeof(float) * lv,
                     sizeof(float) * lv, static_cast<size_t>(g), mem.device);
    }
  }
  std::vector<int32_t>& greedy = sc.greedy;
  greedy.clear();
  if (sc.argmax_count > 0) {
    RETURN_IF_ERROR(GreedyTokens(head_in + static_cast<size_t>(full) * h, sc.argmax_count,
                                 logits != nullptr ? &greedy : nullptr));
  }
  if (logits == nullptr) return absl::OkStatus();

  // Number the rows in sequence order and say where each one's logits or greedy token is.
  logits->row_begin.clear();
  logits->value_row.clear();
  logits->greedy_token.clear();
  int32_t next_full = 0, next_greedy = 0;
  for (const SequenceStep& seq : batch.sequences) {
    logits->row_begin.push_back(static_cast<int32_t>(logits->value_row.size()));
    const size_t seq_rows =
        seq.all_logits ? seq.tokens.size() - static_cast<size_t>(std::max(0, seq.logits_from)) : 1;
    for (size_t i = 0; i < seq_rows; ++i) {
      logits->value_row.push_back(seq.argmax_only ? -1 : next_full++);
      logits->greedy_token.push_back(seq.argmax_only ? greedy[next_greedy++] : -1);
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::GreedyTokens(const float* hidden, int32_t m, std::vector<int32_t>* tokens) {
  Scratch& sc = scratch_;
  const backend::MemoryOps& mem = kernels_.memory;
  const int32_t h = config_.hidden_size;
  kernels_.linear_argmax(hidden, m, h, weights_.lm_head, layout_.vocab, sc.argmax_index.data(),
                         sc.argmax_value.data(), graphs_->stream());
  if (tokens == nullptr && comm_ == nullptr) return absl::OkStatus();
  if (tokens != nullptr) tokens->resize(m);
  if (comm_ == nullptr) {
    mem.to_host(tokens->data(), sc.argmax_index.data(), sizeof(int32_t) * m, mem.device);
    return absl::OkStatus();
  }
  // Vocab-parallel: each rank has the best of its own columns. Gather every rank's (value, local
  // index) and keep the largest value; scanning ranks in order with a strict comparison resolves
  // ties to the lowest global id, as a single process would. The collective moves bytes only, so
  // the int32 indices travel bit-cast in a float buffer.
  const size_t n = static_cast<size_t>(m), ranks = static_cast<size_t>(comm_->size());
  RETURN_IF_ERROR(comm_->AllGather(sc.argmax_value.data(), n, sc.gathered_value.data()));
  RETURN_IF_ERROR(comm_->AllGather(reinterpret_cast<const float*>(sc.argmax_index.data()), n,
                                   reinterpret_cast<float*>(sc.gathered_index.data())));
  RETURN_IF_ERROR(comm_->Flush());
  if (tokens == nullptr) return absl::OkStatus();  // a follower: the gathers were its part
  mem.to_host(sc.host_value.data(), sc.gathered_value.data(), sizeof(float) * ranks * n,
              mem.device);
  mem.to_host(sc.host_index.data(), sc.gathered_index.data(), sizeof(int32_t) * ranks * n,
              mem.device);
  for (size_t i = 0; i < n; ++i) {
    int32_t best = -1;
    float best_value = -std::numeric_limits<float>::infinity();
    for (size_t r = 0; r < ranks; ++r) {
      const int32_t local = sc.host_index[r * n + i];
      if (local >= 0 && sc.host_value[r * n + i] > best_value) {
        best_value = sc.host_value[r * n + i];
        best = static_cast<int32_t>(r) * layout_.vocab + local;
      }
    }
    (*tokens)[i] = best;
  }
  return absl::OkStatus();
}

}  // namespace caduceus::model
