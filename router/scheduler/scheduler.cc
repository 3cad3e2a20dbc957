#include "router/scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::router {

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerConfig& config) {
  RETURN_IF_ERROR(ValidateSchedulerConfig(config));
  return std::unique_ptr<Scheduler>(new Scheduler(config));
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config), blocks_(config.num_blocks, config.block_size) {}

absl::Status Scheduler::Add(SeqId id, std::vector<int32_t> prompt_ids, int32_t max_new_tokens,
                            absl::Time arrival_time, std::span<const int32_t> generated,
                            int32_t max_reused_prefix, int32_t priority) {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("empty prompt");
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  if (static_cast<int64_t>(generated.size()) >= max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the request already has ", generated.size(),
                                                   " of its ", max_new_tokens, " new tokens"));
  }
  if (seqs_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " is already scheduled"));
  }
  const int64_t prompt_len = static_cast<int64_t>(prompt_ids.size());
  // What the sequence computes when admitted: its prompt and what it generated before it moved.
  const int64_t known = prompt_len + static_cast<int64_t>(generated.size());
  // Rejected up front because the no-starvation argument needs it: the oldest sequence can
  // always be given the whole cache, so it must fit in the whole cache.
  const int64_t total = prompt_len + max_new_tokens;
  if (blocks_.BlocksFor(total) > config_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request needs ", blocks_.BlocksFor(total), " KV blocks (", prompt_len,
        " prompt tokens + ", max_new_tokens, " max new tokens, ", config_.block_size,
        " tokens per block) but the replica has only ", config_.num_blocks,
        "; shorten the prompt or lower max_new_tokens"));
  }
  if (known > config_.max_waiting_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", known, " tokens exceeds the waiting-queue limit of ",
        config_.max_waiting_tokens, " tokens; shorten the prompt"));
  }
  if (static_cast<int64_t>(waiting_.size()) >= config_.max_waiting_requests ||
      waiting_tokens_ + known > config_.max_waiting_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "waiting queue full: ", waiting_.size(), " requests / ", waiting_tokens_,
        " tokens waiting (limits ", config_.max_waiting_requests, " / ",
        config_.max_waiting_tokens, "); retry later"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = id;
  seq->order = next_order_++;
  seq->tokens = std::move(prompt_ids);
  seq->tokens.insert(seq->tokens.end(), generated.begin(), generated.end());
  seq->prompt_len = static_cast<int32_t>(prompt_len);
  seq->max_new_tokens = max_new_tokens;
  seq->max_reused_prefix = std::max(0, max_reused_prefix);
  seq->arrival_time = arrival_time;
  seq->priority = priority;
  seq->draft_limit = config_.speculative_tokens;  // optimistic: the first guesses tell
  InsertWaiting(seq.get());
  waiting_tokens_ += known;
  seqs_.emplace(id, std::move(seq));
  return absl::OkStatus();
}

void Scheduler::ConfirmStep() {
  if (unconfirmed_.empty()) return;
  for (const Executed& e : unconfirmed_.front()) {
    auto it = seqs_.find(e.id);
    if (it == seqs_.end() || it->second->state != State::kRunning) continue;
    const Sequence& s = *it->second;
    // Positions of a later step in flight may be counted too: it runs before any step that
    // could reuse them. Tokens not reported yet are not (RegisterComputed stops at tokens.size()).
    blocks_.RegisterComputed(s.id, s.tokens, s.num_computed);
  }
  unconfirmed_.pop_front();
}

ScheduledStep Scheduler::Schedule() {
  while (!unconfirmed_.empty()) ConfirmStep();
  return PlanStep(/*ahead=*/false);
}

ScheduledStep Scheduler::ScheduleAhead() {
  if (BlocksShortAhead() || PriorityPreemptionDue()) {
    ScheduledStep step;
    step.must_drain = true;
    return step;
  }
  return PlanStep(/*ahead=*/true);
}

