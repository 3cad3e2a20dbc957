// Unit tests of the scheduler's policy on small, hand-checked scenarios. The randomized and
// end-to-end properties are in scheduler_simulation_test.cc.
#include "router/scheduler/scheduler.h"

#include <limits>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caduceus::router {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<int32_t> Ids(int32_t base, int32_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), base);
  return v;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

SchedulerConfig SmallConfig() {
  SchedulerConfig c;
  c.max_num_seqs = 4;
  c.max_tokens_per_step = 16;
  c.prefill_chunk_tokens = 8;
  c.max_waiting_requests = 8;
  c.max_waiting_tokens = 1000;
  c.block_size = 4;
  c.num_blocks = 32;
  return c;
}

std::unique_ptr<Scheduler> Make(const SchedulerConfig& c) {
  auto s = Scheduler::Create(c);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

const absl::Time kT0 = absl::UnixEpoch();

// Reports a token for every sampled entry (token = 1000 + position, easy to predict).
void ReportSamples(Scheduler& s, const ScheduledStep& step) {
  for (const StepEntry& e : step.entries) {
    if (!e.sample) continue;
    const int32_t pos = e.start_pos + static_cast<int32_t>(e.tokens.size());
    ASSERT_TRUE(s.OnSampled(e.seq_id, 1000 + pos).ok());
  }
}

const StepEntry* Find(const ScheduledStep& step, uint64_t id) {
  for (const StepEntry& e : step.entries) {
    if (e.seq_id == id) return &e;
  }
  return nullptr;
}

TEST(SchedulerTest, RejectsBadConfigs) {
  SchedulerConfig c = SmallConfig();
  c.num_blocks = 0;
  EXPECT_THAT(Scheduler::Create(c).status().message(), HasSubstr("num_blocks"));
  c = SmallConfig();
  c.max_num_seqs = 17;  // > max_tokens_per_step: some decodes could never fit in a step
  EXPECT_EQ(Scheduler::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, AddRejectsWhatCanNeverRunAndWhatDoesNotFitTheQueue) {
  SchedulerConfig c = SmallConfig();
  c.num_blocks = 10;  // 40 token slots
  c.max_waiting_requests = 2;
  c.max_waiting_tokens = 35;
  auto s = Make(c);
  EXPECT_EQ(s->Add(1, {}, 5, kT0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Add(1, Ids(0, 3), 0, kT0).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status too_big = s->Add(1, Ids(0, 30), 11, kT0);  // 41 tokens > 40 slots
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("needs 11 KV blocks"));
  EXPECT_EQ(s->Add(1, Ids(0, 36), 1, kT0).code(), absl::StatusCode::kInvalidArgument)
      << "longer than the waiting-queue token limit";

  ASSERT_TRUE(s->Add(1, Ids(0, 30), 10, kT0).ok());  // exactly the whole cache
  EXPECT_EQ(s->Add(1, Ids(0, 3), 1, kT0).code(), absl::StatusCode::kAlreadyExists);
  const absl::Status tokens_full = s->Add(2, Ids(0, 6), 1, kT0);
  EXPECT_EQ(tokens_full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(tokens_full.message(),
              HasSubstr("waiting queue full: 1 requests / 30 tokens waiting"));
  ASSERT_TRUE(s->Add(2, Ids(100, 5), 1, kT0).ok());  // no prefix shared with 1: admitted with it
  const absl::Status requests_full = s->Add(3, Ids(0, 1), 1, kT0);
  EXPECT_EQ(requests_full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(requests_full.message(), HasSubstr("retry later"));
  EXPECT_EQ(s->num_waiting(), 2);
  EXPECT_EQ(s->waiting_tokens(), 35);

  // Admission empties the queue, so requests are accepted again.
  ScheduledStep step = s->Schedule();
  EXPECT_EQ(s->num_waiting(), 0);
  EXPECT_TRUE(s->Add(3, Ids(0, 1), 1, kT0).ok());
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, ChunkedPrefillThenDecodeUntilMaxNewTokens) {
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(7, Ids(0, 20), 3, kT0).ok());

  ScheduledStep st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_EQ(st.entries[0].start_pos, 0);
  EXPECT_EQ(st.entries[0].tokens, Ids(0, 8));
  EXPECT_FALSE(st.entries[0].sample);
  EXPECT_TRUE(st.entries[0].first_step);
  EXPECT_THAT(st.entries[0].prefix_ids, IsEmpty());
  EXPECT_EQ(st.entries[0].block_table.size(), 2u);
  EXPECT_EQ(st.entries[0].prompt_len, 20);
  EXPECT_EQ(s->OnSampled(7, 1).code(), absl::StatusCode::kFailedPrecondition);

  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_EQ(st.entries[0].start_pos, 8);
  EXPECT_EQ(st.entries[0].tokens, Ids(8, 8));
  EXPECT_FALSE(st.entries[0].first_step);
  EXPECT_EQ(st.entries[0].block_table.size(), 4u);

  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_EQ(st.entries[0].start_pos, 16);
  EXPECT_EQ(st.entries[0].tokens, Ids(16, 4));
  EXPECT_TRUE(st.entries[0].sample);
  EXPECT_EQ(st.entries[0].block_table.size(), 5u);
  ASSERT_TRUE(s->OnSampled(7, 100).ok());

  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_EQ(st.entries[0].start_pos, 20);
  EXPECT_THAT(st.entries[0].tokens, ElementsAre(100));
  EXPECT_TRUE(st.entries[0].sample);
  EXPECT_EQ(st.entries[0].block_table.size(), 6u);
  ASSERT_TRUE(s->OnSampled(7, 101).ok());

  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_THAT(st.entries[0].tokens, ElementsAre(101));
  ASSERT_TRUE(s->OnSampled(7, 102).ok());
  // The third token is the last: the blocks go back at once, the sequence is never scheduled.
  EXPECT_EQ(s->num_running(), 0);
  EXPECT_EQ(s->block_manager().num_used(), 0);
  EXPECT_TRUE(s->Schedule().empty());
  const auto tokens = s->Tokens(7);
  ASSERT_EQ(tokens.size(), 23u);
  EXPECT_THAT(std::vector<int32_t>(tokens.begin() + 19, tokens.end()), ElementsAre(19, 100, 101, 102));
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  ASSERT_TRUE(s->Finish(7).ok());
  EXPECT_FALSE(s->Contains(7));
}

TEST(SchedulerTest, DecodesFirstThenRunningPrefillsThenAdmission) {
  SchedulerConfig c = SmallConfig();
  c.max_tokens_per_step = 8;
  auto s = Make(c);
  ASSERT_TRUE(s->Add(1, Ids(0, 3), 10, kT0).ok());
  ASSERT_TRUE(s->Add(2, Ids(50, 12), 10, kT0).ok());

  ScheduledStep st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 2u);
  EXPECT_EQ(st.entries[0].seq_id, 1u);
  EXPECT_EQ(st.entries[0].tokens.size(), 3u);
  EXPECT_EQ(st.entries[1].seq_id, 2u);
  EXPECT_EQ(st.entries[1].tokens.size(), 5u) << "the chunk is cut to the step's remaining budget";
  ReportSamples(*s, st);

  ASSERT_TRUE(s->Add(3, Ids(80, 4), 10, kT0).ok());
  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 2u) << "no budget left to admit sequence 3";
  EXPECT_EQ(st.entries[0].seq_id, 1u);
  EXPECT_EQ(st.entries[0].tokens.size(), 1u);
  EXPECT_EQ(st.entries[1].seq_id, 2u);
  EXPECT_EQ(st.entries[1].tokens.size(), 7u);
  EXPECT_TRUE(st.entries[1].sample);
  ReportSamples(*s, st);

  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 3u);
  EXPECT_EQ(st.entries[0].seq_id, 1u);
  EXPECT_EQ(st.entries[1].seq_id, 2u);
  EXPECT_EQ(st.entries[1].tokens.size(), 1u);
  EXPECT_EQ(st.entries[2].seq_id, 3u);
  EXPECT_EQ(st.entries[2].tokens.size(), 4u);
  EXPECT_EQ(st.num_tokens(), 6);
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, ReusesAComputedSharedPrefixAndSendsItsIds) {
  SchedulerConfig c = SmallConfig();
  c.prefill_chunk_tokens = 16;
  auto s = Make(c);
  const auto system = Ids(500, 8);
  ASSERT_TRUE(s->Add(1, Concat(system, {1, 2, 3}), 10, kT0).ok());
  ASSERT_TRUE(s->Add(2, Concat(system, {4}), 10, kT0).ok());
  ScheduledStep st = s->Schedule();
  // Sequence 2 shares the two blocks sequence 1 computes in this step: admitted now it would
  // compute them too, so it waits for them.
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_EQ(st.entries[0].seq_id, 1u);
  EXPECT_EQ(s->num_waiting(), 1);
  ReportSamples(*s, st);

  // The next step confirms the first: its full blocks are now reusable, by 2 and by 3.
  ASSERT_TRUE(s->Add(3, Concat(system, {7, 8}), 10, kT0).ok());
  st = s->Schedule();
  const StepEntry* e2 = Find(st, 2);
  ASSERT_NE(e2, nullptr);
  EXPECT_EQ(e2->start_pos, 8);
  EXPECT_THAT(e2->tokens, ElementsAre(4));
  const StepEntry* e = Find(st, 3);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->start_pos, 8);
  EXPECT_THAT(e->tokens, ElementsAre(7, 8));
  EXPECT_TRUE(e->first_step);
  EXPECT_EQ(e->prefix_ids, system);
  const auto t1 = s->block_manager().Table(1);
  ASSERT_EQ(e->block_table.size(), 3u);
  EXPECT_EQ(e->block_table[0], t1[0]);
  EXPECT_EQ(e->block_table[1], t1[1]);
  EXPECT_EQ(s->block_manager().ref_count(t1[0]), 3);
  EXPECT_EQ(s->prefix_hit_tokens_total(), 16);
  EXPECT_EQ(s->prefix_hits_total(), 2);
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, ASequenceReusesAtMostItsMaxReusedPrefix) {
  // A scored request must compute the rows it scores: 8 tokens of a shared prefix are cached,
  // but it may reuse only 5, which the block size (4) rounds down to 4.
  SchedulerConfig c = SmallConfig();
  c.prefill_chunk_tokens = 16;
  auto s = Make(c);
  const auto system = Ids(500, 8);
  ASSERT_TRUE(s->Add(1, Concat(system, {1, 2, 3}), 10, kT0).ok());
  ReportSamples(*s, s->Schedule());
  ASSERT_TRUE(s->Add(2, Concat(system, {7, 8}), 1, kT0, {}, /*max_reused_prefix=*/5).ok());
  ASSERT_TRUE(s->Add(3, Concat(system, {7, 9}), 1, kT0, {}, /*max_reused_prefix=*/3).ok());
  ScheduledStep st = s->Schedule();
  const StepEntry* e = Find(st, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->start_pos, 4);
  EXPECT_EQ(e->tokens.size(), 6u);
  e = Find(st, 3);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->start_pos, 0);  // less than one block
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, PreemptsTheNewestByRecomputeAndResumesIt) {
  SchedulerConfig c = SmallConfig();
  c.num_blocks = 6;  // 24 slots for two sequences that need 20 and 16
  auto s = Make(c);
  ASSERT_TRUE(s->Add(1, Ids(0, 8), 12, kT0).ok());
  ASSERT_TRUE(s->Add(2, Ids(100, 8), 8, kT0).ok());
  bool seen_preemption = false, seen_resume = false;
  for (int step = 0; step < 100 && (s->Contains(1) || s->Contains(2)); ++step) {
    ScheduledStep st = s->Schedule();
    ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
    for (uint64_t id : st.preempted) {
      EXPECT_EQ(id, 2u) << "only the newest sequence is ever preempted";
      seen_preemption = true;
      EXPECT_EQ(Find(st, 2), nullptr);
    }
    if (const StepEntry* e = Find(st, 2); e != nullptr && seen_preemption && e->first_step) {
      // Resumed: it recomputes (in prefill chunks) from its cached prefix, gets every id before
      // that, and samples its next token only at the end of the recompute.
      seen_resume = true;
      const auto all = s->Tokens(2);
      EXPECT_EQ(e->prefix_ids, std::vector<int32_t>(all.begin(), all.begin() + e->start_pos));
      EXPECT_EQ(e->prompt_len, 8);
      EXPECT_GT(all.size(), 9u) << "it had generated tokens before the preemption";
      EXPECT_EQ(e->sample, e->start_pos + e->tokens.size() == all.size());
    }
    ReportSamples(*s, st);
    for (uint64_t id : {1u, 2u}) {
      if (s->Contains(id) && s->Tokens(id).size() == (id == 1 ? 20u : 16u)) {
        // Token at position p is 1000 + p whether or not the sequence was preempted.
        const auto all = s->Tokens(id);
        for (size_t p = 8; p < all.size(); ++p) EXPECT_EQ(all[p], 1000 + static_cast<int>(p));
        ASSERT_TRUE(s->Finish(id).ok());
      }
    }
  }
  EXPECT_TRUE(seen_preemption);
  EXPECT_TRUE(seen_resume);
  EXPECT_FALSE(s->Contains(1));
  EXPECT_FALSE(s->Contains(2));
  EXPECT_GT(s->preemptions_total(), 0);
  EXPECT_EQ(s->block_manager().num_used(), 0);
}

