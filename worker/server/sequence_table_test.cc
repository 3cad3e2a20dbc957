// Protocol checks of the leader's sequence table: every malformed plan the router could send is
// refused with INVALID_ARGUMENT naming the problem, and sampling state follows the sequence.
#include "worker/server/sequence_table.h"
#include "worker/server/sequence_table_test_util.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace caduceus::worker {
namespace {

StepLimits Limits() { return test_util::SmallLimits(); }

v1::SequencePlan First(uint64_t id, std::vector<int32_t> tokens, std::vector<int32_t> blocks) {
  v1::SequencePlan s;
  s.set_sequence_id(id);
  for (int32_t t : tokens) s.add_token_ids(t);
  for (int32_t b : blocks) s.add_block_table(b);
  s.set_start_pos(0);
  s.set_prompt_len(static_cast<int32_t>(tokens.size()));
  s.set_sample(true);
  s.set_first_step(true);
  s.mutable_sampling()->set_temperature(0);
  s.mutable_sampling()->set_top_p(1);
  s.mutable_sampling()->set_repetition_penalty(1);
  return s;
}

v1::StepPlan Plan(std::vector<v1::SequencePlan> seqs) {
  v1::StepPlan p;
  for (auto& s : seqs) *p.add_sequences() = s;
  return p;
}

// Logits whose argmax is `best` for every row.
model::StepLogits Logits(int rows, int best) {
  model::StepLogits l;
  l.vocab_size = 10;
  for (int r = 0; r < rows; ++r) l.row_begin.push_back(r);
  l.values.assign(rows * 10, 0.f);
  for (int r = 0; r < rows; ++r) l.values[r * 10 + best] = 5.f;
  return l;
}

void ExpectInvalid(const SequenceTable& t, const v1::StepPlan& p, const std::string& words) {
  absl::Status s = t.Validate(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
}

TEST(SequenceTableTest, AcceptsAWellFormedPlanAndSamples) {
  SequenceTable t(Limits());
  v1::StepPlan p = Plan({First(7, {1, 2, 3, 4, 5}, {0, 1})});
  ASSERT_TRUE(t.Validate(p).ok()) << t.Validate(p);
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(p, Logits(1, 6), &r).ok());
  ASSERT_EQ(r.results_size(), 1);
  EXPECT_TRUE(r.results(0).sampled());
  EXPECT_EQ(r.results(0).token_id(), 6);
  EXPECT_LT(r.results(0).logprob(), 0.f);
  EXPECT_EQ(t.BlocksInUse(), 2);

  // The next step continues at position 5 with the sampled token.
  v1::SequencePlan next;
  next.set_sequence_id(7);
  next.add_token_ids(6);
  next.set_start_pos(5);
  next.add_block_table(0);
  next.add_block_table(1);
  next.set_prompt_len(5);
  next.set_sample(true);
  EXPECT_TRUE(t.Validate(Plan({next})).ok());
  next.set_start_pos(4);
  ExpectInvalid(t, Plan({next}), "start_pos 4 but the worker has 5 tokens");
}

TEST(SequenceTableTest, ScoresTheTargetsOfItsScoredRowsAndSamplesFromTheLastRow) {
  // Five new tokens; tokens 2 and 3 are scored against targets 4 and 9. The model then returns
  // logits for new tokens 2, 3 and 4 (from score_from on), the last one to sample from.
  SequenceTable t(Limits());
  v1::SequencePlan s = First(3, {1, 2, 3, 4, 5}, {0, 1});
  s.set_argmax_only(true);  // ignored when scoring: the rows are needed
  s.set_score_from(2);
  s.add_score_targets(4);
  s.add_score_targets(9);
  const v1::StepPlan p = Plan({s});
  ASSERT_TRUE(t.Validate(p).ok()) << t.Validate(p);
  const model::StepBatch batch = BatchFromPlan(p);
  ASSERT_EQ(batch.sequences.size(), 1u);
  EXPECT_TRUE(batch.sequences[0].all_logits);
  EXPECT_EQ(batch.sequences[0].logits_from, 2);
  EXPECT_FALSE(batch.sequences[0].argmax_only);

  model::StepLogits l = Logits(3, 6);  // every row: 5 at id 6, 0 elsewhere
  l.row_begin = {0};
  l.values[1 * 10 + 9] = 7.f;  // row 1 (new token 3): its target 9 is now the argmax
  l.values[2 * 10 + 8] = 9.f;  // row 2 (the last): greedy sampling takes 8
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(p, l, &r).ok());
  ASSERT_EQ(r.results_size(), 1);
  const v1::SequenceResult& out = r.results(0);
  ASSERT_EQ(out.target_scores_size(), 2);
  // Row 0: log-softmax of 0 among {5, 0 x 9}.
  const double lse0 = std::log(std::exp(5.0) + 9.0);
  EXPECT_NEAR(out.target_scores(0).logprob(), 0.0 - lse0, 1e-5);
  EXPECT_EQ(out.target_scores(0).greedy_token_id(), 6);
  const double lse1 = std::log(std::exp(5.0) + std::exp(7.0) + 8.0);
  EXPECT_NEAR(out.target_scores(1).logprob(), 7.0 - lse1, 1e-5);
  EXPECT_EQ(out.target_scores(1).greedy_token_id(), 9);
  EXPECT_TRUE(out.sampled());
  EXPECT_EQ(out.token_id(), 8);
}