bool Scheduler::CanDecode(const Sequence& s, bool ahead) {
  const int64_t unfed = static_cast<int64_t>(s.tokens.size()) - s.num_computed;
  if (s.unsampled == 0) return unfed == 1;  // the last known token is the one to feed
  // Ahead: the token a step in flight samples is fed, unless it will be the sequence's last, or
  // its position depends on how many guesses of that step are accepted.
  return ahead && s.unsampled == 1 && unfed == 0 && s.drafts_in_flight == 0 &&
         s.generated() + 1 < s.max_new_tokens;
}

bool Scheduler::CanPrefill(const Sequence& s) {
  return s.unsampled == 0 && static_cast<int64_t>(s.tokens.size()) - s.num_computed > 1;
}

bool Scheduler::BlocksShortAhead() const {
  int64_t needed = 0;
  for (const Sequence* s : running_) {
    if (CanDecode(*s, /*ahead=*/true) || CanPrefill(*s)) {
      needed += blocks_.BlocksNeeded(s->id, s->num_computed + 1);
    }
  }
  return needed > blocks_.num_available();
}

ScheduledStep Scheduler::PlanStep(bool ahead) {
  ScheduledStep step;
  int32_t budget = config_.max_tokens_per_step;
  std::vector<Sequence*> plan;
  const bool may_preempt = !ahead;

  // 1. Decodes, highest rank (oldest) first: one token each. They come first because each is a user waiting
  //    for the next token, and max_tokens_per_step >= max_num_seqs means they all fit.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence* s = running_[i];
    if (!CanDecode(*s, ahead)) continue;
    if (!EnsureSlots(i, s->num_computed + 1, may_preempt, step, budget)) continue;
    Plan(s, 1, budget, plan);
  }

  // 1b. Guesses for those decodes (speculative decoding), before prefills take the budget: they
  //     are what makes the waiting users' tokens come faster.
  if (speculating()) PlanDrafts(budget);

  // 2. Running prefills (chunked, and recomputes after preemption), highest rank first. A chunk
  //    shrinks to the blocks there are; only when not a single token fits does the sequence
  //    preempt lower-ranked ones (possibly decodes planned above, whose budget is then returned).
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence* s = running_[i];
    if (s->planned > 0 || !CanPrefill(*s)) continue;  // decodes were handled in pass 1
    const int64_t remaining = static_cast<int64_t>(s->tokens.size()) - s->num_computed;
    const int64_t want = std::min<int64_t>({remaining, config_.prefill_chunk_tokens, budget});
    auto room = [&] {
      return static_cast<int64_t>(blocks_.Table(s->id).size()) * config_.block_size -
             s->num_computed + static_cast<int64_t>(blocks_.num_available()) * config_.block_size;
    };
    if (room() <= 0 && !EnsureSlots(i, s->num_computed + 1, may_preempt, step, budget)) continue;
    const int32_t n = static_cast<int32_t>(std::min(want, room()));
    if (!blocks_.Grow(s->id, s->num_computed + n).ok()) continue;  // room() says it fits
    Plan(s, n, budget, plan);
  }

  // 3. Admission. Skipped in a step that preempted: the blocks just freed are needed by the
  //    older running sequences, and re-admitting the victim at once would only thrash.
  if (step.preempted.empty()) Admit(may_preempt, budget, plan, step);

  // Materialize: the plan is final, positions advance now.
  std::vector<Executed>& executed = unconfirmed_.emplace_back();
  for (Sequence* s : plan) {
    if (s->state != State::kRunning || s->planned == 0) continue;  // preempted after planning
    const int32_t n = s->planned;
    s->planned = 0;
    StepEntry e;
    e.seq_id = s->id;
    e.start_pos = s->num_computed;
    if (s->unsampled > 0) {  // ahead: the token a step in flight samples (CanDecode)
      e.tokens.assign(1, kSampledTokenPlaceholder);
      e.sample = true;
    } else {
      const int32_t known = n - static_cast<int32_t>(s->draft.size());
      e.tokens.assign(s->tokens.begin() + e.start_pos, s->tokens.begin() + e.start_pos + known);
      e.sample = e.start_pos + known == static_cast<int32_t>(s->tokens.size());
      e.tokens.insert(e.tokens.end(), s->draft.begin(), s->draft.end());
      e.draft_tokens = static_cast<int32_t>(s->draft.size());
      s->drafts_in_flight = e.draft_tokens;
      draft_tokens_total_ += e.draft_tokens;
      s->draft.clear();
    }
    const auto table = blocks_.Table(s->id);
    e.block_table.assign(table.begin(), table.begin() + blocks_.BlocksFor(e.start_pos + n));
    e.prompt_len = s->prompt_len;
    e.first_step = s->first_step;
    if (e.first_step) e.prefix_ids.assign(s->tokens.begin(), s->tokens.begin() + e.start_pos);
    executed.push_back({s->id, n, s->first_step, e.sample, e.draft_tokens});
    s->first_step = false;
    s->num_computed += n;
    s->unsampled += e.sample ? 1 : 0;
    step.entries.push_back(std::move(e));
  }
  if (step.entries.empty()) unconfirmed_.pop_back();  // nothing will be in flight
  return step;
}

