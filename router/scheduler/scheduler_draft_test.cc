// Speculative decoding in the scheduler, on hand-checked scenarios: which decodes get guesses and
// how many, what happens to positions when guesses are rejected, and the limits guesses respect.
// Randomized traffic with guesses verified by a model is in scheduler_simulation_test.cc.
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "router/scheduler/scheduler.h"

namespace caduceus::router {
namespace {

const absl::Time kT0 = absl::UnixEpoch();

SchedulerConfig Config(int32_t speculative_tokens) {
  SchedulerConfig c;
  c.max_num_seqs = 4;
  c.max_tokens_per_step = 16;
  c.prefill_chunk_tokens = 16;
  c.max_waiting_requests = 8;
  c.max_waiting_tokens = 1000;
  c.block_size = 4;
  c.num_blocks = 32;
  c.speculative_tokens = speculative_tokens;
  c.ngram = NgramDraftConfig{2, 3};
  return c;
}

std::unique_ptr<Scheduler> Make(const SchedulerConfig& c) {
  auto s = Scheduler::Create(c);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

// A prompt that ends in a repeat of "7 8": the guesses are what followed "7 8" before.
const std::vector<int32_t> kPrompt = {5, 7, 8, 9, 10, 11, 12, 6, 7, 8};

// Admits the prompt (one prefill step) and reports its first token.
std::unique_ptr<Scheduler> Started(const SchedulerConfig& c, int32_t first_token, int32_t max_new = 20) {
  auto s = Make(c);
  EXPECT_TRUE(s->Add(1, kPrompt, max_new, kT0).ok());
  ScheduledStep prefill = s->Schedule();
  EXPECT_EQ(prefill.entries.size(), 1u);
  EXPECT_EQ(prefill.entries[0].draft_tokens, 0);  // prompts are computed, not guessed
  EXPECT_TRUE(s->OnSampled(1, first_token).ok());
  return s;
}

TEST(SchedulerDraftTest, DecodesCarryGuessesFromTheHistory) {
  auto s = Started(Config(4), /*first_token=*/9);  // "... 7 8 9": suffix "8 9" and "7 8 9"
  ScheduledStep step = s->Schedule();
  ASSERT_EQ(step.entries.size(), 1u);
  const StepEntry& e = step.entries[0];
  EXPECT_EQ(e.start_pos, 10);
  EXPECT_EQ(e.tokens, (std::vector<int32_t>{9, 10, 11, 12, 6}));
  EXPECT_EQ(e.draft_tokens, 4);
  EXPECT_TRUE(e.sample);
  EXPECT_EQ(e.block_table.size(), 4u);  // positions [0, 15)
  EXPECT_EQ(s->draft_tokens_total(), 4);
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();

  // Two guesses right, then the worker's own token: the third guess's position is rolled back.
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{10, 11, 42}).ok());
  EXPECT_EQ(s->accepted_draft_tokens_total(), 2);
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  const auto tokens = s->Tokens(1);
  EXPECT_EQ(std::vector<int32_t>(tokens.begin() + 10, tokens.end()),
            (std::vector<int32_t>{9, 10, 11, 42}));
  ScheduledStep next = s->Schedule();
  ASSERT_EQ(next.entries.size(), 1u);
  EXPECT_EQ(next.entries[0].start_pos, 13);  // 10 prompt + 9, 10, 11 computed
  EXPECT_EQ(next.entries[0].tokens[0], 42);
  EXPECT_EQ(next.entries[0].draft_tokens, 0);  // "11 42" never occurred before
}

TEST(SchedulerDraftTest, LongHistoriesGuessThroughTheIndex) {
  // 3000 distinct tokens, then the start of an early span again: the index (histories over
  // kNgramIndexFrom tokens) finds what followed it, as the scan would.
  SchedulerConfig c = Config(4);
  c.num_blocks = 1024;
  c.max_tokens_per_step = 4096;
  c.prefill_chunk_tokens = 4096;
  c.max_waiting_tokens = 10000;
  auto s = Make(c);
  std::vector<int32_t> prompt(3000);
  for (int32_t i = 0; i < 3000; ++i) prompt[i] = 10000 + i;
  prompt.insert(prompt.end(), {10100, 10101});
  ASSERT_TRUE(s->Add(1, prompt, 40, kT0).ok());
  ASSERT_EQ(s->Schedule().entries.size(), 1u);
  ASSERT_TRUE(s->OnSampled(1, 10102).ok());
  ScheduledStep step = s->Schedule();
  EXPECT_EQ(step.entries[0].tokens, (std::vector<int32_t>{10102, 10103, 10104, 10105, 10106}));
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{10103, 10104, 7}).ok());
  // The history grew by three tokens; "10104 7" never occurred: no guess.
  EXPECT_EQ(s->Schedule().entries[0].draft_tokens, 0);
  ASSERT_TRUE(s->OnSampled(1, 10100).ok());
  EXPECT_FALSE(s->OnSampled(1, 10101).ok());  // one result per step
  ScheduledStep again = s->Schedule();  // "7 10100": no; 10100 alone is below min_ngram 2
  EXPECT_EQ(again.entries[0].draft_tokens, 0);
  ASSERT_TRUE(s->OnSampled(1, 10101).ok());
  // "10100 10101" recurs (twice now: the most recent occurrence was followed by 10102).
  EXPECT_EQ(s->Schedule().entries[0].tokens[1], 10102);
}