TEST(SequenceTableTest, RefusesScoringThatDoesNotFitItsTokens) {
  SequenceTable t(Limits());
  v1::SequencePlan s = First(3, {1, 2, 3}, {0});
  s.set_score_from(2);
  s.add_score_targets(4);
  s.add_score_targets(5);
  ExpectInvalid(t, Plan({s}), "does not fit the 3 new tokens");
  s.set_score_from(1);
  s.set_score_targets(1, 10);
  ExpectInvalid(t, Plan({s}), "score target 10 out of range");
  s.set_score_targets(1, 5);
  s.set_return_logits(true);
  ExpectInvalid(t, Plan({s}), "score_targets and return_logits conflict");
}

TEST(SequenceTableTest, RefusesMalformedPlans) {
  SequenceTable t(Limits());
  ExpectInvalid(t, v1::StepPlan(), "no sequences");
  ExpectInvalid(t, Plan({First(1, {1}, {9})}), "block id 9 out of range [0, 8)");
  ExpectInvalid(t, Plan({First(1, {1}, {-1})}), "block id -1");
  ExpectInvalid(t, Plan({First(1, {10}, {0})}), "token id 10 out of range");
  ExpectInvalid(t, Plan({First(1, {1, 2, 3, 4, 5}, {0})}), "block table has 1 blocks");
  ExpectInvalid(t, Plan({First(1, {}, {0})}), "no new tokens");
  ExpectInvalid(t, Plan({First(1, {1}, {0}), First(1, {1}, {1})}), "appears twice");
  ExpectInvalid(t, Plan({First(1, {1}, {0}), First(2, {1}, {1}), First(3, {1}, {2}),
                         First(4, {1}, {3}), First(5, {1}, {4})}),
                "at most 4 per step");
  v1::SequencePlan far = First(1, {1}, {0, 1, 2, 3, 4, 5, 6, 7});
  far.set_start_pos(32);
  far.set_first_step(false);
  ExpectInvalid(t, Plan({far}), "exceed the model's context of 32");
  v1::SequencePlan unknown = First(3, {1}, {0});
  unknown.set_first_step(false);
  ExpectInvalid(t, Plan({unknown}), "unknown sequence");
  v1::SequencePlan bad_sampling = First(3, {1}, {0});
  bad_sampling.mutable_sampling()->set_top_p(1.5);
  ExpectInvalid(t, Plan({bad_sampling}), "top_p");
  v1::SequencePlan prefix = First(3, {1}, {0, 1});
  prefix.set_start_pos(4);
  ExpectInvalid(t, Plan({prefix}), "prefix_ids has 0 ids but start_pos is 4");
  v1::SequencePlan early = First(3, {1, 2}, {0});
  early.set_prompt_len(5);
  ExpectInvalid(t, Plan({early}), "before the prompt");
  // A refused plan changed nothing.
  EXPECT_EQ(t.size(), 0);
}

