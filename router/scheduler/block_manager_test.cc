#include "router/scheduler/block_manager.h"

#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caduceus::router {
namespace {

using ::testing::ElementsAre;

// Token ids base, base+1, ... (n of them).
std::vector<int32_t> Ids(int32_t base, int32_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), base);
  return v;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> TableOf(const BlockManager& bm, uint64_t seq) {
  auto t = bm.Table(seq);
  return {t.begin(), t.end()};
}

// Allocates `tokens` fully (as if prefilled in one step) and registers the computed blocks.
int32_t AllocateComputed(BlockManager& bm, uint64_t seq, const std::vector<int32_t>& tokens) {
  absl::StatusOr<int32_t> cached = bm.Allocate(seq, tokens, static_cast<int32_t>(tokens.size()));
  EXPECT_TRUE(cached.ok()) << cached.status();
  bm.RegisterComputed(seq, tokens, static_cast<int64_t>(tokens.size()));
  EXPECT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
  return cached.value_or(-1);
}

TEST(BlockManagerTest, SharedSystemPromptIsReused) {
  BlockManager bm(/*num_blocks=*/16, /*block_size=*/4);
  const std::vector<int32_t> system = Ids(100, 8);  // two full blocks
  const auto a = Concat(system, Ids(1, 3));
  const auto b = Concat(system, Ids(50, 5));
  EXPECT_EQ(AllocateComputed(bm, 1, a), 0);
  EXPECT_EQ(bm.LookupPrefix(b), 8);
  EXPECT_EQ(AllocateComputed(bm, 2, b), 8);
  const auto ta = TableOf(bm, 1), tb = TableOf(bm, 2);
  ASSERT_EQ(ta.size(), 3u);
  ASSERT_EQ(tb.size(), 4u);
  EXPECT_EQ(tb[0], ta[0]);
  EXPECT_EQ(tb[1], ta[1]);
  EXPECT_NE(tb[2], ta[2]);
  EXPECT_EQ(bm.ref_count(ta[0]), 2);
  EXPECT_EQ(bm.ref_count(ta[1]), 2);
  EXPECT_EQ(bm.ref_count(ta[2]), 1);
  EXPECT_EQ(bm.num_used(), 5);
  EXPECT_EQ(bm.prefix_lookups_total(), 2);
  EXPECT_EQ(bm.prefix_hits_total(), 1);
  EXPECT_EQ(bm.prefix_hit_tokens_total(), 8);
}

TEST(BlockManagerTest, NothingIsReusedBeforeItIsRegistered) {
  // Registration is what says "the KV of these tokens is written"; before it, a second sequence
  // must compute the prefix itself.
  BlockManager bm(16, 4);
  const auto a = Ids(0, 9);
  ASSERT_TRUE(bm.Allocate(1, a, 9).ok());
  EXPECT_EQ(bm.LookupPrefix(a), 0);
  bm.RegisterComputed(1, a, /*num_computed=*/5);  // only the first block is complete
  EXPECT_EQ(bm.LookupPrefix(a), 4);
  bm.RegisterComputed(1, a, 9);
  EXPECT_EQ(bm.LookupPrefix(a), 8);
}

TEST(BlockManagerTest, CapKeepsTheLastTokenAndItsBlockPrivate) {
  BlockManager bm(32, 4);
  const auto long_seq = Ids(0, 16);  // four full blocks registered
  AllocateComputed(bm, 1, long_seq);
  // cached = min(hit_full_blocks * B, floor((len - 1) / B) * B)
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 1)), 0);
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 4)), 0);   // exactly one block: its last token is recomputed
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 5)), 4);
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 8)), 4);
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 9)), 8);
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 16)), 12);  // identical sequence: last block recomputed
  EXPECT_EQ(bm.LookupPrefix(Ids(0, 17)), 16);
  EXPECT_EQ(bm.LookupPrefix(Concat(Ids(0, 6), Ids(90, 10))), 4);  // diverges inside block 2

  // The identical sequence gets a fresh block for its last block, so it never writes into the
  // one it shares.
  ASSERT_EQ(bm.Allocate(2, long_seq, 16).value_or(-1), 12);
  const auto t1 = TableOf(bm, 1), t2 = TableOf(bm, 2);
  EXPECT_EQ(std::vector<int32_t>(t2.begin(), t2.begin() + 3),
            std::vector<int32_t>(t1.begin(), t1.begin() + 3));
  EXPECT_NE(t2[3], t1[3]);
  EXPECT_EQ(bm.ref_count(t2[3]), 1);
}

TEST(BlockManagerTest, SameBlockUnderADifferentPrefixIsNotAHit) {
  // Chained hashing: block contents only match when everything before them matches too.
  BlockManager bm(16, 4);
  AllocateComputed(bm, 1, Concat(Ids(0, 4), Ids(10, 4)));
  EXPECT_EQ(bm.LookupPrefix(Concat(Concat(Ids(20, 4), Ids(10, 4)), Ids(0, 1))), 0);
  EXPECT_EQ(bm.LookupPrefix(Concat(Concat(Ids(0, 4), Ids(10, 4)), Ids(0, 1))), 8);
}