TEST(SchedulerTest, AMovedSequenceRecomputesWhatItGeneratedAndCountsItAgainstItsLimit) {
  // A request that produced 3 tokens on a replica that then failed: the new replica computes the
  // prompt and those 3 tokens, samples the 4th, and stops after the 5th (max_new_tokens 5).
  SchedulerConfig c = SmallConfig();
  c.max_waiting_tokens = 12;
  auto s = Make(c);
  const std::vector<int32_t> generated = {500, 501, 502};
  EXPECT_THAT(s->Add(1, Ids(0, 6), 3, kT0, generated).message(), HasSubstr("already has 3 of its 3"));
  // The waiting-queue limit counts the generated tokens too: they are computed like the prompt.
  EXPECT_EQ(s->Add(1, Ids(0, 10), 5, kT0, generated).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s->Add(1, Ids(0, 6), 5, kT0, generated).ok());
  EXPECT_EQ(s->waiting_tokens(), 9);
  EXPECT_THAT(s->Tokens(1), ElementsAre(0, 1, 2, 3, 4, 5, 500, 501, 502));

  ScheduledStep st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_THAT(st.entries[0].tokens, ElementsAre(0, 1, 2, 3, 4, 5, 500, 501));  // one chunk
  EXPECT_FALSE(st.entries[0].sample);
  EXPECT_EQ(st.entries[0].prompt_len, 6) << "the worker must know which tokens were generated";
  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_THAT(st.entries[0].tokens, ElementsAre(502));
  EXPECT_TRUE(st.entries[0].sample);
  ASSERT_TRUE(s->OnSampled(1, 503).ok());
  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  ASSERT_TRUE(s->OnSampled(1, 504).ok());
  EXPECT_EQ(s->num_running(), 0) << "the 5th new token was the last";
  EXPECT_TRUE(s->Schedule().empty());
  EXPECT_THAT(s->Tokens(1), ElementsAre(0, 1, 2, 3, 4, 5, 500, 501, 502, 503, 504));
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, FinishFreesWaitingAndRunningSequences) {
  SchedulerConfig c = SmallConfig();
  c.max_num_seqs = 2;
  auto s = Make(c);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(s->Add(id, Ids(10 * id, 5), 4, kT0).ok());
  ScheduledStep st = s->Schedule();
  EXPECT_EQ(st.entries.size(), 2u);
  EXPECT_EQ(s->num_waiting(), 1);
  ReportSamples(*s, st);
  ASSERT_TRUE(s->Finish(3).ok());
  EXPECT_EQ(s->num_waiting(), 0);
  EXPECT_EQ(s->waiting_tokens(), 0);
  const int32_t used = s->block_manager().num_used();
  ASSERT_TRUE(s->Finish(1).ok());
  EXPECT_LT(s->block_manager().num_used(), used);
  EXPECT_EQ(s->num_running(), 1);
  EXPECT_EQ(s->Finish(1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->OnSampled(1, 5).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->OnSampled(2, 5).code(), absl::StatusCode::kFailedPrecondition)
      << "nothing was sampled for it since the last report";
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  ASSERT_TRUE(s->Finish(2).ok());
  EXPECT_EQ(s->block_manager().num_used(), 0);
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, AbortStepPlansTheSameWorkAgain) {
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(1, Ids(0, 6), 4, kT0).ok());
  ASSERT_TRUE(s->Add(2, Ids(40, 12), 4, kT0).ok());
  const ScheduledStep first = s->Schedule();
  s->AbortStep();
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  const ScheduledStep again = s->Schedule();
  ASSERT_EQ(again.entries.size(), first.entries.size());
  for (size_t i = 0; i < first.entries.size(); ++i) {
    const StepEntry &a = first.entries[i], &b = again.entries[i];
    EXPECT_EQ(a.seq_id, b.seq_id);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.start_pos, b.start_pos);
    EXPECT_EQ(a.block_table, b.block_table);
    EXPECT_EQ(a.sample, b.sample);
    EXPECT_EQ(a.first_step, b.first_step);
    EXPECT_EQ(a.prefix_ids, b.prefix_ids);
  }
}