TEST(SchedulerDraftTest, GuessLengthFollowsWhatWasAccepted) {
  // History "1 2 3 1 2 3 ... 1 2": guesses continue the loop; the limit is one more than the
  // number accepted last time (at most 4).
  SchedulerConfig c = Config(4);
  auto s = Make(c);
  ASSERT_TRUE(s->Add(1, {1, 2, 3, 1, 2, 3, 1, 2}, 40, kT0).ok());
  s->Schedule();
  ASSERT_TRUE(s->OnSampled(1, 3).ok());
  ScheduledStep a = s->Schedule();
  EXPECT_EQ(a.entries[0].draft_tokens, 4);  // the first guesses get the full length
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{7}).ok());  // none right
  ScheduledStep b = s->Schedule();  // "3 7" never occurred: no guess at all
  EXPECT_EQ(b.entries[0].draft_tokens, 0);
  ASSERT_TRUE(s->OnSampled(1, 1).ok());
  EXPECT_EQ(s->Schedule().entries[0].draft_tokens, 0);  // "7 1" never occurred either
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{2}).ok());  // "7 1 2": suffix "1 2" recurs
  ScheduledStep e = s->Schedule();
  EXPECT_EQ(e.entries[0].draft_tokens, 1);  // 0 accepted last time: 1 guess
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{3, 1}).ok());  // right
  ScheduledStep f = s->Schedule();
  EXPECT_EQ(f.entries[0].draft_tokens, 2);
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{2, 3, 1}).ok());  // both right
  EXPECT_EQ(s->Schedule().entries[0].draft_tokens, 3);
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
}

TEST(SchedulerDraftTest, GuessesStayWithinTheLengthLimitAndTheBudget) {
  // 3 new tokens allowed: one generated, so at most 1 guess + the token after it.
  auto s = Started(Config(4), 9, /*max_new=*/3);
  ScheduledStep step = s->Schedule();
  EXPECT_EQ(step.entries[0].draft_tokens, 1);
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{10, 11}).ok());
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  EXPECT_FALSE(s->Contains(1) && s->num_running() > 0);  // done at its third token

  // The budget: 16 tokens, two sequences decoding; the first takes its guesses first.
  SchedulerConfig c = Config(8);
  c.max_tokens_per_step = 10;
  auto t = Make(c);
  ASSERT_TRUE(t->Add(1, kPrompt, 20, kT0).ok());
  ASSERT_TRUE(t->Add(2, kPrompt, 20, kT0).ok());
  ASSERT_EQ(t->Schedule().entries.size(), 1u);  // 10 prompt tokens fill the budget
  ASSERT_TRUE(t->OnSampled(1, 9).ok());
  ScheduledStep second = t->Schedule();  // decode 1 (+ guesses), prefill 2 with what is left
  ASSERT_TRUE(t->CheckInvariants().ok()) << t->CheckInvariants();
  EXPECT_LE(second.num_tokens(), 10);
  EXPECT_EQ(second.entries[0].seq_id, 1u);
  // "7 8 9" -> 10 11 12 6 7 8 9 10 (periodic past the history): 8 guesses take the rest of the
  // budget but one token, which goes to the prefill of sequence 2.
  EXPECT_EQ(second.entries[0].draft_tokens, 8);
  ASSERT_EQ(second.entries.size(), 2u);
  EXPECT_EQ(second.entries[1].tokens.size(), 1u);
}