TEST(BlockManagerTest, FreedBlocksStayCachedAndEvictLeastRecentlyUsedFirst) {
  BlockManager bm(/*num_blocks=*/4, /*block_size=*/2);
  const auto a = Ids(0, 4), b = Ids(10, 4);
  AllocateComputed(bm, 1, a);
  AllocateComputed(bm, 2, b);
  EXPECT_EQ(bm.num_free(), 0);
  ASSERT_TRUE(bm.Free(1).ok());
  ASSERT_TRUE(bm.Free(2).ok());
  EXPECT_EQ(bm.num_cached(), 4);
  EXPECT_EQ(bm.num_used(), 0);
  EXPECT_EQ(bm.num_available(), 4);
  // Both prefixes survive freeing.
  EXPECT_EQ(bm.LookupPrefix(Concat(a, {99})), 4);
  EXPECT_EQ(bm.LookupPrefix(Concat(b, {99})), 4);

  // Reusing `a` makes it most recently used; after freeing it again, `b` is the LRU one.
  ASSERT_EQ(AllocateComputed(bm, 3, Concat(a, {99})), 4);
  ASSERT_TRUE(bm.Free(3).ok());  // its third block was never full: back to the free list
  EXPECT_EQ(bm.num_free(), 1);
  EXPECT_EQ(bm.num_cached(), 4 - 1);  // that fresh block was taken by evicting one of b's

  // b's tail block went first (tails are released first), so only b's first block remains.
  EXPECT_EQ(bm.LookupPrefix(Concat(b, {99})), 2);
  EXPECT_EQ(bm.LookupPrefix(Concat(a, {99})), 4);

  // Two more fresh blocks: the free one, then b's remaining block (the LRU cached one).
  AllocateComputed(bm, 4, Ids(20, 3));
  EXPECT_EQ(bm.LookupPrefix(Concat(b, {99})), 0);
  EXPECT_EQ(bm.LookupPrefix(Concat(a, {99})), 4);
  // Then a's tail, then a's head.
  ASSERT_TRUE(bm.Grow(4, 6).ok());
  EXPECT_EQ(bm.LookupPrefix(Concat(a, {99})), 2);
  ASSERT_TRUE(bm.Grow(4, 8).ok());
  EXPECT_EQ(bm.LookupPrefix(Concat(a, {99})), 0);
  EXPECT_EQ(bm.num_used(), 4);
  EXPECT_FALSE(bm.Grow(4, 9).ok());
  EXPECT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
}

TEST(BlockManagerTest, RefCountsFollowTablesAndNothingLeaks) {
  BlockManager bm(32, 4);
  const auto system = Ids(7, 12);
  for (uint64_t s = 1; s <= 3; ++s) AllocateComputed(bm, s, Concat(system, Ids(100 * s, 3)));
  const auto t1 = TableOf(bm, 1);
  EXPECT_EQ(bm.ref_count(t1[0]), 3);
  EXPECT_EQ(bm.ref_count(t1[2]), 3);
  EXPECT_EQ(bm.ref_count(t1[3]), 1);
  ASSERT_TRUE(bm.Free(2).ok());
  EXPECT_EQ(bm.ref_count(t1[0]), 2);
  EXPECT_TRUE(bm.CheckInvariants().ok());
  ASSERT_TRUE(bm.Free(1).ok());
  ASSERT_TRUE(bm.Free(3).ok());
  EXPECT_EQ(bm.num_used(), 0);
  EXPECT_EQ(bm.num_cached(), 3);  // the shared system prompt's three full blocks
  EXPECT_EQ(bm.num_free() + bm.num_cached(), bm.num_blocks());
  EXPECT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
  EXPECT_EQ(bm.Free(1).code(), absl::StatusCode::kNotFound);
}