TEST(SchedulerTest, ASequenceWithoutItsSampledTokenIsSkipped) {
  // If the router loses a sampled token (it must then Finish the sequence), the scheduler has
  // nothing to feed for it and leaves it out rather than inventing input.
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(1, Ids(0, 3), 4, kT0).ok());
  ASSERT_TRUE(s->Add(2, Ids(9, 3), 4, kT0).ok());
  ScheduledStep st = s->Schedule();
  ASSERT_TRUE(s->OnSampled(2, 77).ok());
  st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 1u);
  EXPECT_EQ(st.entries[0].seq_id, 2u);
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, AheadDecodesThePendingTokenButNeverPastTheLast) {
  auto s = Make(SmallConfig());
  ASSERT_TRUE(s->Add(1, Ids(0, 3), /*max_new_tokens=*/3, kT0).ok());
  const ScheduledStep prefill = s->Schedule();  // positions 0-2, samples position 3
  ASSERT_EQ(prefill.entries.size(), 1u);
  ScheduledStep ahead = s->ScheduleAhead();     // feeds position 3 before its token is known
  ASSERT_EQ(ahead.entries.size(), 1u);
  EXPECT_THAT(ahead.entries[0].tokens, ElementsAre(kSampledTokenPlaceholder));
  EXPECT_EQ(ahead.entries[0].start_pos, 3);
  EXPECT_TRUE(ahead.entries[0].sample);
  EXPECT_FALSE(ahead.entries[0].first_step);
  EXPECT_EQ(s->steps_in_flight(), 2);
  EXPECT_TRUE(s->ScheduleAhead().empty()) << "two tokens in flight already";
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();

  ASSERT_TRUE(s->OnSampled(1, 50).ok());  // prefill's result: position 3
  s->ConfirmStep();
  ahead = s->ScheduleAhead();  // position 4's token (the 2nd of 3) is in flight: feed it
  ASSERT_EQ(ahead.entries.size(), 1u);
  EXPECT_EQ(ahead.entries[0].start_pos, 4);
  EXPECT_THAT(ahead.entries[0].tokens, ElementsAre(kSampledTokenPlaceholder));
  ASSERT_TRUE(s->OnSampled(1, 51).ok());  // position 4
  s->ConfirmStep();
  EXPECT_TRUE(s->ScheduleAhead().empty()) << "the token in flight is the last one";
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  ASSERT_TRUE(s->OnSampled(1, 52).ok());  // position 5: the 3rd and last token
  s->ConfirmStep();
  EXPECT_EQ(s->num_running(), 0);
  EXPECT_EQ(s->block_manager().num_used(), 0);
  EXPECT_THAT(s->Tokens(1), ElementsAre(0, 1, 2, 50, 51, 52));
}

