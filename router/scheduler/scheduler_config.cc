#include "router/scheduler/scheduler_config.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace caduceus::router {
namespace {

absl::Status Positive(const char* name, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("scheduler: ", name, " must be > 0, got ", value));
}

}  // namespace

absl::Status ValidateSchedulerConfig(const SchedulerConfig& c) {
  for (auto [name, value] : {std::pair<const char*, int64_t>{"max_num_seqs", c.max_num_seqs},
                             {"max_tokens_per_step", c.max_tokens_per_step},
                             {"prefill_chunk_tokens", c.prefill_chunk_tokens},
                             {"max_waiting_requests", c.max_waiting_requests},
                             {"max_waiting_tokens", c.max_waiting_tokens},
                             {"block_size", c.block_size},
                             {"num_blocks", c.num_blocks}}) {
    absl::Status s = Positive(name, value);
    if (!s.ok()) return s;
  }
  if (c.max_tokens_per_step < c.max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler: max_tokens_per_step (", c.max_tokens_per_step,
        ") must be >= max_num_seqs (", c.max_num_seqs, ") so every running sequence can decode "
        "in each step"));
  }
  if (c.speculative_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler: speculative_tokens must be >= 0 (0: off), got ", c.speculative_tokens));
  }
  if (c.speculative_tokens > 0 && c.speculative_max_running < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler: speculative_max_running must be >= 1, got ", c.speculative_max_running));
  }
  if (c.speculative_tokens > 0 && (c.ngram.min_ngram < 1 || c.ngram.max_ngram < c.ngram.min_ngram)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler: speculative n-gram lengths must satisfy 1 <= min (", c.ngram.min_ngram,
        ") <= max (", c.ngram.max_ngram, ")"));
  }
  return absl::OkStatus();
}

}  // namespace caduceus::router
