// Test-only stand-in for a worker replica: a paged "KV cache" that records which (position,
// token) was written into each slot, and a deterministic "model" whose next token is a hash of
// every (position, token) it reads back through the block table. A scheduler that hands a
// sequence a block holding someone else's tokens, reuses a prefix before it was written, or lets
// two sequences write one block changes the generated tokens, and Execute reports the first
// such violation directly. Draft tokens (speculative decoding) are verified against the model
// as the real worker does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "router/scheduler/block_manager.h"
#include "router/scheduler/scheduled_step.h"

namespace caduceus::router::testing {

// Every live sequence's tokens as the router knows them (prompt + tokens reported so far).
using Truth = absl::flat_hash_map<uint64_t, std::vector<int32_t>>;

// (sequence id, tokens): for each entry with sample = true, the accepted draft tokens and then
// the sampled one.
using Sampled = std::vector<std::pair<uint64_t, std::vector<int32_t>>>;

class FakeWorker {
 public:
  // `copying`: the model mostly repeats the token three positions back (see NextToken), so
  // outputs fall into loops that n-gram drafts predict, and sometimes break out of them.
  FakeWorker(int32_t num_blocks, int32_t block_size, int32_t vocab_size, bool copying = false)
      : block_size_(block_size),
        vocab_size_(vocab_size),
        copying_(copying),
        slot_pos_(static_cast<size_t>(num_blocks) * block_size, -1),
        slot_token_(static_cast<size_t>(num_blocks) * block_size, -1) {}

  // The model: a pure function of the sequence, positions included. `copying`: three times in
  // four (decided by the same hash) it repeats the token three positions back instead.
  static int32_t NextToken(std::span<const int32_t> tokens, int32_t vocab_size,
                           bool copying = false) {
    uint64_t h = 0x243f6a8885a308d3ULL;
    for (size_t p = 0; p < tokens.size(); ++p) {
      h ^= (static_cast<uint64_t>(p) << 32) | static_cast<uint32_t>(tokens[p]);
      h *= 0x100000001b3ULL;
      h ^= h >> 29;
    }
    if (copying && tokens.size() >= 3 && (h >> 40) % 4 != 0) return tokens[tokens.size() - 3];
    return static_cast<int32_t>(h % static_cast<uint64_t>(vocab_size));
  }

