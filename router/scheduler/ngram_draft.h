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

}  // namespace caduceus::router