TEST(SequenceTableTest, ArgmaxOnlyTakesTheLmHeadsTokenAndIsRefusedWhereTheRowIsNeeded) {
  SequenceTable t(Limits());
  v1::SequencePlan greedy = First(1, {1, 2}, {0});
  greedy.mutable_sampling()->set_skip_logprob(true);
  greedy.set_argmax_only(true);
  v1::SequencePlan sampled = First(2, {3}, {1});  // a logits row, in the same step
  const v1::StepPlan p = Plan({greedy, sampled});
  ASSERT_TRUE(t.Validate(p).ok()) << t.Validate(p);
  model::StepLogits l = Logits(1, 4);  // row 0 -> sequence 2; sequence 1 has no row
  l.row_begin = {0, 1};
  l.value_row = {-1, 0};
  l.greedy_token = {7, -1};
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(p, l, &r).ok());
  EXPECT_EQ(r.results(0).token_id(), 7);
  EXPECT_EQ(r.results(0).logprob(), 0.f);
  EXPECT_EQ(r.results(1).token_id(), 4);

  // A row with no finite logit is an error, as it is for the sampler.
  SequenceTable t2(Limits());
  l.greedy_token = {-1, -1};
  EXPECT_EQ(t2.Commit(p, l, &r).code(), absl::StatusCode::kInvalidArgument);

  // Refused where the sampler needs the row: logprobs, penalties, temperature, return_logits;
  // also on a later step, from the parameters the worker kept.
  v1::SequencePlan logprob = First(3, {1}, {2});
  logprob.set_argmax_only(true);
  ExpectInvalid(t, Plan({logprob}), "needs the logits row");
  v1::SequencePlan penalty = greedy;
  penalty.set_sequence_id(4);
  penalty.mutable_sampling()->set_repetition_penalty(1.2f);
  ExpectInvalid(t, Plan({penalty}), "needs the logits row");
  v1::SequencePlan hot = greedy;
  hot.set_sequence_id(4);
  hot.mutable_sampling()->set_temperature(0.7f);
  ExpectInvalid(t, Plan({hot}), "needs the logits row");
  v1::SequencePlan with_logits = greedy;
  with_logits.set_sequence_id(4);
  with_logits.set_return_logits(true);
  ExpectInvalid(t, Plan({with_logits}), "conflict");
  v1::SequencePlan later;
  later.set_sequence_id(2);  // known, sampled at temperature 0 but with the logprob
  later.add_token_ids(4);
  later.set_start_pos(1);
  later.add_block_table(1);
  later.set_prompt_len(1);
  later.set_sample(true);
  later.set_argmax_only(true);
  ExpectInvalid(t, Plan({later}), "needs the logits row");
}

