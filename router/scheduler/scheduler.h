// Iteration-level continuous batching for one replica: decides, step by step, which sequences
// compute which new tokens, and owns their KV block tables (through BlockManager).
//
// Policy (see README.md): running decodes first (1 token each), then running chunked prefills,
// then admission of waiting sequences in rank order while max_num_seqs, the step's token budget
// and free KV blocks allow, and while the head of the queue does not share a prefix that a
// running sequence is computing (it waits a step or two and reuses those blocks). When a
// running sequence needs a block and none is left (after evicting cached prefix blocks), the
// lowest-ranked running sequence is preempted by recompute: its blocks are freed and it goes
// back to the waiting queue, in rank order, with all its tokens.
//
// Rank: a request's priority (lower values first, vLLM's convention; 0 by default), then age.
// With one priority this is strict FCFS, and only newer sequences are ever preempted for an
// older one, so the oldest always progresses. A waiting sequence of a lower priority value than
// the lowest-ranked running one also preempts it when the batch (max_num_seqs) or the KV cache
// is full: urgent requests (a clinician waiting) overtake background ones (batch summaries),
// which may starve while urgent work keeps coming; that is what priorities are for.
//
// Step lifecycle, from the router's single loop thread:
//   step = Schedule();           // plan; positions advance as if the step will run
//   ...worker executes step...
//   OnSampled(id, token)         // for every entry with sample = true (or Finish(id))
//   Finish(id)                   // any time: stop, length, cancel, deadline
//   [AbortStep()]                // instead, when the worker did not execute the step
// Calling Schedule() again confirms that the previous step ran: its computed full blocks enter
// the prefix cache only then, so no sequence ever reuses a block before its KV was written.
//
// Pipelining (the router's --pipeline-depth 2): while step N runs, the router plans step N+1
// with ScheduleAhead() and sends it, so the worker never waits for the router between steps.
// A decode whose token step N has yet to sample gets kSampledTokenPlaceholder, which the worker
// resolves. When step N's result comes back the router reports its tokens (OnSampled), calls
// ConfirmStep(), and plans N+2 ahead of N+1. This relies on the worker executing steps in the
// order they were sent (one leader, one step thread); it is what makes it safe to free, reuse
// or cache blocks that a step still in flight writes: every later step runs after it. A
// sequence finished while it is in a step in flight computes one wasted token there. Planning
// ahead never preempts; when blocks run short it returns must_drain, and the router lets the
// steps in flight finish and plans with Schedule(), which may.
//
// Speculative decoding (config.speculative_tokens > 0): after the decodes are planned, each one
// whose last token is known gets up to that many guesses from the sequence's own history
// (ProposeNgramDraft), while the step's token budget and the free KV blocks allow (guesses never
// preempt and never evict cached prefix blocks). The worker verifies them and the router reports
// the accepted guesses plus the token after them (OnSampled's span form); positions of rejected
// guesses are rolled back. A sequence with guesses in flight is not planned ahead (the position
// of its next token is unknown until the result), so guesses and pipelining exclude each other:
// while speculating() the router plans one step at a time, and guesses stop when more than
// speculative_max_running sequences run (compute-bound batches), where the router pipelines
// again.
//
// Not thread-safe: one thread (the router's loop for this replica) owns the scheduler.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "router/scheduler/block_manager.h"
#include "router/scheduler/scheduled_step.h"
#include "router/scheduler/scheduler_config.h"

namespace caduceus::router {

class Scheduler {
 public:
  using SeqId = uint64_t;

  // INVALID_ARGUMENT for a bad config (see ValidateSchedulerConfig).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerConfig& config);

  // Queues a request. INVALID_ARGUMENT when it can never run (empty prompt, max_new_tokens < 1,
  // prompt + max_new_tokens more than the whole KV cache, prompt longer than the waiting-queue
  // token limit); ALREADY_EXISTS for a known id; RESOURCE_EXHAUSTED when the waiting queue is at
  // its request or token limit (retry later or on another replica). `arrival_time` is kept for
  // queue-age metrics; order is the order of Add calls.
  //
  // `generated`: tokens the request already produced elsewhere (a replica that failed while it
  // ran). They are recomputed with the prompt, as after a preemption, and count against
  // max_new_tokens; INVALID_ARGUMENT unless at least one new token is left.
  //
  // `max_reused_prefix`: at most this many leading tokens come from the prefix cache (a scored
  // request must compute the positions whose logits it scores).
  //
  // `priority`: lower values are admitted first and may preempt running sequences of higher
  // values (see the policy note above); equal values are served in Add order.
  absl::Status Add(SeqId seq, std::vector<int32_t> prompt_ids, int32_t max_new_tokens,
                   absl::Time arrival_time, std::span<const int32_t> generated = {},
                   int32_t max_reused_prefix = std::numeric_limits<int32_t>::max(),
                   int32_t priority = 0);

