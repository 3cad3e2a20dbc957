#include "router/scheduler/ngram_draft.h"

#include <algorithm>
#include <cstddef>

namespace caduceus::router {

namespace {

// Copies what followed the occurrence ending (exclusive) at `from`, overlapping like an LZ77
// match: past the end of the history the guesses continue with the guesses themselves, so a
// loop (period len - from) is predicted for all max_tokens, not only up to the end.
std::vector<int32_t> ContinueFrom(std::span<const int32_t> tokens, size_t from, int32_t max_tokens) {
  const size_t len = tokens.size();
  std::vector<int32_t> draft;
  draft.reserve(static_cast<size_t>(max_tokens));
  for (size_t pos = from; draft.size() < static_cast<size_t>(max_tokens); ++pos) {
    draft.push_back(pos < len ? tokens[pos] : draft[pos - len]);
  }
  return draft;
}

}  // namespace

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
      return ContinueFrom(tokens, start + n, max_tokens);
    }
  }
  return {};
}

uint64_t NgramIndex::Key(std::span<const int32_t> ngram) {
  // splitmix64 over (length, tokens): the length keeps n-grams of different lengths apart.
  uint64_t h = 0x9e3779b97f4a7c15ULL * (ngram.size() + 1);
  for (int32_t t : ngram) {
    h ^= static_cast<uint32_t>(t) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
  }
  return h;
}

std::vector<int32_t> NgramIndex::Propose(std::span<const int32_t> tokens, int32_t max_tokens) {
  const size_t len = tokens.size();
  if (max_tokens <= 0 || config_.min_ngram <= 0 || len < 2) return {};
  if (len < indexed_ + 1) {  // not an extension of the indexed tokens: start over
    ends_.clear();
    indexed_ = 0;
  }
  const size_t min_n = static_cast<size_t>(config_.min_ngram);
  const size_t max_n = static_cast<size_t>(std::max(config_.max_ngram, config_.min_ngram));
  // Occurrences the scan may return end (exclusive) at len - 1 at most: index up to there.
  for (size_t end = indexed_ + 1; end + 1 <= len; ++end) {
    for (size_t n = min_n; n <= max_n && n <= end; ++n) {
      ends_[Key(tokens.subspan(end - n, n))] = static_cast<int32_t>(end);
    }
  }
  indexed_ = len - 1;
  const size_t longest = std::min(max_n, len - 1);
  for (size_t n = longest; n >= min_n && n > 0; --n) {
    const std::span<const int32_t> suffix = tokens.last(n);
    auto it = ends_.find(Key(suffix));
    if (it == ends_.end()) continue;
    const size_t end = static_cast<size_t>(it->second);
    if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + static_cast<std::ptrdiff_t>(end - n))) {
      return ProposeNgramDraft(tokens, config_, max_tokens);  // a hash collision: be exact
    }
    return ContinueFrom(tokens, end, max_tokens);
  }
  return {};
}

}  // namespace caduceus::router