TEST(SchedulerTest, AheadNeverPreemptsAndAsksToDrainInstead) {
  SchedulerConfig c = SmallConfig();
  c.num_blocks = 3;  // block_size 4
  auto s = Make(c);
  ASSERT_TRUE(s->Add(1, Ids(0, 8), 4, kT0).ok());
  ASSERT_TRUE(s->Add(2, Ids(10, 4), 4, kT0).ok());
  const ScheduledStep first = s->Schedule();  // both prefill, filling all three blocks
  ASSERT_EQ(first.entries.size(), 2u);
  // Both pending tokens need a new block, which only preempting sequence 2 would free.
  const ScheduledStep ahead = s->ScheduleAhead();
  EXPECT_TRUE(ahead.empty());
  EXPECT_TRUE(ahead.must_drain);
  EXPECT_TRUE(ahead.preempted.empty());
  EXPECT_EQ(s->steps_in_flight(), 1);
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  // Drained: Schedule may preempt the newer sequence for the older one.
  ReportSamples(*s, first);
  const ScheduledStep st = s->Schedule();
  EXPECT_THAT(st.preempted, ElementsAre(2u));
  ASSERT_NE(Find(st, 1), nullptr);
  EXPECT_EQ(Find(st, 1)->start_pos, 8);
  EXPECT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerTest, AMoreUrgentRequestIsAdmittedBeforeOlderWaitingOnes) {
  SchedulerConfig c = SmallConfig();
  c.max_num_seqs = 1;
  auto s = Make(c);
  ASSERT_TRUE(s->Add(1, Ids(0, 3), 2, kT0, {}, std::numeric_limits<int32_t>::max(), 0).ok());
  ScheduledStep st = s->Schedule();  // 1 runs
  ASSERT_NE(Find(st, 1), nullptr);
  ASSERT_TRUE(s->Add(2, Ids(10, 3), 2, kT0, {}, std::numeric_limits<int32_t>::max(), 5).ok());
  ASSERT_TRUE(s->Add(3, Ids(20, 3), 2, kT0, {}, std::numeric_limits<int32_t>::max(), 5).ok());
  ASSERT_TRUE(s->Add(4, Ids(30, 3), 2, kT0, {}, std::numeric_limits<int32_t>::max(), 1).ok());
  // Order of service: 1 (running, most urgent), then 4 (priority 1), then 2 and 3 (5, by age).
  std::vector<uint64_t> started;
  for (int step = 0; step < 50 && (s->num_running() + s->num_waiting()) > 0; ++step) {
    ReportSamples(*s, st);
    for (uint64_t id = 1; id <= 4; ++id) {
      if (s->Contains(id) && s->Tokens(id).size() == 5) {
        ASSERT_TRUE(s->Finish(id).ok());
      }
    }
    st = s->Schedule();
    ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
    EXPECT_TRUE(st.preempted.empty()) << "1 outranks everyone: nobody preempts it";
    for (const StepEntry& e : st.entries) {
      if (e.first_step) started.push_back(e.seq_id);
    }
  }
  EXPECT_THAT(started, ElementsAre(4u, 2u, 3u));
}