  // Executes `step` and returns what it samples (see Sampled). Validates the
  // whole step before writing anything, as a step's reads must not depend on its own writes.
  // `pipelined`: the step was planned ahead (Scheduler::ScheduleAhead), so by the time it runs a
  // block it writes may already be cached or handed on to a later step, which runs after it; the
  // ownership check is skipped then, and the read checks alone catch stale or foreign KV.
  absl::StatusOr<Sampled> Execute(const ScheduledStep& step, const BlockManager& blocks,
                                  const Truth& truth, bool pipelined = false) {
    absl::flat_hash_map<int32_t, uint64_t> writer_of_block;
    for (const StepEntry& e : step.entries) {
      auto it = truth.find(e.seq_id);
      if (it == truth.end()) return Bad(e, "is not a live sequence");
      const std::vector<int32_t>& seq = it->second;
      const int64_t n = static_cast<int64_t>(e.tokens.size());
      const int64_t end = e.start_pos + n;
      // Draft tokens are guesses past the known tokens.
      const int64_t known = n - e.draft_tokens;
      const int64_t known_end = e.start_pos + known;
      if (known < 1 || e.draft_tokens < 0 || e.start_pos < 0 ||
          known_end > static_cast<int64_t>(seq.size())) {
        return Bad(e, absl::StrCat("covers [", e.start_pos, ", ", known_end, ") of ", seq.size()));
      }
      if (e.draft_tokens > 0 && !e.sample) return Bad(e, "has draft tokens but does not sample");
      if (!std::equal(e.tokens.begin(), e.tokens.begin() + known, seq.begin() + e.start_pos)) {
        return Bad(e, "carries tokens that are not the sequence's");
      }
      if (static_cast<int64_t>(e.block_table.size()) != (end + block_size_ - 1) / block_size_) {
        return Bad(e, absl::StrCat("has ", e.block_table.size(), " blocks for ", end, " tokens"));
      }
      if (e.sample != (known_end == static_cast<int64_t>(seq.size()))) {
        return Bad(e, "samples somewhere other than the end of the known tokens");
      }
      if (e.first_step) {
        if (!std::equal(e.prefix_ids.begin(), e.prefix_ids.end(), seq.begin(),
                        seq.begin() + e.start_pos)) {
          return Bad(e, "has wrong prefix_ids");
        }
      } else if (!e.prefix_ids.empty()) {
        return Bad(e, "sends prefix_ids on a later step");
      }
      // Reads: every earlier position must hold exactly this sequence's token.
      for (int64_t p = 0; p < e.start_pos; ++p) {
        const size_t slot = Slot(e, p);
        if (slot_pos_[slot] != p || slot_token_[slot] != seq[p]) {
          return Bad(e, absl::StrCat("reads stale KV at position ", p, " (block ",
                                     e.block_table[p / block_size_], ")"));
        }
      }
      // Writes: only into blocks no other table references, and by one entry per block.
      for (int64_t p = e.start_pos; p < end; ++p) {
        const int32_t b = e.block_table[p / block_size_];
        if (!pipelined && blocks.ref_count(b) != 1) {
          return Bad(e, absl::StrCat("writes block ", b, " with ref_count ",
                                     blocks.ref_count(b)));
        }
        auto [w, inserted] = writer_of_block.emplace(b, e.seq_id);
        if (!inserted && w->second != e.seq_id) {
          return Bad(e, absl::StrCat("writes block ", b, " also written by ", w->second));
        }
      }
    }
    for (const StepEntry& e : step.entries) {
      for (size_t i = 0; i < e.tokens.size(); ++i) {
        const int64_t p = e.start_pos + static_cast<int64_t>(i);
        slot_pos_[Slot(e, p)] = static_cast<int32_t>(p);
        slot_token_[Slot(e, p)] = e.tokens[i];
      }
    }
    Sampled sampled;
    for (const StepEntry& e : step.entries) {
      if (!e.sample) continue;
      // Attention reads the sequence back from the cache, not from the router's copy.
      const size_t known_end = e.start_pos + e.tokens.size() - e.draft_tokens;
      std::vector<int32_t> seen(known_end);
      for (size_t p = 0; p < seen.size(); ++p) seen[p] = slot_token_[Slot(e, p)];
      std::vector<int32_t> out;
      int32_t next = NextToken(seen, vocab_size_, copying_);
      // Each guess the model agrees with is kept, and the next row reads it from the cache.
      for (int32_t d = 0; d < e.draft_tokens && next == e.tokens[known_end - e.start_pos + d]; ++d) {
        out.push_back(next);
        seen.push_back(slot_token_[Slot(e, static_cast<int64_t>(seen.size()))]);
        next = NextToken(seen, vocab_size_, copying_);
      }
      out.push_back(next);
      sampled.emplace_back(e.seq_id, std::move(out));
    }
    return sampled;
  }

 private:
  size_t Slot(const StepEntry& e, int64_t pos) const {
    return static_cast<size_t>(e.block_table[pos / block_size_]) * block_size_ + pos % block_size_;
  }
  static absl::Status Bad(const StepEntry& e, const std::string& what) {
    return absl::InternalError(absl::StrCat("entry of sequence ", e.seq_id, " ", what));
  }

  int32_t block_size_;
  int32_t vocab_size_;
  bool copying_;
  std::vector<int32_t> slot_pos_;
  std::vector<int32_t> slot_token_;
};

}  // namespace caduceus::router::testing