bool Scheduler::EnsureSlots(size_t index, int64_t slots, bool may_preempt, ScheduledStep& step,
                            int32_t& budget) {
  Sequence* s = running_[index];
  while (blocks_.BlocksNeeded(s->id, slots) > blocks_.num_available()) {
    // Nobody lower-ranked to take blocks from, or (planning ahead) no preemption allowed.
    if (!may_preempt || running_.size() <= index + 1) return false;
    Preempt(running_.back(), step, budget);
  }
  return blocks_.Grow(s->id, slots).ok();
}

void Scheduler::PlanDrafts(int32_t& budget) {
  for (Sequence* s : running_) {
    if (budget <= 0) return;
    // Decodes planned in pass 1 whose fed token is known (not a placeholder).
    if (s->planned != 1 || s->unsampled != 0) continue;
    // Every guess accepted plus the token after them must stay within max_new_tokens.
    const int32_t most = std::min({s->draft_limit, config_.speculative_tokens, budget,
                                   s->max_new_tokens - s->generated() - 1});
    if (most <= 0) continue;
    // Room in the sequence's table and in free blocks: a guess is not worth a cached prefix
    // block, let alone a preemption. Checked first: no room, no search of the history.
    const int64_t table_slots = static_cast<int64_t>(blocks_.Table(s->id).size()) * config_.block_size;
    const int64_t room = table_slots - (s->num_computed + 1) +
                         static_cast<int64_t>(blocks_.num_free()) * config_.block_size;
    const int32_t want = static_cast<int32_t>(std::min<int64_t>(most, room));
    if (want <= 0) continue;
    std::vector<int32_t> draft;
    if (s->tokens.size() > kNgramIndexFrom) {
      if (s->ngram_index == nullptr) s->ngram_index = std::make_unique<NgramIndex>(config_.ngram);
      draft = s->ngram_index->Propose(s->tokens, want);
    } else {
      draft = ProposeNgramDraft(s->tokens, config_.ngram, want);
    }
    if (draft.empty()) continue;
    const int32_t k = static_cast<int32_t>(draft.size());
    if (!blocks_.Grow(s->id, s->num_computed + 1 + k).ok()) continue;  // room says it fits
    s->planned += k;
    budget -= k;
    s->draft = std::move(draft);
  }
}

void Scheduler::Preempt(Sequence* seq, ScheduledStep& step, int32_t& budget) {
  budget += seq->planned;
  seq->planned = 0;
  seq->draft.clear();
  seq->drafts_in_flight = 0;
  ReleaseBlocks(seq);
  RemoveFromRunning(seq);
  seq->state = State::kWaiting;
  seq->num_computed = 0;
  seq->first_step = true;
  seq->unsampled = 0;  // Schedule (never ScheduleAhead) preempts: nothing is in flight
  // The victim is the lowest-ranked running sequence. With one priority it is older than
  // everything waiting, so it goes to the front and resumes before any newer request.
  InsertWaiting(seq);
  waiting_tokens_ += static_cast<int64_t>(seq->tokens.size());
  step.preempted.push_back(seq->id);
  ++preemptions_total_;
}

