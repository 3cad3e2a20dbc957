#include "worker/sampling/sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caduceus::sampling {
namespace {

using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int32_t kLlamaVocab = 128256;

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

int32_t SampleToken(const SequenceSampler& s, const std::vector<float>& logits, uint64_t step = 0) {
  absl::StatusOr<SampleResult> r = s.Sample(logits, step);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->token : -1;
}

std::vector<float> RandomLogits(size_t n, uint32_t seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// float64 log-softmax, the reference for every logprob.
std::vector<double> LogSoftmax64(const std::vector<float>& logits) {
  double m = -std::numeric_limits<double>::infinity();
  for (float x : logits) m = std::max(m, static_cast<double>(x));
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - m);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - m - std::log(sum);
  return out;
}

TEST(SamplerGreedyTest, ArgmaxTiesToLowestId) {
  SequenceSampler s(Greedy(), {});
  EXPECT_EQ(SampleToken(s, {1.0f, 5.0f, 3.0f, 5.0f}), 1);
  EXPECT_EQ(SampleToken(s, {7.0f, 7.0f, 7.0f}), 0);
  EXPECT_EQ(SampleToken(s, {-3.0f, -1.0f, -2.0f}), 1);
}

TEST(SamplerGreedyTest, LargeVocabArgmaxAndTies) {
  std::vector<float> logits = RandomLogits(kLlamaVocab, 1, 3.0f);
  logits[100000] = 50.0f;
  logits[77777] = 50.0f;
  SequenceSampler s(Greedy(), {});
  EXPECT_EQ(SampleToken(s, logits), 77777);
  logits[kLlamaVocab - 1] = 60.0f;
  EXPECT_EQ(SampleToken(s, logits), kLlamaVocab - 1);
}

// skip_logprob leaves the draw alone (same token for greedy, plain, top-p and penalized
// sampling, every step) and only drops the chosen token's logprob; top-n alternatives asked
// for are still exact.
TEST(SamplerSkipLogprobTest, SameTokensNoLogprobTopNStillExact) {
  const std::vector<float> logits = RandomLogits(kLlamaVocab, 11, 2.5f);
  const std::vector<double> ref = LogSoftmax64(logits);
  std::vector<SamplingParams> cases(4);
  cases[0].temperature = 0.0f;
  cases[1].temperature = 1.0f;
  cases[2].temperature = 0.8f;
  cases[2].top_p = 0.9f;
  cases[3].temperature = 1.0f;
  cases[3].repetition_penalty = 1.3f;
  for (size_t c = 0; c < cases.size(); ++c) {
    SamplingParams skip = cases[c];
    skip.skip_logprob = true;
    const std::vector<int32_t> prompt = {5, 6, 7};
    SequenceSampler with(cases[c], prompt), without(skip, prompt);
    for (uint64_t step = 0; step < 20; ++step) {
      auto a = with.Sample(logits, step), b = without.Sample(logits, step);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(a->token, b->token) << "case " << c << " step " << step;
      EXPECT_NEAR(a->logprob, ref[a->token], 1e-4) << "case " << c;
      EXPECT_EQ(b->logprob, 0.0f) << "case " << c;
    }
  }
  SamplingParams top = Greedy();
  top.skip_logprob = true;
  top.top_logprobs = 3;
  auto r = SequenceSampler(top, {}).Sample(logits, 0);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->top_logprobs.size(), 3u);
  EXPECT_EQ(r->top_logprobs[0].token, r->token);
  for (const TokenLogprob& t : r->top_logprobs) EXPECT_NEAR(t.logprob, ref[t.token], 1e-4);
}

TEST(SamplerGreedyTest, IgnoresTruncationParameters) {
  SamplingParams p = Greedy();
  p.top_k = 1;
  p.top_p = 0.01f;
  p.min_p = 1.0f;
  SequenceSampler s(p, {});
  EXPECT_EQ(SampleToken(s, {0.1f, 0.3f, 0.3f, 0.2f}), 1);
}

TEST(SamplerGreedyTest, TinyTemperatureIsGreedy) {
  SamplingParams p;
  p.temperature = 1e-6f;
  SequenceSampler s(p, {});
  for (uint64_t step = 0; step < 50; ++step) EXPECT_EQ(SampleToken(s, {1.0f, 1.0f, 0.9f}, step), 0);
}