// A decode planned while the previous step was in flight carries the placeholder; the table
// fills in the token it sampled there, and refuses the placeholder anywhere else.
TEST(SequenceTableTest, ResolvesTheSampledTokenPlaceholder) {
  SequenceTable t(Limits());
  v1::StepPlan first = Plan({First(7, {1, 2, 3}, {0, 1})});
  v1::SequencePlan ahead;
  ahead.set_sequence_id(7);
  ahead.add_token_ids(kSampledToken);
  ahead.set_start_pos(3);
  ahead.add_block_table(0);
  ahead.add_block_table(1);
  ahead.set_prompt_len(3);
  ahead.set_sample(true);
  v1::StepPlan next = Plan({ahead});
  // Nothing sampled yet at position 3.
  EXPECT_EQ(t.ResolveSampledTokens(&next).code(), absl::StatusCode::kInvalidArgument);
  v1::StepResult r;
  ASSERT_TRUE(t.Commit(first, Logits(1, 6), &r).ok());
  ASSERT_TRUE(t.ResolveSampledTokens(&next).ok());
  EXPECT_EQ(next.sequences(0).token_ids(0), 6);
  ASSERT_TRUE(t.Validate(next).ok()) << t.Validate(next);
  ASSERT_TRUE(t.Commit(next, Logits(1, 2), &r).ok());
  // The next placeholder stands for position 4, sampled just now; one for position 3 is stale.
  v1::StepPlan stale = Plan({ahead});
  ExpectInvalid(t, stale, "token id -1 out of range");
  EXPECT_EQ(t.ResolveSampledTokens(&stale).code(), absl::StatusCode::kInvalidArgument);
  ahead.set_start_pos(4);
  v1::StepPlan later = Plan({ahead});
  ASSERT_TRUE(t.ResolveSampledTokens(&later).ok());
  EXPECT_EQ(later.sequences(0).token_ids(0), 2);
  // Unknown sequences and first steps cannot use it.
  v1::SequencePlan unknown = ahead;
  unknown.set_sequence_id(99);
  v1::StepPlan bad = Plan({unknown});
  EXPECT_EQ(t.ResolveSampledTokens(&bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SequenceTableTest, TooManyTokensInOneStep) {
  StepLimits l = Limits();
  l.max_step_tokens = 3;
  SequenceTable t(l);
  ExpectInvalid(t, Plan({First(1, {1, 2}, {0}), First(2, {1, 2}, {1})}), "4 new tokens");
}

TEST(SequenceTableTest, SeededSamplingFollowsTheGeneratedIndexAcrossARestart) {
  // Same sequence run twice, the second time as a recompute (first_step again): same tokens.
  auto run = [](SequenceTable& t, uint64_t id) {
    v1::SequencePlan s = First(id, {1, 2, 3}, {0, 1});
    s.mutable_sampling()->set_temperature(1.0);
    s.mutable_sampling()->set_seed(42);
    model::StepLogits flat;
    flat.vocab_size = 10;
    flat.row_begin = {0};
    flat.values.assign(10, 0.f);  // uniform: the draw depends on the seed and step only
    std::vector<int32_t> out;
    v1::StepResult r;
    EXPECT_TRUE(t.Validate(Plan({s})).ok());
    EXPECT_TRUE(t.Commit(Plan({s}), flat, &r).ok());
    out.push_back(r.results(0).token_id());
    for (int step = 0; step < 4; ++step) {
      v1::SequencePlan d;
      d.set_sequence_id(id);
      d.add_token_ids(out.back());
      d.set_start_pos(3 + step);
      d.add_block_table(0);
      d.add_block_table(1);
      d.set_prompt_len(3);
      d.set_sample(true);
      v1::StepResult rr;
      EXPECT_TRUE(t.Validate(Plan({d})).ok()) << t.Validate(Plan({d}));
      EXPECT_TRUE(t.Commit(Plan({d}), flat, &rr).ok());
      out.push_back(rr.results(0).token_id());
    }
    return out;
  };
  SequenceTable t(Limits());
  std::vector<int32_t> a = run(t, 1);
  google::protobuf::RepeatedField<uint64_t> ids;
  ids.Add(1);
  EXPECT_EQ(t.Release(ids), 1);
  EXPECT_EQ(t.Release(ids), 0);
  std::vector<int32_t> b = run(t, 1);
  EXPECT_EQ(a, b);
  std::vector<int32_t> c = run(t, 2);
  EXPECT_EQ(a, c);  // the seed, not the sequence id, decides
}

}  // namespace
}  // namespace caduceus::worker