TEST(SchedulerTest, AMoreUrgentRequestPreemptsTheLeastUrgentWhenTheBatchIsFull) {
  SchedulerConfig c = SmallConfig();
  c.max_num_seqs = 2;
  auto s = Make(c);
  constexpr int32_t kAll = std::numeric_limits<int32_t>::max();
  ASSERT_TRUE(s->Add(1, Ids(0, 4), 20, kT0, {}, kAll, 10).ok());
  ASSERT_TRUE(s->Add(2, Ids(10, 4), 20, kT0, {}, kAll, 10).ok());
  ScheduledStep st = s->Schedule();
  ASSERT_EQ(st.entries.size(), 2u);
  ReportSamples(*s, st);
  st = s->Schedule();  // both decode
  // An urgent request: planning ahead it asks to drain (only Schedule preempts)...
  ASSERT_TRUE(s->Add(3, Ids(20, 4), 2, kT0, {}, kAll, 0).ok());
  const ScheduledStep ahead = s->ScheduleAhead();
  EXPECT_TRUE(ahead.must_drain);
  EXPECT_TRUE(ahead.empty());
  // ...and then the least urgent running sequence (the newer of the two) makes room.
  ReportSamples(*s, st);
  st = s->Schedule();
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  EXPECT_THAT(st.preempted, ElementsAre(2u));
  ASSERT_NE(Find(st, 3), nullptr);
  EXPECT_TRUE(Find(st, 3)->first_step);
  EXPECT_EQ(Find(st, 2), nullptr) << "the victim is not re-admitted in the same step";
  EXPECT_NE(Find(st, 1), nullptr);
  // Sequence 2 resumes once 3 is done, and its tokens are those it would have had anyway.
  for (int step = 0; step < 100 && s->Contains(2); ++step) {
    ReportSamples(*s, st);
    for (uint64_t id : {1u, 2u, 3u}) {
      if (!s->Contains(id)) continue;
      const size_t want = id == 3 ? 6u : 24u;
      if (s->Tokens(id).size() == want) {
        const auto all = s->Tokens(id);
        for (size_t p = 4; p < all.size(); ++p) EXPECT_EQ(all[p], 1000 + static_cast<int>(p));
        ASSERT_TRUE(s->Finish(id).ok());
      }
    }
    st = s->Schedule();
    ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  }
  EXPECT_FALSE(s->Contains(2));
  EXPECT_EQ(s->preemptions_total(), 1);
}

