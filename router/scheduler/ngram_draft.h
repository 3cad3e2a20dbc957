// Prompt-lookup drafting for speculative decoding: guesses a sequence's next tokens from its own
// history. Clinical summaries, letters and extractions copy long spans of the note they are
// given (names, drug names and doses, dates, codes), and chat templates repeat their markup, so
// the tokens that followed the last few tokens' previous occurrence are often the next ones.
// The worker verifies every guess against the model (SequencePlan.draft_tokens), so a bad guess
// costs compute, never correctness.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace caduceus::router {

struct NgramDraftConfig {
  int32_t min_ngram = 2;  // shortest suffix that counts as a match
  int32_t max_ngram = 4;  // longest suffix tried (longer matches are more reliable)
};

// Up to `max_tokens` guesses: finds the longest suffix of `tokens` (max_ngram down to min_ngram
// tokens) that also occurs earlier, takes its most recent earlier occurrence, and returns the
// tokens that followed it there. Empty when no suffix of at least min_ngram tokens recurs.
// O(len(tokens) x max_ngram) in the worst case.
std::vector<int32_t> ProposeNgramDraft(std::span<const int32_t> tokens, const NgramDraftConfig& config,
                                       int32_t max_tokens);

// The same guesses for one growing sequence without rescanning its history: a hash index of its
// n-grams (latest occurrence of each), brought up to date with the tokens appended since the
// last call. A 128k-token history costs ~0.7 ms per ProposeNgramDraft scan (once per decoding
// sequence per step, on the replica's loop thread) and O(max_ngram) here. ~60 bytes per token,
// so the scheduler only builds one for histories longer than kNgramIndexFrom tokens.
class NgramIndex {
 public:
  explicit NgramIndex(const NgramDraftConfig& config) : config_(config) {}

  // Equal to ProposeNgramDraft(tokens, config, max_tokens) (hash collisions are checked and
  // fall back to the scan). `tokens` must extend the previous call's tokens; a shorter one
  // rebuilds the index (the caller owns one index per sequence, whose tokens only grow).
  std::vector<int32_t> Propose(std::span<const int32_t> tokens, int32_t max_tokens);

 private:
  static uint64_t Key(std::span<const int32_t> ngram);

  NgramDraftConfig config_;
  size_t indexed_ = 0;  // n-grams ending (exclusive) at positions <= indexed_ are in ends_
  absl::flat_hash_map<uint64_t, int32_t> ends_;  // Key(n-gram) -> its latest exclusive end
};

inline constexpr size_t kNgramIndexFrom = 2048;

}  // namespace caduceus::router
