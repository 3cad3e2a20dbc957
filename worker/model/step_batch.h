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
};

struct StepBatch {
  std::vector<SequenceStep> sequences;
};

// Logits rows, in sequence order: one row per sequence (its last token), or one per new token for
// sequences with all_logits. row_begin[s] is the first row of sequence s.
struct StepLogits {
  int32_t vocab_size = 0;
  std::vector<int32_t> row_begin;
  std::vector<float> values;  // [rows, vocab_size]
  std::span<const float> Row(int32_t row) const {
    return {values.data() + static_cast<size_t>(row) * vocab_size, static_cast<size_t>(vocab_size)};
  }
};

}  // namespace caduceus::model