  // Plans the next step (possibly empty: nothing to do, or everything waits for blocks). No step
  // may be in flight: every earlier step counts as executed (ConfirmStep) from here on.
  ScheduledStep Schedule();

  // Plans the next step while earlier ones are in flight (see the pipelining note above): like
  // Schedule, but without confirming them and without preempting; a sequence waiting for one
  // token from a step in flight decodes it as kSampledTokenPlaceholder. Empty with must_drain
  // when running sequences need blocks that only a preemption would free, or when the head of
  // the waiting queue is due to preempt a running sequence of a higher priority value.
  ScheduledStep ScheduleAhead();

  // The oldest step in flight ran (its result came back and was reported): its computed full
  // blocks may now serve other sequences' prefixes.
  void ConfirmStep();
  int32_t steps_in_flight() const { return static_cast<int32_t>(unconfirmed_.size()); }

  // Appends the token sampled for an entry with sample = true (tokens of steps in flight are
  // reported in step order). FAILED_PRECONDITION when the sequence is not waiting for a token,
  // NOT_FOUND for an unknown id. After the
  // max_new_tokens-th token the sequence's blocks are released at once (it will never be
  // scheduled again); Finish is still needed to forget it.
  absl::Status OnSampled(SeqId seq, int32_t token);
  // The same for an entry with draft tokens: the guesses the worker accepted, in order, then the
  // token it sampled after them (so 1 + accepted tokens). INVALID_ARGUMENT when more guesses are
  // reported accepted than were planned, or for an empty span.
  absl::Status OnSampled(SeqId seq, std::span<const int32_t> tokens);

  // Forgets a sequence, waiting, running or done, and frees its blocks (its computed full blocks
  // stay in the prefix cache). NOT_FOUND for an unknown id. May be called while a step with the
  // sequence is in flight only if the worker runs steps in order (see the pipelining note): the
  // blocks may go to another sequence in the next plan, and the step in flight writes into them
  // first.
  absl::Status Finish(SeqId seq);

  // The newest step was not executed (e.g. the RPC failed before the worker ran it, or the worker
  // rejected the plan without changing state): its positions are rolled back and first_step
  // flags restored, so the next Schedule() plans the same work again. If the replica itself was
  // lost, its KV cache is gone with it: discard this scheduler instead and re-add the requests.
  // With several steps in flight a failure leaves the worker's state unknown: discard the
  // scheduler then too.
  void AbortStep();

  bool Contains(SeqId seq) const { return seqs_.contains(seq); }
  // Prompt plus generated tokens (empty for an unknown id).
  std::span<const int32_t> Tokens(SeqId seq) const;

  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  // Tokens the waiting sequences would compute if admitted without prefix reuse.
  int64_t waiting_tokens() const { return waiting_tokens_; }
  std::optional<absl::Time> oldest_waiting_arrival() const;
  double kv_usage() const { return blocks_.usage(); }
  int64_t preemptions_total() const { return preemptions_total_; }
  // Speculative decoding: guesses planned, and guesses the worker accepted.
  int64_t draft_tokens_total() const { return draft_tokens_total_; }
  // Whether the next plan would add guesses (speculation on, and the batch small enough).
  bool speculating() const {
    return config_.speculative_tokens > 0 && num_running() <= config_.speculative_max_running;
  }
  int64_t accepted_draft_tokens_total() const { return accepted_draft_tokens_total_; }
  int64_t prefix_hits_total() const { return blocks_.prefix_hits_total(); }
  int64_t prefix_hit_tokens_total() const { return blocks_.prefix_hit_tokens_total(); }
  const BlockManager& block_manager() const { return blocks_; }
  const SchedulerConfig& config() const { return config_; }

  // BlockManager::CheckInvariants plus the scheduler's own: limits respected, every sequence in
  // exactly one state, running sequences own tables covering their computed tokens and waiting
  // ones none, queues in rank order with every running sequence older than every waiting one of
  // the same priority, waiting_tokens() equal to the sum it summarizes.
  absl::Status CheckInvariants() const;

 private:
  enum class State { kWaiting, kRunning, kDone };

  struct Sequence {
    SeqId id = 0;
    uint64_t order = 0;  // Add order: smaller is older
    int32_t priority = 0;  // smaller is more urgent
    std::vector<int32_t> tokens;  // prompt + generated
    int32_t prompt_len = 0;
    int32_t max_new_tokens = 0;
    int32_t max_reused_prefix = 0;
    absl::Time arrival_time;
    State state = State::kWaiting;
    int32_t num_computed = 0;     // tokens whose KV is (or, once the last step runs, will be) cached
    bool first_step = true;       // next entry starts a new incarnation on the worker
    // Entries with sample = true whose token is not reported yet: 0, 1, or 2 when a decode of
    // the pending token was planned ahead. Then num_computed == tokens.size() + unsampled - 1.
    int32_t unsampled = 0;
    int32_t planned = 0;          // tokens planned in the step being built
    std::vector<int32_t> draft;   // guesses planned in the step being built (within `planned`)
    // Guesses of the entry in flight (then unsampled == 1): num_computed counts them until the
    // result says how many were right.
    int32_t drafts_in_flight = 0;
    // Guesses its next decode may carry: one more than the worker accepted last time (at most
    // speculative_tokens), so a sequence whose guesses keep failing costs one row per step, and
    // one being copied or looping soon gets the full length. Starts at speculative_tokens.
    int32_t draft_limit = 0;
    // Long histories (> kNgramIndexFrom tokens) find their guesses through an index instead of
    // a scan per step.
    std::unique_ptr<NgramIndex> ngram_index;
    int32_t generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
  };

