// Speculative decoding on the worker: draft tokens in a plan are verified by sampling at the row
// before each one, so a drafted step produces exactly the tokens (and logprobs) that one-token
// decodes would have, whatever the sampling parameters; rejected guesses leave no trace.
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/server/sequence_table.h"
#include "worker/server/sequence_table_test_util.h"

namespace caduceus::worker {
namespace {

constexpr int kVocab = 10;

StepLimits Limits() { return test_util::SmallLimits(); }

v1::SequencePlan Step(uint64_t id, std::vector<int32_t> tokens, int32_t start_pos, int32_t prompt_len) {
  v1::SequencePlan s;
  s.set_sequence_id(id);
  for (int32_t t : tokens) s.add_token_ids(t);
  for (int32_t b = 0; b < 8; ++b) s.add_block_table(b);
  s.set_start_pos(start_pos);
  s.set_prompt_len(prompt_len);
  s.set_sample(true);
  return s;
}

v1::SequencePlan First(uint64_t id, std::vector<int32_t> prompt, float temperature) {
  v1::SequencePlan s = Step(id, prompt, 0, static_cast<int32_t>(prompt.size()));
  s.set_first_step(true);
  v1::SamplingParams* p = s.mutable_sampling();
  p->set_temperature(temperature);
  p->set_top_p(1);
  p->set_repetition_penalty(1);
  if (temperature > 0) {  // sampled, penalized, with logprobs: every piece of sampler state
    p->set_seed(7);
    p->set_frequency_penalty(0.7f);
    p->set_presence_penalty(0.3f);
    p->set_top_logprobs(3);
  }
  return s;
}

v1::StepPlan Plan(const v1::SequencePlan& s) {
  v1::StepPlan p;
  *p.add_sequences() = s;
  return p;
}

// Rows of pseudo-random logits (a fixed LCG), one per entry of `rows`, seeded by that entry.
model::StepLogits Rows(const std::vector<uint32_t>& rows) {
  model::StepLogits l;
  l.vocab_size = kVocab;
  l.row_begin = {0};
  for (uint32_t seed : rows) {
    uint32_t x = seed * 2654435761u + 1;
    for (int v = 0; v < kVocab; ++v) {
      x = x * 1664525u + 1013904223u;
      l.values.push_back(static_cast<float>(x >> 8) / static_cast<float>(1 << 24) * 4.f);
    }
  }
  return l;
}

struct Produced {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::string> tops;
};

void Append(const v1::SequenceResult& r, Produced& out) {
  auto top = [](const auto& list) {
    std::string s;
    for (const v1::TokenLogprob& t : list) s += std::to_string(t.token_id()) + ":" + std::to_string(t.logprob()) + " ";
    return s;
  };
  for (const v1::SampledToken& a : r.accepted_drafts()) {
    out.tokens.push_back(a.token_id());
    out.logprobs.push_back(a.logprob());
    out.tops.push_back(top(a.top_logprobs()));
  }
  out.tokens.push_back(r.token_id());
  out.logprobs.push_back(r.logprob());
  out.tops.push_back(top(r.top_logprobs()));
}

// Prompt {1, 2, 3}; the first sampled token comes from row seed 100, the token after generated
// token i from row seed 101 + i. Returns the 6 tokens one-token decodes produce.
Produced DecodeOneByOne(float temperature) {
  SequenceTable t(Limits());
  Produced out;
  v1::StepResult r;
  EXPECT_TRUE(t.Commit(Plan(First(1, {1, 2, 3}, temperature)), Rows({100}), &r).ok());
  Append(r.results(0), out);
  for (int i = 0; i < 5; ++i) {
    v1::StepPlan p = Plan(Step(1, {out.tokens.back()}, 3 + i, 3));
    EXPECT_TRUE(t.Validate(p).ok()) << t.Validate(p);
    v1::StepResult rr;
    EXPECT_TRUE(t.Commit(p, Rows({101u + i}), &rr).ok());
    Append(rr.results(0), out);
  }
  return out;
}

class DraftTest : public ::testing::TestWithParam<float> {};

TEST_P(DraftTest, AcceptedDraftsAreExactlyTheOneByOneTokens) {
  const Produced reference = DecodeOneByOne(GetParam());
  SequenceTable t(Limits());
  Produced out;
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(Plan(First(1, {1, 2, 3}, GetParam())), Rows({100}), &r).ok());
  Append(r.results(0), out);
  // Guess the next 4 right: all accepted, then the token after them is sampled from the 5th row.
  const std::vector<int32_t>& ref = reference.tokens;
  v1::SequencePlan s = Step(1, {ref[0], ref[1], ref[2], ref[3], ref[4]}, 3, 3);
  s.set_draft_tokens(4);
  ASSERT_TRUE(t.Validate(Plan(s)).ok()) << t.Validate(Plan(s));
  v1::StepResult rr;
  ASSERT_TRUE(t.Commit(Plan(s), Rows({101, 102, 103, 104, 105}), &rr).ok());
  EXPECT_EQ(rr.results(0).accepted_drafts_size(), 4);
  Append(rr.results(0), out);
  EXPECT_EQ(out.tokens, reference.tokens);
  EXPECT_EQ(out.logprobs, reference.logprobs);
  EXPECT_EQ(out.tops, reference.tops);
  // The sequence now has all 8 positions of prompt + accepted guesses + the fed token.
  EXPECT_TRUE(t.Validate(Plan(Step(1, {ref[5]}, 8, 3))).ok());
}

TEST_P(DraftTest, AWrongGuessEndsTheDraftAndIsForgotten) {
  const Produced reference = DecodeOneByOne(GetParam());
  const std::vector<int32_t>& ref = reference.tokens;
  SequenceTable t(Limits());
  Produced out;
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(Plan(First(1, {1, 2, 3}, GetParam())), Rows({100}), &r).ok());
  Append(r.results(0), out);
  // Right, wrong, right: only the first is kept; the draw at the wrong one's row is the token.
  const int32_t wrong = (ref[2] + 1) % kVocab;
  v1::SequencePlan s = Step(1, {ref[0], ref[1], wrong, ref[3]}, 3, 3);
  s.set_draft_tokens(3);
  v1::StepResult rr;
  ASSERT_TRUE(t.Commit(Plan(s), Rows({101, 102, 103, 104}), &rr).ok());
  EXPECT_EQ(rr.results(0).accepted_drafts_size(), 1);
  Append(rr.results(0), out);
  // The rejected positions are gone: the next step starts after the accepted guess, and the
  // penalties never counted the rejected guesses (the rest equals the reference).
  v1::StepPlan stale = Plan(Step(1, {ref[3]}, 7, 3));
  EXPECT_EQ(t.Validate(stale).code(), absl::StatusCode::kInvalidArgument);
  for (int i = 3; i < 6; ++i) {
    v1::StepPlan p = Plan(Step(1, {out.tokens.back()}, 2 + i, 3));
    ASSERT_TRUE(t.Validate(p).ok()) << t.Validate(p);
    v1::StepResult next;
    ASSERT_TRUE(t.Commit(p, Rows({100u + i}), &next).ok());
    Append(next.results(0), out);
  }
  EXPECT_EQ(out.tokens, reference.tokens);
  EXPECT_EQ(out.logprobs, reference.logprobs);
  EXPECT_EQ(out.tops, reference.tops);
}

