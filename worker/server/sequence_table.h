// The leader's view of the sequences the router is running on this replica: it checks each step
// plan before any rank sees it, turns it into the model's StepBatch, and after the forward pass
// samples the tokens the plan asks for, with per-sequence sampler state (penalties need the
// token history; seeds need the index of the generated token).
//
// Protocol (proto/caduceus/worker/v1/worker.proto): a sequence's first step sets first_step,
// its sampling parameters and prefix_ids (the ids at positions < start_pos, which a reused
// prefix cache block already holds). Later steps continue exactly where the previous one ended:
// start_pos == number of tokens the worker has seen. A first_step for a known id restarts it
// (recompute after preemption). Release forgets a sequence.
//
// Single-threaded: the leader runs one step at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "caduceus/worker/v1/worker.pb.h"
#include "worker/model/model_config.h"
#include "worker/model/step_batch.h"
#include "worker/sampling/sampler.h"

namespace caduceus::worker {

// In SequencePlan.token_ids: "the token you sampled for this sequence in the previous step".
inline constexpr int32_t kSampledToken = -1;

struct StepLimits {
  int32_t max_step_tokens = 8192;
  int32_t max_step_sequences = 256;
  int32_t num_kv_blocks = 0;
  int32_t block_size = 16;
  int32_t max_context = 0;
  int32_t vocab_size = 0;
};

// Builds the model batch for a plan; spans point into `plan`, which must outlive the batch.
// Followers call this too (they keep no sequence state).
model::StepBatch BatchFromPlan(const v1::StepPlan& plan);

class SequenceTable {
 public:
  explicit SequenceTable(StepLimits limits) : limits_(limits) {}

  // Replaces every sampled-token placeholder (a single token id kSampledToken, see worker.proto)
  // with the token this table sampled for that sequence at position start_pos in the previous
  // step. INVALID_ARGUMENT naming the sequence where there is no such token. Run before
  // Validate, and before the plan goes to the followers (they keep no sequence state).
  absl::Status ResolveSampledTokens(v1::StepPlan* plan) const;

  // INVALID_ARGUMENT naming the sequence and the problem when the plan breaks the limits or the
  // protocol above. Changes nothing.
  absl::Status Validate(const v1::StepPlan& plan) const;

  // After a successful forward pass: records the new tokens of every sequence and samples for
  // the entries with sample set (row b of `logits` belongs to entry b). On a sampling error
  // (non-finite logits) returns it; the states of the entries before it are already updated.
  absl::Status Commit(const v1::StepPlan& plan, const model::StepLogits& logits,
                      v1::StepResult* result);

  // Forgets these sequences; returns how many were known.
  int32_t Release(const google::protobuf::RepeatedField<uint64_t>& ids);
  // Forgets every sequence (the group was rebuilt, or the cache contents are lost).
  void Clear() { sequences_.clear(); }

  int32_t size() const { return static_cast<int32_t>(sequences_.size()); }
  bool Contains(uint64_t id) const { return sequences_.contains(id); }
  // Distinct KV blocks referenced by the live sequences' latest block tables.
  int32_t BlocksInUse() const;
  const StepLimits& limits() const { return limits_; }

 private:
  struct Sequence {
    std::vector<int32_t> ids;  // every token at positions [0, ids.size())
    int32_t prompt_len = 0;
    sampling::SamplingParams params;
    // Created at the first sample, from ids[0, prompt_len) as the prompt; generated tokens
    // (positions >= prompt_len) are accepted into it as they are sampled or fed.
    std::optional<sampling::SequenceSampler> sampler;
    int32_t accepted_until = 0;  // positions < this are known to the sampler
    int32_t last_sampled = -1;   // the token sampled at position accepted_until - 1
    std::vector<int32_t> block_table;
  };

  StepLimits limits_;
  absl::node_hash_map<uint64_t, Sequence> sequences_;  // stable addresses (Commit)
};

sampling::SamplingParams FromProto(const v1::SamplingParams& p);

}  // namespace caduceus::worker
