#include "worker/engine/local_engine.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::engine {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

namespace {

struct LiveSequence {
  const GenerationRequest* request;
  std::vector<int32_t> ids;  // prompt followed by generated tokens
  int32_t cached = 0;        // tokens already in the KV cache
  std::vector<int32_t> blocks;
  sampling::SequenceSampler sampler;
  bool done = false;
};

absl::Status ValidateRequest(const GenerationRequest& r, size_t index, int32_t max_context) {
  if (r.prompt_ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("request ", index, ": empty prompt"));
  }
  if (r.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", index, ": max_new_tokens must be >= 1, got ", r.max_new_tokens));
  }
  const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens;
  if (total > max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", index, ": prompt (", r.prompt_ids.size(), " tokens) + max_new_tokens (",
        r.max_new_tokens, ") exceeds the model's context of ", max_context, " tokens"));
  }
  return r.sampling.Validate();
}

}  // namespace

LocalEngine::LocalEngine(model::LlamaModel* model, EngineOptions options)
    : model_(model), options_(options) {}

absl::StatusOr<std::vector<GenerationResult>> LocalEngine::Run(
    const std::vector<GenerationRequest>& requests, const TokenCallback& on_token) {
  const model::ModelConfig& config = model_->config();
  const int32_t bs = model::KvCache::kDefaultBlockSize;
  int32_t blocks_needed = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    RETURN_IF_ERROR(ValidateRequest(requests[i], i, config.max_position_embeddings));
    const int32_t len = static_cast<int32_t>(requests[i].prompt_ids.size()) + requests[i].max_new_tokens;
    blocks_needed += (len + bs - 1) / bs;
  }
  const int32_t num_blocks = options_.num_kv_blocks > 0 ? options_.num_kv_blocks : blocks_needed;
  ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> cache, model_->CreateKvCache(num_blocks));
  BlockAllocator allocator(num_blocks);

  std::vector<LiveSequence> live;
  live.reserve(requests.size());
  for (const GenerationRequest& r : requests) {
    const int32_t len = static_cast<int32_t>(r.prompt_ids.size()) + r.max_new_tokens;
    ASSIGN_OR_RETURN(std::vector<int32_t> blocks, allocator.Allocate((len + bs - 1) / bs));
    live.push_back(LiveSequence{&r, r.prompt_ids, 0, std::move(blocks),
                                sampling::SequenceSampler(r.sampling, r.prompt_ids), false});
  }
  std::vector<GenerationResult> results(requests.size());

  model::StepBatch batch;
  model::StepLogits logits;
  std::vector<size_t> in_batch;
  while (true) {
    batch.sequences.clear();
    in_batch.clear();
    for (size_t i = 0; i < live.size(); ++i) {
      LiveSequence& s = live[i];
      if (s.done) continue;
      const int32_t pending = static_cast<int32_t>(s.ids.size()) - s.cached;
      const int32_t n = std::min(pending, options_.prefill_chunk_tokens);
      // A greedy draw without logprobs needs only the lm_head's argmax, not the logits row.
      const bool argmax_only =
          s.request->sampling.ArgmaxSuffices() && !options_.keep_first_logits;
      batch.sequences.push_back(model::SequenceStep{
          std::span<const int32_t>(s.ids.data() + s.cached, n), s.cached, s.blocks, false,
          argmax_only});
      in_batch.push_back(i);
    }
    if (batch.sequences.empty()) break;
    RETURN_IF_ERROR(model_->Forward(batch, *cache, &logits));

    // Sample every finished row in parallel (Sample is const, scratch is thread_local; ~150 us
    // per 128k-vocabulary row), then apply the results in batch order.
    std::vector<absl::StatusOr<sampling::SampleResult>> samples(in_batch.size(),
                                                                absl::UnknownError("no sample"));
    std::vector<char> sampled(in_batch.size(), 0);
    for (size_t b = 0; b < in_batch.size(); ++b) {
      LiveSequence& s = live[in_batch[b]];
      s.cached += static_cast<int32_t>(batch.sequences[b].tokens.size());
      sampled[b] = s.cached >= static_cast<int32_t>(s.ids.size());
    }
    const int rows = static_cast<int>(in_batch.size());
#pragma omp parallel for schedule(dynamic, 1) if (rows > 1)
    for (int b = 0; b < rows; ++b) {
      if (!sampled[b]) continue;
      const LiveSequence& s = live[in_batch[b]];
      const int32_t row = logits.row_begin[b];
      samples[b] = logits.HasValues(row)
                       ? s.sampler.Sample(logits.Row(row), results[in_batch[b]].generated_ids.size())
                       : sampling::GreedyResult(logits.greedy_token[row]);  // argmax_only
    }
    for (size_t b = 0; b < in_batch.size(); ++b) {
      if (!sampled[b]) continue;  // prefill not finished
      const size_t i = in_batch[b];
      LiveSequence& s = live[i];
      GenerationResult& result = results[i];
      if (options_.keep_first_logits && result.generated_ids.empty()) {
        std::span<const float> row = logits.Row(logits.row_begin[b]);
        result.first_step_logits.assign(row.begin(), row.end());
      }
      ASSIGN_OR_RETURN(sampling::SampleResult sample, std::move(samples[b]));
      s.sampler.Accept(sample.token);
      s.ids.push_back(sample.token);
      result.generated_ids.push_back(sample.token);
      result.samples.push_back(sample);
      const GenerationRequest& r = *s.request;
      const bool keep_going = on_token ? on_token(i, sample) : true;
      if (!r.ignore_eos && (config.IsEos(sample.token) ||
                            std::find(r.stop_ids.begin(), r.stop_ids.end(), sample.token) !=
                                r.stop_ids.end())) {
        result.finish_reason = FinishReason::kStopToken;
        s.done = true;
      } else if (!keep_going) {
        result.finish_reason = FinishReason::kStopSequence;
        s.done = true;
      } else if (static_cast<int32_t>(result.generated_ids.size()) >= r.max_new_tokens) {
        result.finish_reason = FinishReason::kLength;
        s.done = true;
      }
      if (s.done) allocator.Free(s.blocks);
    }
  }
  return results;
}

}  // namespace caduceus::engine