void Scheduler::Admit(bool may_preempt, int32_t& budget, std::vector<Sequence*>& plan,
                      ScheduledStep& step) {
  while (!waiting_.empty()) {
    Sequence* s = waiting_.front();
    // A sequence preempted in this step stays out of it (re-admitting it at once would thrash).
    if (std::find(step.preempted.begin(), step.preempted.end(), s->id) != step.preempted.end()) break;
    const bool full = static_cast<int32_t>(running_.size()) >= config_.max_num_seqs;
    const bool may_overtake = may_preempt && HeadOutranksLowestRunning();
    // A full batch admits nobody unless the head may preempt (which also returns budget).
    if (full ? !may_overtake : budget <= 0) break;
    const int32_t len = static_cast<int32_t>(s->tokens.size());
    // The prefix cache never serves a sequence's last token (see LookupPrefix), so looking up
    // only max_reused_prefix + 1 tokens reuses at most max_reused_prefix.
    std::span<const int32_t> lookup(s->tokens);
    if (s->max_reused_prefix < len) lookup = lookup.first(static_cast<size_t>(s->max_reused_prefix) + 1);
    const int32_t cached = blocks_.LookupPrefix(lookup);
    // The most the cache could serve it: whole blocks, never its last token, within its limit.
    const int32_t cap = std::min(s->max_reused_prefix, len - 1) / config_.block_size * config_.block_size;
    if (cached < cap && PrefixBeingComputed(*s, cap) > cached) break;  // the rest waits too
    if (full) {
      Preempt(running_.back(), step, budget);  // a full batch makes room for a more urgent one
      continue;
    }
    const int32_t n = std::min({len - cached, config_.prefill_chunk_tokens, budget});
    absl::StatusOr<int32_t> allocated = blocks_.Allocate(s->id, lookup, cached + n);
    if (!allocated.ok()) {
      if (!may_overtake) break;  // nobody overtakes the head of the queue
      Preempt(running_.back(), step, budget);  // its blocks go to the more urgent head
      continue;
    }
    waiting_.pop_front();
    waiting_tokens_ -= len;
    s->state = State::kRunning;
    s->num_computed = *allocated;  // == cached: nothing changed since the lookup
    InsertRunning(s);
    Plan(s, n, budget, plan);
  }
}

bool Scheduler::HeadOutranksLowestRunning() const {
  return !waiting_.empty() && !running_.empty() &&
         waiting_.front()->priority < running_.back()->priority;
}

bool Scheduler::PriorityPreemptionDue() const {
  if (!HeadOutranksLowestRunning()) return false;
  if (static_cast<int32_t>(running_.size()) >= config_.max_num_seqs) return true;
  const Sequence& head = *waiting_.front();
  const int64_t first_chunk =
      std::min<int64_t>(static_cast<int64_t>(head.tokens.size()), config_.prefill_chunk_tokens);
  // Without counting the prefix cache's help: a due preemption may turn out unnecessary, and
  // then Schedule simply admits the head without one.
  return blocks_.BlocksFor(first_chunk) > blocks_.num_available();
}

void Scheduler::InsertWaiting(Sequence* seq) {
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, &RanksBefore), seq);
}

void Scheduler::InsertRunning(Sequence* seq) {
  running_.insert(std::upper_bound(running_.begin(), running_.end(), seq, &RanksBefore), seq);
}

int32_t Scheduler::PrefixBeingComputed(const Sequence& s, int32_t cap) const {
  int32_t best = 0;
  for (const Sequence* r : running_) {
    // What r will have computed once its steps in flight and this one are confirmed.
    const int32_t computed = std::min(r->num_computed + r->planned, static_cast<int32_t>(r->tokens.size()));
    const int32_t limit = std::min(computed, cap);
    if (limit <= best) continue;
    int32_t common = 0;
    while (common < limit && r->tokens[common] == s.tokens[common]) ++common;
    best = std::max(best, common / config_.block_size * config_.block_size);
  }
  return best;
}

