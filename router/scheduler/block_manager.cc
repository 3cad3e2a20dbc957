#include "router/scheduler/block_manager.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"

namespace caduceus::router {
namespace {

constexpr uint64_t kChainSeed = 0x9e3779b97f4a7c15ULL;

// splitmix64 finalizer: cheap and well mixed. The hash only indexes the prefix cache (hits are
// verified against the token ids), so it needs spread, not cryptographic strength; it is our own
// rather than absl::Hash so values are the same in every process, which keeps runs reproducible.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t ChainHash(uint64_t parent_hash, std::span<const int32_t> block_tokens) {
  uint64_t h = Mix(parent_hash);
  for (int32_t t : block_tokens) h = Mix(h ^ static_cast<uint32_t>(t));
  return h;
}

bool SameTokens(const std::vector<int32_t>& a, std::span<const int32_t> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

}  // namespace

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, BlockHasher hasher)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      hash_(hasher != nullptr ? hasher : &ChainHash),
      blocks_(num_blocks) {
  // Pop from the back: hand out low block ids first, which makes test output easier to read.
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

BlockManager::Match BlockManager::FindPrefix(std::span<const int32_t> tokens) const {
  Match match;
  match.chain_hash = kChainSeed;
  if (tokens.empty()) return match;
  // The cap: only blocks entirely before the last token. The block holding the last token is
  // always private, because the step that computes that token writes into it.
  const size_t max_blocks = (tokens.size() - 1) / block_size_;
  int32_t parent = -1;
  uint32_t parent_gen = 0;
  for (size_t i = 0; i < max_blocks; ++i) {
    const auto slice = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = hash_(match.chain_hash, slice);
    auto it = index_.find(h);
    if (it == index_.end()) break;
    const Block& b = blocks_[it->second];
    if (b.parent != parent || b.parent_gen != parent_gen || !SameTokens(b.tokens, slice)) break;
    match.blocks.push_back(it->second);
    match.chain_hash = h;
    parent = it->second;
    parent_gen = b.gen;
  }
  return match;
}

int32_t BlockManager::LookupPrefix(std::span<const int32_t> tokens) const {
  return static_cast<int32_t>(FindPrefix(tokens).blocks.size()) * block_size_;
}

absl::StatusOr<int32_t> BlockManager::Allocate(SeqId seq, std::span<const int32_t> tokens,
                                               int32_t num_slots) {
  if (seqs_.contains(seq)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq, " already has a block table"));
  }
  Match match = FindPrefix(tokens);
  const int32_t cached = static_cast<int32_t>(match.blocks.size()) * block_size_;
  const int32_t need_total = BlocksFor(std::max(cached, num_slots));
  const int32_t need_fresh = need_total - static_cast<int32_t>(match.blocks.size());
  // Reused blocks that sit in the cached pool stop being evictable, so they do not count as
  // room for the fresh ones.
  int32_t reused_from_pool = 0;
  for (int32_t b : match.blocks) reused_from_pool += blocks_[b].ref_count == 0 ? 1 : 0;
  if (need_fresh > num_available() - reused_from_pool) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "sequence ", seq, " needs ", need_fresh, " fresh KV blocks; ",
        num_available() - reused_from_pool, " available"));
  }
  ++prefix_lookups_total_;
  if (cached > 0) {
    ++prefix_hits_total_;
    prefix_hit_tokens_total_ += cached;
  }
  SeqBlocks& sb = seqs_[seq];
  sb.table.reserve(need_total);
  // Claim the reused blocks before taking fresh ones, so eviction cannot pick them.
  for (int32_t b : match.blocks) {
    Block& block = blocks_[b];
    if (block.in_lru) {
      lru_.erase(block.lru_pos);
      block.in_lru = false;
    }
    ++block.ref_count;
    sb.table.push_back(b);
  }
  for (int32_t i = 0; i < need_fresh; ++i) sb.table.push_back(TakeFreshBlock());
  sb.num_hashed = static_cast<int32_t>(match.blocks.size());
  sb.chain_hash = match.chain_hash;
  if (!match.blocks.empty()) {
    sb.chain_block = match.blocks.back();
    sb.chain_gen = blocks_[sb.chain_block].gen;
  }
  return cached;
}

int32_t BlockManager::BlocksNeeded(SeqId seq, int64_t num_slots) const {
  auto it = seqs_.find(seq);
  const int32_t have = it == seqs_.end() ? 0 : static_cast<int32_t>(it->second.table.size());
  return std::max(0, BlocksFor(num_slots) - have);
}

absl::Status BlockManager::Grow(SeqId seq, int64_t num_slots) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no block table for ", seq));
  const int32_t need = BlocksNeeded(seq, num_slots);
  if (need > num_available()) {
    return absl::ResourceExhaustedError(absl::StrCat("sequence ", seq, " needs ", need,
                                                     " more KV blocks; ", num_available(),
                                                     " available"));
  }
  for (int32_t i = 0; i < need; ++i) it->second.table.push_back(TakeFreshBlock());
  return absl::OkStatus();
}

