// OpenAI's logit_bias in the sampler: added after the penalties, before temperature and
// truncation; logprobs keep describing the model's own distribution.
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "worker/sampling/sampler.h"

namespace caduceus::sampling {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingParams Greedy(std::vector<std::pair<int32_t, float>> bias) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logit_bias = std::move(bias);
  return p;
}

int32_t Token(const SequenceSampler& s, const std::vector<float>& logits, uint64_t step = 0) {
  absl::StatusOr<SampleResult> r = s.Sample(logits, step);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->token : -1;
}

TEST(LogitBiasTest, ForcesAndBansTokens) {
  const std::vector<float> logits = {5.0f, 1.0f, 3.0f, -2.0f};
  EXPECT_EQ(Token(SequenceSampler(Greedy({}), {}), logits), 0);
  EXPECT_EQ(Token(SequenceSampler(Greedy({{3, 100.0f}}), {}), logits), 3);   // forced
  EXPECT_EQ(Token(SequenceSampler(Greedy({{0, -100.0f}}), {}), logits), 2);  // banned
  // Exactly additive: 1 + 2.5 = 3.5 > 3 but 1 + 1.5 = 2.5 < 3 (after 0 is banned).
  EXPECT_EQ(Token(SequenceSampler(Greedy({{0, -100.0f}, {1, 2.5f}}), {}), logits), 1);
  EXPECT_EQ(Token(SequenceSampler(Greedy({{0, -100.0f}, {1, 1.5f}}), {}), logits), 2);
  // Ids outside the row are ignored; a -inf logit stays -inf whatever its bias.
  EXPECT_EQ(Token(SequenceSampler(Greedy({{7, 100.0f}, {-1, 100.0f}}), {}), logits), 0);
  EXPECT_EQ(Token(SequenceSampler(Greedy({{1, 100.0f}}), {}), {0.0f, -kInf}), 0);
}

TEST(LogitBiasTest, AppliesAfterThePenalties) {
  SamplingParams p = Greedy({{0, 1.0f}});
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  SequenceSampler s(p, prompt);
  // 4 / 2 + 1 = 3 < 3.1; bias first would give (4 + 1) / 2 = 2.5, and penalty-free 5 > 3.1.
  EXPECT_EQ(Token(s, {4.0f, 3.1f}), 1);
  EXPECT_EQ(Token(s, {4.0f, 2.9f}), 0);
}

TEST(LogitBiasTest, ShiftsTheSampledDistributionAndNotTheLogprobs) {
  // Two equal logits; a bias of ln 3 on token 1 makes it three times as likely: P = 0.75.
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 11;
  p.logit_bias = {{1, std::log(3.0f)}};
  SequenceSampler s(p, {});
  int ones = 0;
  constexpr int kDraws = 8000;
  for (int step = 0; step < kDraws; ++step) ones += Token(s, {0.0f, 0.0f}, step) == 1 ? 1 : 0;
  // Binomial(8000, 0.75): sd 0.0048; 6 sd either way.
  EXPECT_NEAR(static_cast<double>(ones) / kDraws, 0.75, 0.03);
  absl::StatusOr<SampleResult> r = s.Sample(std::vector<float>{0.0f, 0.0f}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_FLOAT_EQ(r->logprob, std::log(0.5f));  // the model's own distribution
}

TEST(LogitBiasTest, ValidationAndTheArgmaxShortcut) {
  SamplingParams p = Greedy({{5, 100.0f}, {6, -100.0f}});
  EXPECT_TRUE(p.Validate().ok());
  p.skip_logprob = true;
  EXPECT_FALSE(p.ArgmaxSuffices());  // the lm_head's plain argmax would ignore the bias
  p.logit_bias = {{5, 100.5f}};
  EXPECT_EQ(p.Validate().message(), "logit_bias of token 5 must be in [-100, 100], got 100.5");
  p.logit_bias = {{5, std::numeric_limits<float>::quiet_NaN()}};
  EXPECT_FALSE(p.Validate().ok());
  p.logit_bias = {{5, 1.0f}, {5, 2.0f}};
  EXPECT_EQ(p.Validate().message(), "logit_bias names token 5 twice");
  p.logit_bias.assign(kMaxLogitBiasEntries + 1, {0, 0.0f});
  for (int32_t i = 0; i <= kMaxLogitBiasEntries; ++i) p.logit_bias[i].first = i;
  EXPECT_EQ(p.Validate().message(), "logit_bias has 1025 entries; at most 1024");
}

}  // namespace
}  // namespace caduceus::sampling