void Scheduler::Plan(Sequence* seq, int32_t n, int32_t& budget, std::vector<Sequence*>& plan) {
  seq->planned = n;
  budget -= n;
  plan.push_back(seq);
}

absl::Status Scheduler::OnSampled(SeqId id, int32_t token) {
  return OnSampled(id, std::span<const int32_t>(&token, 1));
}

absl::Status Scheduler::OnSampled(SeqId id, std::span<const int32_t> tokens) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", id));
  Sequence* s = it->second.get();
  if (s->state != State::kRunning || s->unsampled == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", id, " is not waiting for a sampled token"));
  }
  const int32_t accepted = static_cast<int32_t>(tokens.size()) - 1;
  if (accepted < 0 || accepted > s->drafts_in_flight) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", id, ": ", tokens.size(),
                                                   " tokens reported for ", s->drafts_in_flight,
                                                   " guesses"));
  }
  // Positions of rejected guesses were computed for nothing; later steps overwrite them.
  s->num_computed -= s->drafts_in_flight - accepted;
  if (s->drafts_in_flight > 0) s->draft_limit = accepted + 1;
  s->drafts_in_flight = 0;
  accepted_draft_tokens_total_ += accepted;
  s->tokens.insert(s->tokens.end(), tokens.begin(), tokens.end());
  --s->unsampled;
  if (s->generated() >= s->max_new_tokens) {
    // Never scheduled again (its last token needs no KV), so hand the blocks back now rather
    // than when the router gets to Finish.
    ReleaseBlocks(s);
    RemoveFromRunning(s);
    s->state = State::kDone;
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Finish(SeqId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", id));
  Sequence* s = it->second.get();
  switch (s->state) {
    case State::kWaiting:
      RemoveFromWaiting(s);
      waiting_tokens_ -= static_cast<int64_t>(s->tokens.size());
      break;
    case State::kRunning:
      ReleaseBlocks(s);
      RemoveFromRunning(s);
      break;
    case State::kDone:
      break;
  }
  // A later Add may reuse the id; it must not inherit this one's records of steps in flight.
  for (std::vector<Executed>& step : unconfirmed_) {
    std::erase_if(step, [id](const Executed& e) { return e.id == id; });
  }
  seqs_.erase(it);
  return absl::OkStatus();
}

void Scheduler::AbortStep() {
  if (unconfirmed_.empty()) return;
  for (const Executed& e : unconfirmed_.back()) {
    auto it = seqs_.find(e.id);
    if (it == seqs_.end() || it->second->state != State::kRunning) continue;
    Sequence* s = it->second.get();
    if (e.sampled && s->unsampled == 0) continue;  // its token was reported: it did run
    s->num_computed -= e.num_tokens;
    s->first_step = e.was_first_step;
    if (e.sampled) --s->unsampled;
    s->drafts_in_flight = 0;
    draft_tokens_total_ -= e.drafts;
    // Blocks grown for the step stay in the table; the next plan writes into them.
  }
  unconfirmed_.pop_back();
}

void Scheduler::ReleaseBlocks(Sequence* seq) {
  // Everything up to num_computed has run, or is in a step in flight that runs before any later
  // step could reuse it, so its full blocks can serve later sequences, the preempted one's own
  // recompute included.
  blocks_.RegisterComputed(seq->id, seq->tokens, seq->num_computed);
  blocks_.Free(seq->id).IgnoreError();  // running sequences always have a table
}

void Scheduler::RemoveFromRunning(Sequence* seq) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
}

void Scheduler::RemoveFromWaiting(Sequence* seq) {
  waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
}

std::span<const int32_t> Scheduler::Tokens(SeqId id) const {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return {};
  return it->second->tokens;
}

std::optional<absl::Time> Scheduler::oldest_waiting_arrival() const {
  std::optional<absl::Time> oldest;
  for (const Sequence* s : waiting_) {
    if (!oldest || s->arrival_time < *oldest) oldest = s->arrival_time;
  }
  return oldest;
}

