// Limits of one replica's scheduler. The KV geometry (block_size, num_blocks) comes from the
// worker's Info; the rest are router flags.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "router/scheduler/ngram_draft.h"

namespace caduceus::router {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;          // running sequences (each holds KV blocks) at most
  int32_t max_tokens_per_step = 2048;  // new tokens in one step, decodes and prefill chunks
  int32_t prefill_chunk_tokens = 512;  // prompt tokens one sequence computes per step at most
  int32_t max_waiting_requests = 256;  // admission control: Add fails beyond these
  int64_t max_waiting_tokens = 100000;
  int32_t block_size = 16;             // tokens per KV block
  int32_t num_blocks = 0;              // KV blocks of the replica
  // Speculative decoding: guesses (prompt lookup, ngram_draft.h) appended to each decode, at
  // most; 0 turns it off. They count against max_tokens_per_step and only use free KV blocks.
  int32_t speculative_tokens = 0;
  // ...while at most this many sequences run: larger batches are compute-bound, where guesses
  // cost more than they save, and the router pipelines their steps instead (a sequence with
  // guesses in flight cannot be planned ahead: its next position depends on them).
  int32_t speculative_max_running = 16;
  NgramDraftConfig ngram;
};

// INVALID_ARGUMENT naming the first bad field. Besides positivity it requires
// max_tokens_per_step >= max_num_seqs: every running sequence must be able to decode in the same
// step, otherwise the newest decodes would wait behind the oldest forever.
absl::Status ValidateSchedulerConfig(const SchedulerConfig& config);

}  // namespace caduceus::router