TEST(SamplerNonFiniteTest, NaNIsMinusInfAndPlusInfWins) {
  SequenceSampler s(Greedy(), {});
  EXPECT_EQ(SampleToken(s, {kNaN, 2.0f, kNaN}), 1);
  absl::StatusOr<SampleResult> r = s.Sample(std::vector<float>{kNaN, 2.0f, kInf, kInf, 1.0f}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->token, 2);
  EXPECT_NEAR(r->logprob, -std::log(2.0), 1e-6);
  // Sampling never picks a NaN or -inf token.
  SamplingParams p;
  p.temperature = 5.0f;
  SequenceSampler t(p, {});
  std::vector<float> logits = {kNaN, 0.0f, -kInf, 0.0f, kNaN};
  for (uint64_t step = 0; step < 200; ++step) {
    int32_t tok = SampleToken(t, logits, step);
    EXPECT_TRUE(tok == 1 || tok == 3) << tok;
  }
}

TEST(SamplerNonFiniteTest, AllNonFiniteOrEmptyIsAnError) {
  SequenceSampler s(SamplingParams{}, {});
  absl::StatusOr<SampleResult> r = s.Sample(std::vector<float>{kNaN, -kInf}, 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = s.Sample(std::span<const float>(), 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("empty"));
}

TEST(SamplerNonFiniteTest, InvalidParamsSurfaceFromSample) {
  SamplingParams p;
  p.top_p = 1.5f;
  SequenceSampler s(p, {});
  absl::StatusOr<SampleResult> r = s.Sample(std::vector<float>{1.0f}, 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("top_p"));
}

TEST(SamplerPenaltyTest, RepetitionDividesPositiveExactly) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0, 0, 0};  // counted once, not three times
  SequenceSampler s(p, prompt);
  EXPECT_EQ(SampleToken(s, {2.0f, 0.999f}), 0);  // 1.0 > 0.999
  EXPECT_EQ(SampleToken(s, {2.0f, 1.001f}), 1);  // 1.0 < 1.001
}

TEST(SamplerPenaltyTest, RepetitionMultipliesNegativeExactly) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  SequenceSampler s(p, prompt);
  EXPECT_EQ(SampleToken(s, {-1.0f, -1.999f}), 1);  // -2.0 < -1.999
  EXPECT_EQ(SampleToken(s, {-1.0f, -2.001f}), 0);  // -2.0 > -2.001
  EXPECT_EQ(SampleToken(s, {-1.0f, -1.999f, -5.0f}), 1);
}

TEST(SamplerPenaltyTest, RepetitionCoversGeneratedTokens) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  SequenceSampler s(p, {});
  EXPECT_EQ(SampleToken(s, {2.0f, 1.5f}), 0);
  s.Accept(0);
  EXPECT_EQ(SampleToken(s, {2.0f, 1.5f}), 1);
}

TEST(SamplerPenaltyTest, FrequencyCountsGeneratedOnly) {
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.5f;
  const std::vector<int32_t> prompt = {0, 0, 0, 0};  // the prompt does not count
  SequenceSampler s(p, prompt);
  EXPECT_EQ(SampleToken(s, {2.0f, 1.9f}), 0);
  s.Accept(0);
  s.Accept(0);  // 2.0 - 0.5 * 2 = 1.0
  EXPECT_EQ(SampleToken(s, {2.0f, 0.99f}), 0);
  EXPECT_EQ(SampleToken(s, {2.0f, 1.01f}), 1);
}

TEST(SamplerPenaltyTest, PresenceIsAppliedOnce) {
  SamplingParams p = Greedy();
  p.presence_penalty = 0.5f;
  SequenceSampler s(p, {});
  for (int i = 0; i < 3; ++i) s.Accept(0);  // 2.0 - 0.5 = 1.5 whatever the count
  EXPECT_EQ(SampleToken(s, {2.0f, 1.49f}), 0);
  EXPECT_EQ(SampleToken(s, {2.0f, 1.51f}), 1);
}

TEST(SamplerPenaltyTest, NegativeFrequencyEncourages) {
  SamplingParams p = Greedy();
  p.frequency_penalty = -2.0f;
  SequenceSampler s(p, {});
  s.Accept(0);
  EXPECT_EQ(SampleToken(s, {1.0f, 2.9f}), 0);  // 1 + 2 = 3 > 2.9
}