TEST(BlockManagerTest, ShortageChangesNothing) {
  BlockManager bm(/*num_blocks=*/3, /*block_size=*/2);
  const auto a = Ids(0, 5);
  AllocateComputed(bm, 1, a);  // 3 blocks, 2 of them full and registered
  ASSERT_TRUE(bm.Free(1).ok());
  EXPECT_EQ(bm.num_cached(), 2);
  EXPECT_EQ(bm.num_free(), 1);
  // Reusing both cached blocks takes them out of the evictable pool: only 1 block is left for
  // the 2 fresh ones this sequence needs.
  const auto b = Concat(Ids(0, 4), Ids(50, 3));
  EXPECT_EQ(bm.Allocate(2, b, 7).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(bm.num_cached(), 2);
  EXPECT_EQ(bm.num_free(), 1);
  EXPECT_FALSE(bm.HasTable(2));
  EXPECT_EQ(bm.prefix_lookups_total(), 1);  // failed attempts are not counted
  // One fresh block fits.
  ASSERT_EQ(bm.Allocate(2, Concat(Ids(0, 4), Ids(50, 2)), 6).value_or(-1), 4);
  EXPECT_EQ(bm.num_used(), 3);
  EXPECT_EQ(bm.Grow(2, 7).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(TableOf(bm, 2).size(), 3u);
  EXPECT_EQ(bm.Grow(99, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(bm.Allocate(2, b, 1).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
}

TEST(BlockManagerTest, DuplicateComputationChainsThroughTheRegisteredCopy) {
  // Two sequences with the same prompt prefilled in the same step both compute its blocks. The
  // first registration wins; the second sequence's later blocks must still be findable.
  BlockManager bm(32, 4);
  const auto p = Ids(0, 8);
  const auto a = Concat(p, {1});
  const auto b = Concat(p, Ids(40, 5));  // a third full block after the shared two
  ASSERT_EQ(bm.Allocate(1, a, 9).value_or(-1), 0);
  ASSERT_EQ(bm.Allocate(2, b, 13).value_or(-1), 0);
  bm.RegisterComputed(1, a, 9);
  bm.RegisterComputed(2, b, 13);
  EXPECT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
  const auto c = Concat(b, {7});
  EXPECT_EQ(bm.LookupPrefix(c), 12);
  ASSERT_EQ(bm.Allocate(3, c, 14).value_or(-1), 12);
  const auto t1 = TableOf(bm, 1), t2 = TableOf(bm, 2), t3 = TableOf(bm, 3);
  EXPECT_THAT(std::vector<int32_t>(t3.begin(), t3.begin() + 3), ElementsAre(t1[0], t1[1], t2[2]));
  // Freeing the duplicate returns its two unregistered copies and its partial last block to the
  // free list; its registered third block stays in use by sequence 3.
  const int32_t free_before = bm.num_free();
  ASSERT_TRUE(bm.Free(2).ok());
  EXPECT_EQ(bm.num_free(), free_before + 3);
  EXPECT_EQ(bm.ref_count(t2[2]), 1);
  EXPECT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
}

// A hash with 5 values: almost every lookup and registration collides. Reuse must still only
// ever hand out a block whose KV was computed for exactly the same token prefix.
uint64_t WeakHash(uint64_t parent_hash, std::span<const int32_t> block_tokens) {
  uint64_t h = parent_hash;
  for (int32_t t : block_tokens) h += static_cast<uint64_t>(t);
  return h % 5;
}

TEST(BlockManagerTest, CollidingHashesNeverShareWrongContent) {
  constexpr int32_t kB = 4;
  BlockManager bm(/*num_blocks=*/64, kB, &WeakHash);
  std::mt19937 rng(5);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  // What each block's KV "means": the whole token prefix up to the block's end, as computed.
  std::map<int32_t, std::vector<int32_t>> computed_for;
  const std::vector<std::vector<int32_t>> prefixes = {Ids(0, 8), {0, 0, 0, 0, 1, 1, 1, 1}, {}};
  std::map<uint64_t, std::vector<int32_t>> live;
  uint64_t next = 1;
  for (int iter = 0; iter < 4000; ++iter) {
    if (live.size() < 6 && uniform(0, 2) > 0) {
      std::vector<int32_t> tokens = prefixes[uniform(0, 2)];
      const int suffix = uniform(1, 10);
      for (int i = 0; i < suffix; ++i) tokens.push_back(uniform(0, 2));  // tiny alphabet
      const int32_t len = static_cast<int32_t>(tokens.size());
      absl::StatusOr<int32_t> cached = bm.Allocate(next, tokens, len);
      if (!cached.ok()) continue;
      const auto table = TableOf(bm, next);
      for (int32_t i = 0; i < *cached / kB; ++i) {
        const std::vector<int32_t> want(tokens.begin(), tokens.begin() + (i + 1) * kB);
        ASSERT_EQ(computed_for[table[i]], want) << "block " << table[i] << " reused wrongly";
      }
      for (int32_t i = *cached / kB; i < static_cast<int32_t>(table.size()); ++i) {
        computed_for[table[i]].assign(tokens.begin(),
                                      tokens.begin() + std::min(len, (i + 1) * kB));
      }
      bm.RegisterComputed(next, tokens, len);
      live[next++] = tokens;
    } else if (!live.empty()) {
      auto it = live.begin();
      std::advance(it, uniform(0, static_cast<int>(live.size()) - 1));
      ASSERT_TRUE(bm.Free(it->first).ok());
      live.erase(it);
    }
    ASSERT_TRUE(bm.CheckInvariants().ok()) << bm.CheckInvariants();
  }
  EXPECT_GT(bm.prefix_hits_total(), 10) << "true matches must still be found";
}

}  // namespace
}  // namespace caduceus::router