absl::Status Scheduler::CheckInvariants() const {
  RETURN_IF_ERROR(blocks_.CheckInvariants());
  if (static_cast<int32_t>(running_.size()) > config_.max_num_seqs) {
    return absl::InternalError(absl::StrCat(running_.size(), " running sequences > max_num_seqs ",
                                            config_.max_num_seqs));
  }
  size_t num_waiting = 0, num_running = 0;
  int64_t tokens = 0;
  for (const auto& [id, s] : seqs_) {
    const bool has_table = blocks_.HasTable(id);
    switch (s->state) {
      case State::kWaiting:
        ++num_waiting;
        tokens += static_cast<int64_t>(s->tokens.size());
        if (has_table || s->num_computed != 0) {
          return absl::InternalError(absl::StrCat("waiting sequence ", id, " holds KV state"));
        }
        break;
      case State::kRunning: {
        ++num_running;
        const int64_t slots = static_cast<int64_t>(blocks_.Table(id).size()) * config_.block_size;
        // Placeholders and guesses in flight.
        const int32_t pending = std::max(0, s->unsampled - 1) + s->drafts_in_flight;
        if (!has_table || s->num_computed > slots ||
            s->num_computed > static_cast<int32_t>(s->tokens.size()) + pending) {
          return absl::InternalError(absl::StrCat("running sequence ", id, " computed ",
                                                  s->num_computed, " tokens with ", slots,
                                                  " slots"));
        }
        if (s->unsampled < 0 || s->unsampled > 2 || s->drafts_in_flight < 0 ||
            (s->drafts_in_flight > 0 && s->unsampled != 1) ||
            (s->unsampled > 0 && s->num_computed != static_cast<int32_t>(s->tokens.size()) +
                                                        s->unsampled - 1 + s->drafts_in_flight)) {
          return absl::InternalError(absl::StrCat("sequence ", id, " awaits ", s->unsampled,
                                                  " tokens with ", s->num_computed, " of ",
                                                  s->tokens.size(), " tokens computed"));
        }
        if (s->generated() >= s->max_new_tokens ||
            s->generated() + s->unsampled + s->drafts_in_flight > s->max_new_tokens) {
          return absl::InternalError(absl::StrCat("sequence ", id, " runs past max_new_tokens"));
        }
        break;
      }
      case State::kDone:
        if (has_table) return absl::InternalError(absl::StrCat("done sequence ", id, " has blocks"));
        break;
    }
    if (s->planned != 0 || !s->draft.empty()) {
      return absl::InternalError("plan state leaked out of Schedule");
    }
  }
  if (num_waiting != waiting_.size() || num_running != running_.size()) {
    return absl::InternalError("sequence states disagree with the queues");
  }
  if (tokens != waiting_tokens_) {
    return absl::InternalError(absl::StrCat("waiting_tokens ", waiting_tokens_, " != ", tokens));
  }
  if (!std::is_sorted(running_.begin(), running_.end(), &RanksBefore) ||
      !std::is_sorted(waiting_.begin(), waiting_.end(), &RanksBefore)) {
    return absl::InternalError("queues are not in rank order");
  }
  for (const Sequence* s : waiting_) {
    if (s->state != State::kWaiting) return absl::InternalError("non-waiting sequence queued");
  }
  for (const Sequence* s : running_) {
    if (s->state != State::kRunning) return absl::InternalError("non-running sequence running");
  }
  // FCFS within a priority: every running sequence is older than every waiting one of the same
  // priority. This is what makes "only lower-ranked sequences are preempted" imply that the
  // highest-ranked sequence always progresses.
  absl::flat_hash_map<int32_t, uint64_t> newest_running;
  for (const Sequence* s : running_) {
    uint64_t& newest = newest_running[s->priority];
    newest = std::max(newest, s->order);
  }
  for (const Sequence* s : waiting_) {
    auto it = newest_running.find(s->priority);
    if (it != newest_running.end() && it->second > s->order) {
      return absl::InternalError(absl::StrCat("waiting sequence ", s->id,
                                              " is older than a running one of its priority"));
    }
  }
  return absl::OkStatus();
}

}  // namespace caduceus::router