TEST(SchedulerTest, ALessUrgentRequestNeverPreemptsAndEqualPrioritiesStayFcfs) {
  SchedulerConfig c = SmallConfig();
  c.max_num_seqs = 1;
  auto s = Make(c);
  constexpr int32_t kAll = std::numeric_limits<int32_t>::max();
  ASSERT_TRUE(s->Add(1, Ids(0, 4), 20, kT0, {}, kAll, 3).ok());
  ScheduledStep st = s->Schedule();
  ASSERT_TRUE(s->Add(2, Ids(10, 4), 2, kT0, {}, kAll, 3).ok());  // same priority: waits
  ASSERT_TRUE(s->Add(3, Ids(20, 4), 2, kT0, {}, kAll, 7).ok());  // less urgent: waits
  for (int step = 0; step < 5; ++step) {
    EXPECT_FALSE(s->ScheduleAhead().must_drain);
    s->AbortStep();
    ReportSamples(*s, st);
    st = s->Schedule();
    EXPECT_TRUE(st.preempted.empty());
    EXPECT_EQ(s->num_running(), 1);
    EXPECT_NE(Find(st, 1), nullptr);
    ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  }
}

TEST(SchedulerTest, AMoreUrgentRequestTakesTheBlocksOfTheLeastUrgent) {
  SchedulerConfig c = SmallConfig();
  c.num_blocks = 4;  // 16 slots: one 12-token sequence leaves too few for another 8-token prompt
  auto s = Make(c);
  constexpr int32_t kAll = std::numeric_limits<int32_t>::max();
  ASSERT_TRUE(s->Add(1, Ids(0, 12), 4, kT0, {}, kAll, 2).ok());
  ScheduledStep st = s->Schedule();  // 8 prompt tokens
  ReportSamples(*s, st);
  st = s->Schedule();  // the last 4, sampling its first token: 3 blocks used, 1 free
  ASSERT_NE(Find(st, 1), nullptr);
  ReportSamples(*s, st);
  // 8 tokens need 2 blocks: only preempting sequence 1 frees them.
  ASSERT_TRUE(s->Add(2, Ids(100, 8), 2, kT0, {}, kAll, 1).ok());
  EXPECT_TRUE(s->ScheduleAhead().must_drain);
  st = s->Schedule();
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  EXPECT_THAT(st.preempted, ElementsAre(1u));
  ASSERT_NE(Find(st, 2), nullptr);
  EXPECT_EQ(Find(st, 2)->tokens.size(), 8u);
}

TEST(SchedulerTest, ReportsOldestWaitingArrival) {
  SchedulerConfig c = SmallConfig();
  c.max_num_seqs = 1;
  auto s = Make(c);
  EXPECT_FALSE(s->oldest_waiting_arrival().has_value());
  ASSERT_TRUE(s->Add(1, Ids(0, 3), 4, kT0).ok());
  ASSERT_TRUE(s->Add(2, Ids(0, 3), 4, kT0 + absl::Seconds(1)).ok());
  ASSERT_TRUE(s->Add(3, Ids(0, 3), 4, kT0 + absl::Seconds(2)).ok());
  EXPECT_EQ(s->oldest_waiting_arrival(), kT0);
  s->Schedule();
  EXPECT_EQ(s->oldest_waiting_arrival(), kT0 + absl::Seconds(1));
}

}  // namespace
}  // namespace caduceus::router