TEST(SamplerPenaltyTest, RepetitionBeforeFrequency) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 0.1f;
  SequenceSampler s(p, {});
  s.Accept(0);
  // repetition first: 4 / 2 - 0.1 = 1.9 < 1.92; frequency first would give 1.95.
  EXPECT_EQ(SampleToken(s, {4.0f, 1.92f}), 1);
  EXPECT_EQ(SampleToken(s, {4.0f, 1.88f}), 0);
}

TEST(SamplerPenaltyTest, OutOfVocabIdsAreIgnored) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 3.0f;
  p.presence_penalty = 1.0f;
  const std::vector<int32_t> prompt = {-5, 999, 1};
  SequenceSampler s(p, prompt);
  s.Accept(12345);
  s.Accept(-1);
  EXPECT_EQ(SampleToken(s, {1.0f, 2.0f, 0.5f}), 0);  // token 1: 2 / 3 < 1
}

TEST(SamplerPenaltyTest, PenaltiesCanMakeEveryLogitMinusInf) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  SequenceSampler s(p, prompt);
  std::vector<float> logits = {-3e38f, -kInf};  // -3e38 * 2 overflows to -inf
  EXPECT_EQ(s.Sample(logits, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SamplerLogprobTest, MatchesFloat64LogSoftmaxOfRawLogits) {
  std::vector<float> logits = RandomLogits(kLlamaVocab, 7, 4.0f);
  logits[5] = 25.0f;
  logits[6] = 25.0f;  // a tie inside the top alternatives
  const std::vector<double> ref = LogSoftmax64(logits);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });

  // Penalties and temperature change the draw but never the reported logprobs.
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 40;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.4f;
  p.top_logprobs = 20;
  const std::vector<int32_t> prompt = {5, 100, 200};
  SequenceSampler s(p, prompt);
  s.Accept(6);
  for (uint64_t step = 0; step < 20; ++step) {
    absl::StatusOr<SampleResult> r = s.Sample(logits, step);
    ASSERT_TRUE(r.ok());
    EXPECT_NEAR(r->logprob, ref[r->token], 1e-5);
    ASSERT_EQ(r->top_logprobs.size(), 20u);
    for (size_t i = 0; i < 20; ++i) {
      EXPECT_EQ(r->top_logprobs[i].token, order[i]) << i;
      EXPECT_NEAR(r->top_logprobs[i].logprob, ref[order[i]], 1e-5);
      if (i > 0) {
        EXPECT_LE(r->top_logprobs[i].logprob, r->top_logprobs[i - 1].logprob);
      }
    }
  }
  EXPECT_EQ(order[0], 5);
  EXPECT_EQ(order[1], 6);
}

TEST(SamplerLogprobTest, FlatAndSmallRows) {
  SamplingParams p;
  p.top_logprobs = 5;
  SequenceSampler s(p, {});
  absl::StatusOr<SampleResult> r = s.Sample(std::vector<float>{0.0f, 0.0f, 0.0f}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->logprob, -std::log(3.0), 1e-6);
  ASSERT_EQ(r->top_logprobs.size(), 3u);  // fewer than asked: the vocabulary is smaller
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r->top_logprobs[i].token, i);
}

TEST(SamplerDeterminismTest, SameSeedSameTokensWhateverTheOrderOrThread) {
  std::vector<float> logits = RandomLogits(kLlamaVocab, 3, 2.0f);
  SamplingParams p;
  p.seed = 42;
  p.top_p = 0.95f;
  SequenceSampler a(p, {});
  SequenceSampler b(p, {});
  constexpr int kSteps = 64;
  std::vector<int32_t> forward(kSteps);
  for (int i = 0; i < kSteps; ++i) forward[i] = SampleToken(a, logits, i);
  for (int i = kSteps - 1; i >= 0; --i) EXPECT_EQ(SampleToken(b, logits, i), forward[i]);
  // Concurrent calls on one const sampler (each thread has its own scratch).
  std::vector<std::vector<int32_t>> per_thread(3, std::vector<int32_t>(kSteps));
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSteps; ++i) per_thread[t][i] = a.Sample(logits, i)->token;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& v : per_thread) EXPECT_EQ(v, forward);
  // Steps differ from one another: not the same token every time on a flat-ish distribution.
  EXPECT_GT(std::set<int32_t>(forward.begin(), forward.end()).size(), 10u);
}

