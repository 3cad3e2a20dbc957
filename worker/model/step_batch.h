// The unit of work of one forward pass: a flat batch of new tokens from several sequences, some
// prefilling many tokens, some decoding one, each with its own positions and KV block table.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace caduceus::model {

struct SequenceStep {
  std::span<const int32_t> tokens;       // new tokens, at positions start_pos, start_pos+1, ...
  int32_t start_pos = 0;                 // tokens before start_pos are already in the KV cache
  std::span<const int32_t> block_table;  // physical KV blocks covering [0, start_pos + tokens)
  bool all_logits = false;               // logits for every new token, not only the last one
  // Only the greedy token of the last row is wanted (a greedy draw without penalties or
  // logprobs): the step computes it with LinearArgmax instead of producing the logits row.
  // With all_logits: the greedy token of every row from logits_from on (speculative decoding's
  // guesses of a greedy sequence), and no logits rows.
  bool argmax_only = false;
  int32_t logits_from = 0;  // with all_logits: the first new token that gets logits
};

struct StepBatch {
  std::vector<SequenceStep> sequences;
};

// Logits rows, in sequence order: one row per sequence (its last token), or one per new token
// from logits_from on for sequences with all_logits. row_begin[s] is the first row of sequence s. The row of an
// argmax_only sequence has no logits, only its greedy token.
struct StepLogits {
  int32_t vocab_size = 0;
  std::vector<int32_t> row_begin;
  // Per row: its index in `values`, or -1 for an argmax_only row. Empty: every row has logits, in
  // row order.
  std::vector<int32_t> value_row;
  // Per row: the greedy token of an argmax_only row (LinearArgmax's rule, -1 if no logit is above
  // -inf); -1 for the other rows.
  std::vector<int32_t> greedy_token;
  std::vector<float> values;  // [rows with logits, vocab_size]

  bool HasValues(int32_t row) const { return value_row.empty() || value_row[row] >= 0; }
  std::span<const float> Row(int32_t row) const {
    const int32_t v = value_row.empty() ? row : value_row[row];
    return {values.data() + static_cast<size_t>(v) * vocab_size, static_cast<size_t>(vocab_size)};
  }
};

}  // namespace caduceus::model
