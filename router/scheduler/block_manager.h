// KV-cache block accounting for one replica, with prefix reuse. The router owns which physical
// blocks hold which tokens; the worker only reads and writes the blocks a step's table names.
//
// Every block is in exactly one of three states:
//   free     - no useful content, on the free list;
//   used     - referenced by at least one sequence's table (ref_count > 0);
//   cached   - unreferenced but holding a full, computed block that is still registered in the
//              prefix cache; evictable, least recently freed first.
// A full block is identified by a chained hash (hash of the previous block's hash and this
// block's token ids). The hash is only an index: a hit also compares the block's token ids and its
// parent block's identity, so two different prefixes never share a block even if hashes collide.
//
// Not thread-safe: the scheduler calls it from the router's single loop thread.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace caduceus::router {

class BlockManager {
 public:
  using SeqId = uint64_t;
  // Chained block hash: f(previous block's hash, this block's token ids).
  using BlockHasher = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> block_tokens);

  // `num_blocks` and `block_size` must be positive (the scheduler's config check guarantees it).
  // `hasher` replaces the built-in hash; tests pass a weak one to prove that colliding hashes
  // never make a sequence reuse someone else's block.
  BlockManager(int32_t num_blocks, int32_t block_size, BlockHasher hasher = nullptr);

  // Blocks needed to hold `num_tokens` tokens.
  int32_t BlocksFor(int64_t num_tokens) const {
    return static_cast<int32_t>((num_tokens + block_size_ - 1) / block_size_);
  }

  // Tokens of `tokens` that Allocate() would find in the prefix cache right now. Capped so that
  // the last token is always recomputed (its logits are needed) and the sequence never writes
  // into a shared block: min(hit_full_blocks * B, floor((len - 1) / B) * B). No state change.
  int32_t LookupPrefix(std::span<const int32_t> tokens) const;

  // Creates the block table of a new (or resumed after preemption) sequence: reuses the cached
  // prefix that LookupPrefix reports, then adds fresh blocks so the table covers
  // max(cached, num_slots) tokens. Returns the number of cached tokens (the sequence computes from
  // there). RESOURCE_EXHAUSTED, with nothing changed, when free plus evictable blocks are too few;
  // ALREADY_EXISTS if the sequence has a table.
  absl::StatusOr<int32_t> Allocate(SeqId seq, std::span<const int32_t> tokens, int32_t num_slots);

  // Number of fresh blocks Grow(seq, num_slots) would take (0 if the table is long enough).
  int32_t BlocksNeeded(SeqId seq, int64_t num_slots) const;
  // Extends the table to cover `num_slots` tokens, evicting cached blocks (LRU) when the free
  // list is empty. RESOURCE_EXHAUSTED, with nothing changed, when there are not enough blocks;
  // NOT_FOUND for an unknown sequence.
  absl::Status Grow(SeqId seq, int64_t num_slots);

  // Registers in the prefix cache the full blocks of `seq` whose tokens are all computed
  // (positions < num_computed), so later sequences with the same prefix reuse them. `tokens` is
  // the sequence's token ids (at least num_computed of them). Blocks already registered are
  // skipped, so calling it after every step costs only the new blocks.
  void RegisterComputed(SeqId seq, std::span<const int32_t> tokens, int64_t num_computed);

  // Drops the sequence's table. Registered blocks nobody else references become cached
  // (evictable); the rest go back to the free list. NOT_FOUND for an unknown sequence.
  absl::Status Free(SeqId seq);

  // The sequence's block table (empty if unknown).
  std::span<const int32_t> Table(SeqId seq) const;
  bool HasTable(SeqId seq) const { return seqs_.contains(seq); }
  int32_t ref_count(int32_t block) const { return blocks_[block].ref_count; }

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_cached() const { return static_cast<int32_t>(lru_.size()); }
  int32_t num_used() const { return num_blocks_ - num_free() - num_cached(); }
  // Blocks a fresh allocation can take: free ones plus evictable cached ones.
  int32_t num_available() const { return num_free() + num_cached(); }
  // Fraction of blocks referenced by live sequences (cached blocks are reclaimable, not used).
  double usage() const { return static_cast<double>(num_used()) / num_blocks_; }

  int64_t prefix_lookups_total() const { return prefix_lookups_total_; }
  int64_t prefix_hits_total() const { return prefix_hits_total_; }
  int64_t prefix_hit_tokens_total() const { return prefix_hit_tokens_total_; }

  // Full consistency check (O(num_blocks + table entries)); for tests and debug builds.
  // Verifies: ref counts equal the number of tables referencing each block, no table lists a block
  // twice, free blocks are unreferenced and unregistered, cached blocks are unreferenced and
  // registered, free + used + cached == num_blocks, and the hash index matches the blocks.
  absl::Status CheckInvariants() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    // Registered: this block's id is the hash index entry for `hash`, and `tokens`, `parent`
    // and `parent_gen` hold what a lookup must match.
    bool registered = false;
    uint64_t hash = 0;
    int32_t parent = -1;      // registered block holding the previous B tokens, -1 for the first
    uint32_t parent_gen = 0;  // parent's generation when this block was registered
    // Bumped whenever the block is evicted (loses its content), so a child registered under the
    // old content can never be matched through the block's new content.
    uint32_t gen = 0;
    std::vector<int32_t> tokens;
    bool in_lru = false;
    std::list<int32_t>::iterator lru_pos;
  };

  struct SeqBlocks {
    std::vector<int32_t> table;
    // Leading full blocks already offered to the prefix cache, and the chain state after them:
    // the chained hash and the identity of the registered block with that content (which may be
    // another sequence's block holding the same tokens, when both computed it independently).
    int32_t num_hashed = 0;
    uint64_t chain_hash = 0;
    int32_t chain_block = -1;
    uint32_t chain_gen = 0;
    // Set when a hash collided with different content: later blocks cannot be found by lookups
    // (they stop at the collision), so registering them would only waste cache entries.
    bool stop_registering = false;
  };

  struct Match {
    std::vector<int32_t> blocks;  // registered blocks to reuse, in order
    uint64_t chain_hash = 0;      // chained hash after those blocks
  };

  Match FindPrefix(std::span<const int32_t> tokens) const;
  // Takes a block for new content: free list first, else evicts the least recently used cached
  // block. The caller has checked num_available().
  int32_t TakeFreshBlock();
  void Evict(int32_t block);
  void Release(int32_t block);

  int32_t num_blocks_;
  int32_t block_size_;
  BlockHasher hash_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // cached blocks; front = least recently used = evicted first
  absl::flat_hash_map<uint64_t, int32_t> index_;  // chained hash -> registered block
  absl::flat_hash_map<SeqId, SeqBlocks> seqs_;

  int64_t prefix_lookups_total_ = 0;
  int64_t prefix_hits_total_ = 0;
  int64_t prefix_hit_tokens_total_ = 0;
};

}  // namespace caduceus::router