INSTANTIATE_TEST_SUITE_P(GreedyAndSampled, DraftTest, ::testing::Values(0.f, 1.f));

TEST(DraftValidationTest, RefusesDraftsThatCannotBeVerified) {
  SequenceTable t(Limits());
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(Plan(First(1, {1, 2, 3}, 0)), Rows({100}), &r).ok());
  auto expect_invalid = [&](v1::SequencePlan s, const std::string& words) {
    absl::Status st = t.Validate(Plan(s));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << words;
    EXPECT_NE(st.message().find(words), std::string::npos) << st.message();
  };
  v1::SequencePlan s = Step(1, {4, 5, 6}, 3, 3);
  s.set_draft_tokens(3);
  expect_invalid(s, "leave none of the 3 new tokens known");
  s.set_draft_tokens(-1);
  expect_invalid(s, "negative draft_tokens");
  s.set_draft_tokens(2);
  s.set_sample(false);
  expect_invalid(s, "draft tokens without sample");
  s.set_sample(true);
  s.set_return_logits(true);
  expect_invalid(s, "draft tokens and return_logits conflict");
  s.set_return_logits(false);
  s.add_score_targets(1);
  expect_invalid(s, "draft tokens and score_targets conflict");
  s.clear_score_targets();
  EXPECT_TRUE(t.Validate(Plan(s)).ok()) << t.Validate(Plan(s));
  // Guesses are generated tokens: the known tokens must complete the prompt.
  v1::SequencePlan early = First(2, {1, 2, 3, 4}, 0);
  early.set_prompt_len(4);
  early.set_draft_tokens(1);
  expect_invalid(early, "before the prompt (4 tokens) is complete");
}