TEST(SamplerDeterminismTest, DifferentSeedsDiffer) {
  std::vector<float> logits(16, 0.0f);
  SamplingParams p1;
  p1.seed = 1;
  SamplingParams p2 = p1;
  p2.seed = 2;
  SequenceSampler a(p1, {});
  SequenceSampler b(p2, {});
  int same = 0;
  for (uint64_t step = 0; step < 400; ++step)
    same += SampleToken(a, logits, step) == SampleToken(b, logits, step);
  // Independent uniform draws over 16 tokens agree ~1/16 of the time (25 of 400).
  EXPECT_LT(same, 60);
}

TEST(SamplerTruncationTest, TopKOneIsArgmaxAndTiesKeepLowestIds) {
  SamplingParams p;
  p.top_k = 1;
  SequenceSampler s(p, {});
  std::vector<float> logits = RandomLogits(kLlamaVocab, 5, 3.0f);
  const int32_t best = std::max_element(logits.begin(), logits.end()) - logits.begin();
  for (uint64_t step = 0; step < 20; ++step) EXPECT_EQ(SampleToken(s, logits, step), best);

  p.top_k = 2;
  SequenceSampler t(p, {});
  for (uint64_t step = 0; step < 200; ++step)
    EXPECT_LT(SampleToken(t, {1.0f, 1.0f, 1.0f, 1.0f}, step), 2);
}

TEST(SamplerTruncationTest, MinPOneKeepsOnlyTheMaxima) {
  SamplingParams p;
  p.min_p = 1.0f;
  SequenceSampler s(p, {});
  for (uint64_t step = 0; step < 200; ++step) {
    const int32_t tok = SampleToken(s, {1.0f, 3.0f, 2.999f, 3.0f}, step);
    EXPECT_TRUE(tok == 1 || tok == 3);
  }
}

TEST(SamplerTruncationTest, FewerFiniteLogitsThanTopK) {
  std::vector<float> logits(1000, -kInf);
  logits[10] = 1.0f;
  logits[500] = 0.5f;
  logits[999] = kNaN;
  logits[7] = -200.0f;  // finite but weightless at any sane temperature
  SamplingParams p;
  p.top_k = 50;
  p.top_p = 0.99f;
  p.min_p = 0.01f;
  SequenceSampler s(p, {});
  for (uint64_t step = 0; step < 300; ++step) {
    const int32_t tok = SampleToken(s, logits, step);
    EXPECT_TRUE(tok == 10 || tok == 500) << tok;
  }
}

TEST(SamplerTruncationTest, ExtremeValuesAndTemperatures) {
  // Logits spanning the whole float range and absurd temperatures must neither crash nor pick
  // a -inf / NaN token.
  std::vector<float> logits(3000, 0.0f);
  for (size_t i = 0; i < logits.size(); ++i)
    logits[i] = (i % 3 == 0) ? -FLT_MAX : (i % 3 == 1 ? FLT_MAX : 1.0f);
  logits[5] = -kInf;
  logits[8] = kNaN;
  for (float t : {1e-4f, 1.0f, 1e30f, 3e38f}) {
    for (float top_p : {0.5f, 1.0f}) {
      SamplingParams p;
      p.temperature = t;
      p.top_p = top_p;
      p.top_k = top_p < 1.0f ? 0 : 100;
      SequenceSampler s(p, {});
      for (uint64_t step = 0; step < 20; ++step) {
        const int32_t tok = SampleToken(s, logits, step);
        EXPECT_TRUE(tok >= 0 && tok != 5 && tok != 8) << tok;
      }
    }
  }
}

TEST(SamplerTruncationTest, HugeTopKIsDisabled) {
  SamplingParams p;
  p.top_k = 1 << 30;
  SequenceSampler s(p, {});
  for (uint64_t step = 0; step < 50; ++step) {
    const int32_t tok = SampleToken(s, {0.0f, 0.0f, -kInf}, step);
    EXPECT_TRUE(tok == 0 || tok == 1);
  }
}

}  // namespace
}  // namespace caduceus::sampling
