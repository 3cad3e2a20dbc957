// The Llama-3 forward pass over a flat continuous-batching step with a paged KV cache.
//
// Invariants (see docs/architecture.md): the caller owns block allocation; a step may only
// reference blocks it was given; tokens before a sequence's start_pos must already be in the
// cache (written by earlier steps through the same block table). Forward is not thread-safe:
// one step at a time per model (its scratch buffers are reused across steps).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/backend/kernel_table.h"
#include "worker/model/kv_cache.h"
#include "worker/model/llama_weights.h"
#include "worker/model/model_config.h"
#include "worker/model/shard_spec.h"
#include "worker/model/step_graphs.h"
#include "worker/model/step_batch.h"
#include "worker/model/weight_store.h"
#include "worker/parallel/communicator.h"

namespace caduceus::model {

struct LoadOptions {
  std::string device = "cpu";
  // Copy the matrices read on every step out of the mapped files into anonymous (huge-page)
  // memory; see weight_arena.h. Off: run straight from the mapping (slower decode, instant load).
  bool resident_weights = true;
  // This process's part of a tensor-parallel group (shard_spec.h). Size 1: the whole model.
  ShardSpec shard;
  // Element type of the caches CreateKvCache makes (kernels.h: bf16 halves them).
  kernels::KvDtype kv_dtype = kernels::KvDtype::kF32;
  // CUDA graphs for decode steps (step_graphs.h); ignored by backends without graphs.
  StepGraphOptions graphs;
  // Quantize bf16/f16/f32 projections to FP8 at load time (fp8_quantize.h): half the weight
  // memory and bytes per decode step. A checkpoint already in FP8 is served as it is.
  bool quantize_fp8 = false;
};

class LlamaModel {
 public:
  // Opens `model_dir` (config.json + safetensors), checks every tensor, binds the kernels.
  // With options.shard.size > 1 only this rank's slices are loaded and `comm` (same rank and
  // size, outliving the model) carries the collectives of every Forward; INVALID_ARGUMENT when
  // the model cannot be split that way or comm is missing/mismatched. Size 1 needs no comm.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          const LoadOptions& options,
                                                          parallel::Communicator* comm = nullptr);
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          const std::string& device = "cpu") {
    LoadOptions options;
    options.device = device;
    return Load(model_dir, options);
  }

  // Runs one step and returns the requested logits. INVALID_ARGUMENT for a malformed batch
  // (empty sequence, token id out of range, position beyond max context, block table too short
  // or with block ids outside the cache); the cache is not modified in that case.
  // Tensor-parallel: every rank calls Forward with the same batch (a collective) and every rank
  // gets the full logits, columns in vocabulary order. A failed collective returns its error;
  // the positions of that step are then undefined in the cache and must be recomputed.
  // `logits` null: the caller does not read this step's results (a follower rank; the leader
  // samples). Every collective still runs, but nothing comes back to the host: on a GPU at TP=8
  // that spares each follower a [rows, vocabulary] fp32 copy over PCIe per step (131 MB at
  // batch 256), all eight at once. Without a communicator the lm_head is skipped.
  absl::Status Forward(const StepBatch& batch, KvCache& cache, StepLogits* logits);

  absl::Status ValidateBatch(const StepBatch& batch, const KvCache& cache) const;

  // Runs the largest step the worker accepts (max_step_tokens new tokens over
  // min(max_step_sequences, max_step_tokens) prefilling sequences, every one with a logits row;
  // then as many argmax_only rows) on a one-block scratch cache, so that every scratch buffer
  // and kernel workspace reaches its final size before the KV cache takes the rest of a device's
  // memory: steps after it allocate nothing. Tensor-parallel: a collective, every rank calls it
  // with the same arguments. Errors: those of Forward (RESOURCE_EXHAUSTED when even the
  // activations do not fit).
  absl::Status WarmUp(int32_t max_step_tokens, int32_t max_step_sequences);

  const ModelConfig& config() const { return config_; }
  // How the projections are stored: "none", "fp8" (the checkpoint's), "fp8-online" (quantized
  // at load time).
  const char* quantization() const { return weights_.quantization; }
  const backend::KernelTable& kernels() const { return kernels_; }
  const ShardLayout& shard() const { return layout_; }
  // Bytes of weights this rank reads per decoded token (for bandwidth-bound estimates).
  int64_t WeightBytesPerToken() const;
  // Bytes of weight copies this rank holds (host arena or device; mapped pages not counted).
  int64_t PlacedWeightBytes() const { return static_cast<int64_t>(placement_->placed_bytes()); }
  // A cache for this rank's KV heads only, of LoadOptions::kv_dtype.
  absl::StatusOr<std::unique_ptr<KvCache>> CreateKvCache(int32_t num_blocks) const;
  // Bytes one block of such a cache takes (all layers, K and V).
  int64_t KvCacheBytesPerBlock() const;
  kernels::KvDtype kv_dtype() const { return kv_dtype_; }
  // CUDA graph counters (all zero on backends without graphs).
  StepGraphStats graph_stats() const { return graphs_->stats(); }

 private:
  LlamaModel(ModelConfig config, ShardLayout layout, parallel::Communicator* comm,
             std::unique_ptr<WeightStore> store, std::unique_ptr<WeightPlacement> placement,
             LlamaWeights weights, backend::KernelTable kernels);
  absl::Status AllReduce(float* data, size_t count);
  // Copies the RoPE frequencies to the device (non-host backends only).
  absl::Status UploadRopeFrequencies();
  // The step metadata where the kernels read it: the host vectors themselves on host backends,
  // else one device copy of all of them (made by one upload) at `device` (null: the scratch
  // buffer d_meta; a graph step's own buffer otherwise).
  struct StepMetadata {
    const int32_t *tokens, *positions, *slots, *query_start, *block_tables;
  };
  StepMetadata UploadMetadata(int32_t* device);
  // The padded shape of a decode-only step that may run from CUDA graphs, else nullopt.
  std::optional<GraphShape> GraphShapeFor(const StepBatch& batch, const KvCache& cache) const;
  // The device pointers a captured step holds (step_graphs.h, Stamp).
  StepGraphs::Stamp GraphStamp(const KvCache& cache, const int32_t* metadata) const;

  // Scratch activations in the backend's memory, grown on demand and reused across steps.
  struct Scratch {
    explicit Scratch(const backend::MemoryOps* m)
        : residual(m), normed(m), qkv(m), attn(m), proj(m), gate_up(m), act(m), last_hidden(m), logits(m), gathered_logits(m), argmax_value(m), gathered_value(m),
          argmax_index(m), gathered_index(m), d_meta(m) {}
    // qkv: the fused projection's rows [n, (q + 2 kv) * head_dim]; gate_up: [n, 2 * inter].
    backend::DeviceArray<float> residual, normed, qkv, attn, proj, gate_up, act, last_hidden;
    backend::DeviceArray<float> logits, gathered_logits;  // lm_head output (device backends, TP)
    // Greedy tokens of argmax_only rows: this rank's (value, index) per row, every rank's under
    // TP, their host copies, and the merged tokens.
    backend::DeviceArray<float> argmax_value, gathered_value;
    backend::DeviceArray<int32_t> argmax_index, gathered_index;
    std::vector<float> host_value;
    std::vector<int32_t> host_index, greedy;
    // Step metadata, built on the host.
    // logit_rows: the token rows the lm_head reads, those needing logits first, then the
    // argmax_count rows of argmax_only sequences (also listed alone in argmax_rows).
    std::vector<int32_t> tokens, positions, slots, query_start, block_tables, logit_rows,
        argmax_rows;
    int32_t argmax_count = 0;
    int32_t num_seqs = 0;  // sequences in the step, padding included
    // logit_rows is 0, 1, 2, ...: the lm_head reads `normed` itself, no row copies.
    bool rows_in_place = false;
    // Device backends: tokens, positions, slots, query_start, block_tables packed in that order.
    std::vector<int32_t> meta;
    backend::DeviceArray<int32_t> d_meta;  // its device copy
  };
  // Builds the step's metadata on the host and sizes the activations; a graph step is padded to
  // `shape` (padding rows: token 0 at position 0, no KV slot, block table of block 0).
  absl::Status PrepareScratch(const StepBatch& batch, const KvCache& cache,
                              const GraphShape* shape);
  // The greedy token of each of the m rows of `hidden` (device memory), over the whole vocabulary.
  // `tokens` null: only this rank's part of the collectives (a follower).
  absl::Status GreedyTokens(const float* hidden, int32_t m, std::vector<int32_t>* tokens);

  ModelConfig config_;
  ShardLayout layout_;
  parallel::Communicator* comm_;  // null: one process holds the whole model, no collectives
  std::unique_ptr<WeightStore> store_;
  std::unique_ptr<WeightPlacement> placement_;  // owns the weights' copies (arena, device, fused)
  LlamaWeights weights_;
  backend::KernelTable kernels_;
  std::vector<float> inv_freq_;
  backend::DeviceArray<float> d_inv_freq_;
  Scratch scratch_;
  std::unique_ptr<StepGraphs> graphs_;  // the compute stream, and graphs of decode steps
  int32_t block_table_width_ = 0;
  kernels::KvDtype kv_dtype_ = kernels::KvDtype::kF32;
  // The lm_head runs over at most this many logits rows at a time: a scored request asks for a
  // row per scored token, and its device buffers must stay at the size the warm-up gave them
  // (the warm-up's rows: min(max_step_sequences, max_step_tokens)).
  int32_t head_row_group_ = 256;
};

}  // namespace caduceus::model
