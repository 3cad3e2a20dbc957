// Single-process generation: runs a set of requests to completion on one LlamaModel with
// iteration-level batching (every step carries the next prefill chunk or decode token of every
// live sequence). Used by caduceus-generate and caduceus-bench-engine; the router's scheduler
// replaces it in the cluster.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/block_allocator.h"
#include "worker/model/llama_model.h"
#include "worker/sampling/sampler.h"

namespace caduceus::engine {

enum class FinishReason { kLength, kStopToken, kStopSequence, kCancelled };
const char* FinishReasonName(FinishReason reason);

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  sampling::SamplingParams sampling;
  int32_t max_new_tokens = 128;
  bool ignore_eos = false;
  std::vector<int32_t> stop_ids;  // in addition to the model's EOS ids unless ignore_eos
};

struct GenerationResult {
  std::vector<int32_t> generated_ids;
  std::vector<sampling::SampleResult> samples;  // one per generated id (logprobs)
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<float> first_step_logits;  // filled when EngineOptions::keep_first_logits
};

struct EngineOptions {
  int32_t num_kv_blocks = 0;         // 0: enough for the requests given to Run
  int32_t prefill_chunk_tokens = 512;  // max new prompt tokens per sequence per step
  bool keep_first_logits = false;
};

// Called after each sampled token; return false to stop that sequence (kStopSequence), e.g.
// when the caller's stop-string matcher fires.
using TokenCallback = std::function<bool(size_t request_index, const sampling::SampleResult&)>;

class LocalEngine {
 public:
  LocalEngine(model::LlamaModel* model, EngineOptions options);
  absl::StatusOr<std::vector<GenerationResult>> Run(const std::vector<GenerationRequest>& requests,
                                                    const TokenCallback& on_token = nullptr);

 private:
  model::LlamaModel* model_;
  EngineOptions options_;
};

}  // namespace caduceus::engine