TEST(DraftBatchTest, DraftedSequencesGetEveryGuessRow) {
  v1::SequencePlan s = Step(1, {4, 5, 6}, 3, 3);
  s.set_draft_tokens(2);
  model::StepBatch b = BatchFromPlan(Plan(s));
  ASSERT_EQ(b.sequences.size(), 1u);
  EXPECT_TRUE(b.sequences[0].all_logits);
  EXPECT_EQ(b.sequences[0].logits_from, 0);
  EXPECT_FALSE(b.sequences[0].argmax_only);
  s.set_argmax_only(true);  // greedy: the lm_head's argmax of every row
  EXPECT_TRUE(BatchFromPlan(Plan(s)).sequences[0].argmax_only);
}

// Greedy guesses verified against the lm_head's argmax rows (no logits): row r's greedy token.
TEST(DraftBatchTest, ArgmaxRowsVerifyGreedyGuesses) {
  SequenceTable t(Limits());
  v1::StepResult r;
  v1::SequencePlan first = First(1, {1, 2, 3}, 0);
  first.mutable_sampling()->set_skip_logprob(true);  // greedy, nobody reads logprobs
  first.set_argmax_only(true);
  model::StepLogits one;
  one.vocab_size = kVocab;
  one.row_begin = {0};
  one.value_row = {-1};
  one.greedy_token = {4};
  ASSERT_TRUE(t.Commit(Plan(first), one, &r).ok());
  EXPECT_EQ(r.results(0).token_id(), 4);
  v1::SequencePlan s = Step(1, {4, 5, 6, 7}, 3, 3);
  s.set_draft_tokens(3);
  s.set_argmax_only(true);
  ASSERT_TRUE(t.Validate(Plan(s)).ok()) << t.Validate(Plan(s));
  model::StepLogits rows;
  rows.vocab_size = kVocab;
  rows.row_begin = {0};
  rows.value_row = {-1, -1, -1, -1};
  rows.greedy_token = {5, 6, 9, 1};  // guesses 5 and 6 right, 7 wrong: 9 instead
  v1::StepResult rr;
  ASSERT_TRUE(t.Commit(Plan(s), rows, &rr).ok());
  ASSERT_EQ(rr.results(0).accepted_drafts_size(), 2);
  EXPECT_EQ(rr.results(0).accepted_drafts(0).token_id(), 5);
  EXPECT_EQ(rr.results(0).accepted_drafts(1).token_id(), 6);
  EXPECT_EQ(rr.results(0).token_id(), 9);
  EXPECT_TRUE(t.Validate(Plan(Step(1, {9}, 6, 3))).ok());
}

}  // namespace
}  // namespace caduceus::worker
