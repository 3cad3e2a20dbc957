// What the scheduler hands the router for one worker step: a flat batch where each sequence
// contributes new tokens at positions [start_pos, start_pos + tokens.size()) with a block table
// covering [0, start_pos + tokens.size()). Mirrors caduceus.worker.v1.SequencePlan field for
// field, so the router's conversion is a copy.
#pragma once

#include <cstdint>
#include <vector>

namespace caduceus::router {

// In StepEntry::tokens of a step planned ahead (Scheduler::ScheduleAhead): the token the previous
// step samples for this sequence, not known yet when the plan is made. The worker fills it in
// (SequencePlan.token_ids, the same value).
inline constexpr int32_t kSampledTokenPlaceholder = -1;

struct StepEntry {
  uint64_t seq_id = 0;
  // New token ids, at positions start_pos, start_pos + 1, ...; or {kSampledTokenPlaceholder}.
  std::vector<int32_t> tokens;
  int32_t start_pos = 0;             // tokens before start_pos are in the KV cache already
  std::vector<int32_t> block_table;  // exactly the blocks covering [0, start_pos + tokens.size())
  // Sample one token from the last new token's logits: this chunk reaches the end of the
  // sequence's known tokens (the last prompt chunk, a decode, or the end of a recompute). The
  // router must report the token with Scheduler::OnSampled (or Finish the sequence).
  bool sample = false;
  int32_t prompt_len = 0;            // positions < prompt_len are prompt, later ones generated
  // First step of this incarnation of the sequence (after admission, or after a preemption): the
  // worker has no state for it and gets the ids at positions < start_pos (a reused prefix, or
  // everything before the recompute point) for repetition penalties. Empty on later steps.
  bool first_step = false;
  std::vector<int32_t> prefix_ids;
  // Speculative decoding: the last draft_tokens of `tokens` are guesses for the worker to verify
  // (worker.proto SequencePlan.draft_tokens). The router reports what it accepted plus the token
  // after, with Scheduler::OnSampled's span form.
  int32_t draft_tokens = 0;
};

struct ScheduledStep {
  std::vector<StepEntry> entries;
  // Sequences preempted by recompute while planning this step (their blocks are freed and they
  // are back at the front of the waiting queue). The worker's per-sequence sampler state for
  // them is stale; their next entry has first_step set.
  std::vector<uint64_t> preempted;
  // ScheduleAhead only: running sequences are short of KV blocks, which only a preemption could
  // fix, and preemption needs the steps in flight to be back. The step is empty; let them finish
  // and plan with Schedule().
  bool must_drain = false;

  bool empty() const { return entries.empty(); }
  int64_t num_tokens() const {
    int64_t n = 0;
    for (const StepEntry& e : entries) n += static_cast<int64_t>(e.tokens.size());
    return n;
  }
};

}  // namespace caduceus::router
