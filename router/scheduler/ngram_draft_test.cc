#include "router/scheduler/ngram_draft.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace caduceus::router {
namespace {

using V = std::vector<int32_t>;

V Propose(const V& tokens, int32_t min_n, int32_t max_n, int32_t k) {
  return ProposeNgramDraft(tokens, NgramDraftConfig{min_n, max_n}, k);
}

TEST(NgramDraftTest, CopiesWhatFollowedTheSuffixEarlier) {
  // "... 5 6 7 8 9 ... 5 6" -> "7 8 9"
  EXPECT_EQ(Propose({1, 5, 6, 7, 8, 9, 2, 3, 5, 6}, 2, 4, 3), (V{7, 8, 9}));
  EXPECT_EQ(Propose({1, 5, 6, 7, 8, 9, 2, 3, 5, 6}, 2, 4, 2), (V{7, 8}));
  // Past the end of the history the match repeats with its period (here 3: "7 5 6").
  EXPECT_EQ(Propose({5, 6, 7, 5, 6}, 2, 4, 8), (V{7, 5, 6, 7, 5, 6, 7, 5}));
}

TEST(NgramDraftTest, PrefersTheLongestSuffixThenTheMostRecentOccurrence) {
  // Suffix "3 4": occurs at 0 (then 10) and at 5 (then 11); the 3-gram "2 3 4" only at 4.
  const V history = {3, 4, 10, 0, 2, 3, 4, 11, 0, 0, 3, 4, 12, 7, 2, 3, 4};
  EXPECT_EQ(Propose(history, 2, 4, 1), (V{11}));  // "2 3 4" -> 11
  EXPECT_EQ(Propose(history, 2, 2, 1), (V{12}));  // only 2-grams: the most recent "3 4" -> 12
}

TEST(NgramDraftTest, NothingWithoutARecurringSuffixOfMinLength) {
  EXPECT_TRUE(Propose({1, 2, 3, 4, 5}, 1, 4, 4).empty());
  EXPECT_TRUE(Propose({1, 2, 9, 3, 2}, 2, 4, 4).empty());   // only "2" recurs
  EXPECT_EQ(Propose({1, 2, 9, 3, 2}, 1, 4, 4), (V{9, 3, 2, 9}));
  EXPECT_TRUE(Propose({}, 1, 4, 4).empty());
  EXPECT_TRUE(Propose({7}, 1, 4, 4).empty());
  EXPECT_TRUE(Propose({7, 7}, 1, 4, 0).empty());
}

TEST(NgramDraftTest, LoopsProposeTheirContinuation) {
  // A model stuck in "a b c a b c ..." (random weights do that) is predicted exactly.
  EXPECT_EQ(Propose({8, 1, 2, 3, 1, 2, 3, 1, 2}, 2, 4, 4), (V{3, 1, 2, 3}));
  EXPECT_EQ(Propose({4, 4, 4, 4}, 1, 3, 5), (V{4, 4, 4, 4, 4}));
}

// The index gives exactly the scan's guesses while a sequence grows one token (or a few) at a
// time, over small vocabularies (many matches, loops) and large ones (few).
TEST(NgramIndexTest, AgreesWithTheScanAsTheSequenceGrows) {
  std::mt19937 rng(5);
  int matched = 0, calls = 0;
  for (int32_t vocab : {3, 8, 50, 5000}) {
    for (NgramDraftConfig config : {NgramDraftConfig{2, 4}, NgramDraftConfig{1, 3}, NgramDraftConfig{3, 3}}) {
      NgramIndex index(config);
      V tokens;
      std::uniform_int_distribution<int32_t> token(0, vocab - 1), grow(1, 4), k(1, 8);
      while (tokens.size() < 600) {
        // Sometimes copy an earlier span (as answers copy their notes), else random tokens.
        if (tokens.size() > 20 && rng() % 3 == 0) {
          const size_t from = rng() % (tokens.size() - 10);
          for (int i = 0; i < grow(rng); ++i) tokens.push_back(tokens[from + i]);
        } else {
          for (int i = 0; i < grow(rng); ++i) tokens.push_back(token(rng));
        }
        const int32_t max_tokens = k(rng);
        const V want = ProposeNgramDraft(tokens, config, max_tokens);
        ASSERT_EQ(index.Propose(tokens, max_tokens), want)
            << "vocab " << vocab << ", " << tokens.size() << " tokens";
        matched += want.empty() ? 0 : 1;
        ++calls;
      }
    }
  }
  EXPECT_GT(matched, calls / 4);  // the comparison covered matches, not only misses
  EXPECT_LT(matched, calls);
}

TEST(NgramIndexTest, RebuildsForAShorterSequence) {
  NgramIndex index(NgramDraftConfig{2, 4});
  EXPECT_EQ(index.Propose(V{1, 5, 6, 7, 8, 9, 2, 3, 5, 6}, 3), (V{7, 8, 9}));
  EXPECT_EQ(index.Propose(V{5, 6, 4, 5, 6}, 2), (V{4, 5}));
}

}  // namespace
}  // namespace caduceus::router
