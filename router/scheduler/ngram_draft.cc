#include "router/scheduler/ngram_draft.h"

#include <algorithm>
#include <cstddef>

namespace caduceus::router {

std::vector<int32_t> ProposeNgramDraft(std::span<const int32_t> tokens, const NgramDraftConfig& config,
                                       int32_t max_tokens) {
  const size_t len = tokens.size();
  if (max_tokens <= 0 || config.min_ngram <= 0) return {};
  const size_t longest = std::min(static_cast<size_t>(std::max(config.max_ngram, 0)), len - std::min<size_t>(len, 1));
  for (size_t n = longest; n >= static_cast<size_t>(config.min_ngram) && n > 0; --n) {
    const std::span<const int32_t> suffix = tokens.last(n);
    // Most recent occurrence first: its continuation reflects the latest context (a loop, the
    // paragraph being copied). `start` ranges over occurrences ending before the last token, so
    // at least one token follows each.
    for (size_t start = len - n; start-- > 0;) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + static_cast<std::ptrdiff_t>(start))) continue;
      // Copy what followed, overlapping like an LZ77 match: past the end of the history the
      // guesses continue with the guesses themselves, so a loop (period len - from) is
      // predicted for all max_tokens, not only up to the end of the history.
      const size_t from = start + n;
      std::vector<int32_t> draft;
      draft.reserve(static_cast<size_t>(max_tokens));
      for (size_t pos = from; draft.size() < static_cast<size_t>(max_tokens); ++pos) {
        draft.push_back(pos < len ? tokens[pos] : draft[pos - len]);
      }
      return draft;
    }
  }
  return {};
}

}  // namespace caduceus::router