void BlockManager::RegisterComputed(SeqId seq, std::span<const int32_t> tokens,
                                    int64_t num_computed) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  SeqBlocks& sb = it->second;
  if (sb.stop_registering) return;
  const int64_t full = std::min<int64_t>(
      {num_computed / block_size_, static_cast<int64_t>(sb.table.size()),
       static_cast<int64_t>(tokens.size()) / block_size_});
  for (int64_t i = sb.num_hashed; i < full; ++i) {
    const auto slice = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = hash_(sb.chain_hash, slice);
    const int32_t own = sb.table[i];
    int32_t canonical;
    auto found = index_.find(h);
    if (found == index_.end()) {
      // Our block holds this content and nobody registered it yet: it becomes the cached copy.
      // (A block in our table past num_hashed was allocated fresh, so it is not registered.)
      Block& b = blocks_[own];
      assert(!b.registered);
      b.registered = true;
      b.hash = h;
      b.parent = sb.chain_block;
      b.parent_gen = sb.chain_gen;
      b.tokens.assign(slice.begin(), slice.end());
      index_.emplace(h, own);
      canonical = own;
    } else {
      const Block& other = blocks_[found->second];
      if (other.parent == sb.chain_block && other.parent_gen == sb.chain_gen &&
          SameTokens(other.tokens, slice)) {
        // Same content computed twice (two sequences prefilled it in the same steps). Keep the
        // registered copy; ours stays private and returns to the free list when freed. Our
        // later blocks chain to the registered copy, since that is the path lookups take.
        canonical = found->second;
      } else {
        sb.stop_registering = true;  // a genuine hash collision; stay correct, lose reuse
        return;
      }
    }
    sb.num_hashed = static_cast<int32_t>(i + 1);
    sb.chain_hash = h;
    sb.chain_block = canonical;
    sb.chain_gen = blocks_[canonical].gen;
  }
}

absl::Status BlockManager::Free(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no block table for ", seq));
  // Release the tail first: cached blocks are evicted in release order, so a sequence's last
  // blocks go before its first ones, and shared prefixes (system prompts) survive longest.
  const std::vector<int32_t>& table = it->second.table;
  for (auto b = table.rbegin(); b != table.rend(); ++b) Release(*b);
  seqs_.erase(it);
  return absl::OkStatus();
}

void BlockManager::Release(int32_t block) {
  Block& b = blocks_[block];
  assert(b.ref_count > 0);
  if (--b.ref_count > 0) return;
  if (b.registered) {
    b.lru_pos = lru_.insert(lru_.end(), block);
    b.in_lru = true;
  } else {
    free_.push_back(block);
  }
}

int32_t BlockManager::TakeFreshBlock() {
  int32_t block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else {
    assert(!lru_.empty());
    block = lru_.front();
    Evict(block);
  }
  blocks_[block].ref_count = 1;
  return block;
}

void BlockManager::Evict(int32_t block) {
  Block& b = blocks_[block];
  lru_.erase(b.lru_pos);
  b.in_lru = false;
  index_.erase(b.hash);
  b.registered = false;
  b.tokens.clear();
  b.parent = -1;
  ++b.gen;
}

std::span<const int32_t> BlockManager::Table(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return {};
  return it->second.table;
}

absl::Status BlockManager::CheckInvariants() const {
  std::vector<int32_t> refs(num_blocks_, 0);
  for (const auto& [seq, sb] : seqs_) {
    std::vector<int32_t> sorted = sb.table;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return absl::InternalError(absl::StrCat("sequence ", seq, " lists a block twice"));
    }
    for (int32_t b : sb.table) {
      if (b < 0 || b >= num_blocks_) {
        return absl::InternalError(absl::StrCat("sequence ", seq, " lists bad block ", b));
      }
      ++refs[b];
    }
    if (sb.num_hashed > static_cast<int32_t>(sb.table.size())) {
      return absl::InternalError(absl::StrCat("sequence ", seq, " hashed past its table"));
    }
  }
  std::vector<int8_t> listed(num_blocks_, 0);
  for (int32_t b : free_) {
    if (listed[b]++) return absl::InternalError(absl::StrCat("block ", b, " listed twice"));
    if (refs[b] != 0 || blocks_[b].registered) {
      return absl::InternalError(absl::StrCat("free block ", b, " is referenced or registered"));
    }
  }
  for (int32_t b : lru_) {
    if (listed[b]++) return absl::InternalError(absl::StrCat("block ", b, " listed twice"));
    if (refs[b] != 0 || !blocks_[b].registered || !blocks_[b].in_lru) {
      return absl::InternalError(absl::StrCat("cached block ", b, " is referenced or unregistered"));
    }
  }
  int32_t used = 0;
  for (int32_t b = 0; b < num_blocks_; ++b) {
    const Block& block = blocks_[b];
    if (block.ref_count != refs[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " ref_count ", block.ref_count,
                                              " but ", refs[b], " tables reference it"));
    }
    if (refs[b] > 0) {
      ++used;
      if (listed[b]) {
        return absl::InternalError(absl::StrCat("block ", b, " is referenced and free/cached"));
      }
    } else if (!listed[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " is unreferenced and not listed"));
    }
    if (block.registered) {
      auto it = index_.find(block.hash);
      if (it == index_.end() || it->second != b) {
        return absl::InternalError(absl::StrCat("registered block ", b, " missing from index"));
      }
      if (static_cast<int32_t>(block.tokens.size()) != block_size_) {
        return absl::InternalError(absl::StrCat("registered block ", b, " is not full"));
      }
    }
  }
  for (const auto& [hash, b] : index_) {
    if (!blocks_[b].registered || blocks_[b].hash != hash) {
      return absl::InternalError(absl::StrCat("index entry points at block ", b, " wrongly"));
    }
  }
  if (num_free() + used + num_cached() != num_blocks_) {
    return absl::InternalError(absl::StrCat("free ", num_free(), " + used ", used, " + cached ",
                                            num_cached(), " != ", num_blocks_));
  }
  return absl::OkStatus();
}

}  // namespace caduceus::router