  // One entry of the last step, for AbortStep and for prefix registration on confirmation.
  struct Executed {
    SeqId id;
    int32_t num_tokens;
    bool was_first_step;
    bool sampled;
    int32_t drafts;
  };

  explicit Scheduler(const SchedulerConfig& config);

  // Both entry points: `ahead` plans while steps are in flight (no confirmation, no preemption,
  // placeholders for pending tokens).
  ScheduledStep PlanStep(bool ahead);
  // Ahead planning: the running sequences that could compute a token now would need more blocks
  // than are available.
  bool BlocksShortAhead() const;
  // Whether running sequence s can decode one token in this step (its last token is known, or,
  // ahead, pending from a step in flight and not its last).
  static bool CanDecode(const Sequence& s, bool ahead);
  // Whether running sequence s has more than one known token left to compute (a prompt chunk or
  // a recompute), with no token of its own in flight.
  static bool CanPrefill(const Sequence& s);
  // Makes room for `slots` tokens in running_[index]'s table, preempting lower-ranked running
  // sequences (lowest first, only if allowed) while blocks are short. False when even that is not enough;
  // then the sequence skips this step, keeping its blocks (an older sequence may still preempt
  // it).
  bool EnsureSlots(size_t index, int64_t slots, bool may_preempt, ScheduledStep& step,
                   int32_t& budget);
  // Frees a running sequence's blocks and puts it back in the waiting queue (by rank).
  void Preempt(Sequence* seq, ScheduledStep& step, int32_t& budget);
  // Admits waiting sequences in rank order while limits allow; stops at the first that does not
  // fit, and at the first whose prefix a running sequence is computing (see
  // PrefixBeingComputed). A head that outranks the lowest running sequence by priority preempts
  // it (if allowed) when the batch is full or its blocks are short.
  void Admit(bool may_preempt, int32_t& budget, std::vector<Sequence*>& plan, ScheduledStep& step);
  // Whether the head of the waiting queue has a lower priority value than the lowest-ranked
  // running sequence (and so may preempt it).
  bool HeadOutranksLowestRunning() const;
  // Ahead planning: the head of the queue is due to preempt (HeadOutranksLowestRunning, and the
  // batch is full or the free blocks do not hold its first chunk).
  bool PriorityPreemptionDue() const;
  // Ranking: priority, then age.
  static bool RanksBefore(const Sequence* a, const Sequence* b) {
    return a->priority != b->priority ? a->priority < b->priority : a->order < b->order;
  }
  void InsertWaiting(Sequence* seq);
  void InsertRunning(Sequence* seq);
  // Leading tokens of `s` (whole blocks, at most `cap`) that a running sequence computes in this
  // step or in one in flight: the prefix cache will hold them once that step is confirmed.
  // Admitted now, `s` would compute them again (choices of a multiple-choice question sent
  // together, a burst of chats with one system prompt), so it waits a step or two instead.
  int32_t PrefixBeingComputed(const Sequence& s, int32_t cap) const;
  void Plan(Sequence* seq, int32_t n, int32_t& budget, std::vector<Sequence*>& plan);
  // Speculative decoding: appends guesses to the decodes planned in this step (see above).
  void PlanDrafts(int32_t& budget);
  void RemoveFromRunning(Sequence* seq);
  void RemoveFromWaiting(Sequence* seq);
  // Releases the blocks of a running sequence, keeping its computed full blocks cached.
  void ReleaseBlocks(Sequence* seq);

  SchedulerConfig config_;
  BlockManager blocks_;
  absl::flat_hash_map<SeqId, std::unique_ptr<Sequence>> seqs_;
  std::deque<Sequence*> waiting_;   // highest rank first (RanksBefore)
  std::vector<Sequence*> running_;  // highest rank first
  int64_t waiting_tokens_ = 0;
  uint64_t next_order_ = 0;
  std::deque<std::vector<Executed>> unconfirmed_;  // steps in flight, oldest first
  int64_t preemptions_total_ = 0;
  int64_t draft_tokens_total_ = 0;
  int64_t accepted_draft_tokens_total_ = 0;
};

}  // namespace caduceus::router