TEST(SchedulerDraftTest, NoGuessesWithoutFreeBlocksOrInLargeBatches) {
  // Four blocks: sequence 1 holds three (10 prompt tokens), sequence 2 the fourth. Sequence 1's
  // decode at position 10 leaves one spare slot in its table and none is free: one guess, though
  // its length limit would allow four.
  SchedulerConfig c = Config(4);
  c.num_blocks = 4;
  auto s = Make(c);
  ASSERT_TRUE(s->Add(1, kPrompt, 6, kT0).ok());
  ASSERT_TRUE(s->Add(2, {1, 2, 3}, 2, kT0).ok());
  ASSERT_EQ(s->Schedule().entries.size(), 2u);
  ASSERT_TRUE(s->OnSampled(1, 9).ok());
  ASSERT_TRUE(s->OnSampled(2, 4).ok());
  EXPECT_EQ(s->block_manager().num_free(), 0);
  ScheduledStep step = s->Schedule();
  EXPECT_EQ(step.entries[0].draft_tokens, 1);
  EXPECT_EQ(step.preempted.size(), 0u);  // guesses never preempt
  ASSERT_TRUE(s->CheckInvariants().ok());

  SchedulerConfig big = Config(4);
  big.speculative_max_running = 1;
  auto b = Make(big);
  ASSERT_TRUE(b->Add(1, kPrompt, 20, kT0).ok());
  ASSERT_TRUE(b->Add(2, {1, 2, 3}, 20, kT0).ok());
  ScheduledStep prefill = b->Schedule();
  ASSERT_EQ(prefill.entries.size(), 2u);
  ASSERT_TRUE(b->OnSampled(1, 9).ok());
  ASSERT_TRUE(b->OnSampled(2, 4).ok());
  EXPECT_FALSE(b->speculating());  // two running > 1
  for (const StepEntry& e : b->Schedule().entries) EXPECT_EQ(e.draft_tokens, 0);
}

TEST(SchedulerDraftTest, AbortAndBadReportsRestoreTheState) {
  auto s = Started(Config(4), 9);
  ScheduledStep step = s->Schedule();
  ASSERT_EQ(step.entries[0].draft_tokens, 4);
  s->AbortStep();
  EXPECT_EQ(s->draft_tokens_total(), 0);
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  ScheduledStep again = s->Schedule();
  EXPECT_EQ(again.entries[0].tokens, step.entries[0].tokens);
  EXPECT_EQ(again.entries[0].start_pos, step.entries[0].start_pos);
  // More tokens than guesses + 1, or none: refused, nothing changed.
  EXPECT_EQ(s->OnSampled(1, std::vector<int32_t>{1, 2, 3, 4, 5, 6}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->OnSampled(1, std::vector<int32_t>{}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s->OnSampled(1, std::vector<int32_t>{10, 11, 12, 6, 7}).ok());  // all right
  EXPECT_EQ(s->accepted_draft_tokens_total(), 4);
  ASSERT_TRUE(s->CheckInvariants().ok()) << s->CheckInvariants();
  EXPECT_EQ(s->Schedule().entries[0].start_pos, 15);
}

TEST(SchedulerDraftTest, GuessedSequencesAreNotPlannedAhead) {
  auto s = Started(Config(4), 9);
  ScheduledStep step = s->Schedule();
  ASSERT_EQ(step.entries[0].draft_tokens, 4);
  // Its next position depends on how many guesses are right: nothing to plan ahead.
  ScheduledStep ahead = s->ScheduleAhead();
  EXPECT_TRUE(ahead.empty());
  EXPECT_FALSE(ahead.must_drain);
}

TEST(SchedulerDraftTest, ConfigIsValidated) {
  SchedulerConfig c = Config(-1);
  EXPECT_EQ(Scheduler::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c = Config(4);
  c.ngram = NgramDraftConfig{3, 2};
  EXPECT_EQ(Scheduler::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.ngram = NgramDraftConfig{0, 2};
  EXPECT_EQ(Scheduler::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c = Config(4);
  c.speculative_max_running = 0;
  EXPECT_EQ(Scheduler::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace caduceus::router
