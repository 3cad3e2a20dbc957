// Statistical tests: empirical token frequencies over many steps (each step is an independent
// counter-based draw) against a float64 reference of the documented pipeline. Seeds are fixed,
// so every test is deterministic; the bounds are loose enough (p ~ 1e-4) to be meaningful.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "worker/sampling/sampler.h"

namespace caduceus::sampling {
namespace {

constexpr int kDefaultDraws = 40000;

// Reference distribution, written independently of the sampler: full sorts in float64.
std::vector<double> Expected(std::vector<float> z, const SamplingParams& p) {
  const size_t n = z.size();
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
  const double m = z[order[0]];
  std::vector<double> prob(n);
  for (size_t i = 0; i < n; ++i) prob[i] = std::exp((z[i] - m) / p.temperature);
  std::vector<bool> keep(n, true);
  auto renormalized = [&] {
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += keep[i] ? prob[i] : 0.0;
    std::vector<double> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = keep[i] ? prob[i] / total : 0.0;
    return out;
  };
  if (p.top_k > 0) {
    for (size_t r = p.top_k; r < n; ++r) keep[order[r]] = false;
  }
  if (p.top_p < 1.0f) {
    const std::vector<double> q = renormalized();
    double cumulative = 0.0;
    for (int32_t id : order) {
      if (!keep[id]) continue;
      if (cumulative >= p.top_p) keep[id] = false;
      cumulative += q[id];
    }
  }
  if (p.min_p > 0.0f) {
    for (size_t i = 0; i < n; ++i) keep[i] = keep[i] && prob[i] >= p.min_p;  // prob[max] == 1
  }
  return renormalized();
}

// Chi-square quantile for probability 1 - 1e-4 (Wilson-Hilferty approximation).
double ChiSquareBound(int df) {
  const double z = 3.72;
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

// Draws `draws` tokens at steps 0..draws-1, checks that tokens with expected probability 0 never
// appear, and runs a chi-square test over bins of consecutive ids holding >= 20 expected draws.
void CheckDistribution(const SequenceSampler& sampler, const std::vector<float>& logits,
                       const std::vector<double>& expected, int draws = kDefaultDraws) {
  std::vector<int> counts(logits.size(), 0);
  for (int step = 0; step < draws; ++step) {
    absl::StatusOr<SampleResult> r = sampler.Sample(logits, step);
    ASSERT_TRUE(r.ok()) << r.status();
    ++counts[r->token];
  }
  for (size_t i = 0; i < logits.size(); ++i) {
    if (expected[i] == 0.0) {
      ASSERT_EQ(counts[i], 0) << "token " << i << " should be excluded";
    }
  }
  double chi2 = 0.0;
  int bins = 0;
  double bin_expected = 0.0;
  double bin_observed = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    bin_expected += expected[i] * draws;
    bin_observed += counts[i];
    if (bin_expected >= 20.0 || i + 1 == logits.size()) {
      if (bin_expected > 0.0) {
        chi2 += (bin_observed - bin_expected) * (bin_observed - bin_expected) / bin_expected;
        ++bins;
      }
      bin_expected = 0.0;
      bin_observed = 0.0;
    }
  }
  if (bins < 2) return;  // a single bin carries no information beyond the exclusions
  EXPECT_LT(chi2, ChiSquareBound(bins - 1)) << "bins=" << bins;
}

const std::vector<float> kSmall = {1.0f, 2.5f, 0.3f, -1.0f, 2.0f, 0.0f, 1.7f, -3.0f, 0.9f, 2.2f};

struct Case {
  const char* name;
  SamplingParams params;
};

SamplingParams Make(float t, int32_t k, float top_p, float min_p, uint64_t seed) {
  SamplingParams p;
  p.temperature = t;
  p.top_k = k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  return p;
}

TEST(SamplerStatsTest, SmallVocabMatchesReference) {
  const std::vector<Case> cases = {
      {"plain", Make(1.0f, 0, 1.0f, 0.0f, 11)},
      {"temperature", Make(0.6f, 0, 1.0f, 0.0f, 12)},
      {"hot", Make(2.5f, 0, 1.0f, 0.0f, 13)},
      {"top_k", Make(1.3f, 3, 1.0f, 0.0f, 14)},
      {"top_p", Make(1.0f, 0, 0.75f, 0.0f, 15)},
      {"min_p", Make(1.0f, 0, 1.0f, 0.2f, 16)},
      {"all", Make(0.8f, 5, 0.8f, 0.1f, 17)},
      {"top_k_top_p", Make(1.5f, 4, 0.6f, 0.0f, 18)},
      {"top_k_min_p", Make(1.0f, 4, 1.0f, 0.3f, 19)},
      {"top_p_min_p", Make(0.9f, 0, 0.9f, 0.25f, 20)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SequenceSampler sampler(c.params, {});
    CheckDistribution(sampler, kSmall, Expected(kSmall, c.params));
  }
}

TEST(SamplerStatsTest, PenaltiesShiftTheDistribution) {
  SamplingParams p = Make(1.2f, 6, 0.9f, 0.0f, 21);
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.3f;
  p.presence_penalty = 0.4f;
  const std::vector<int32_t> prompt = {1, 3};
  SequenceSampler sampler(p, prompt);
  sampler.Accept(9);
  sampler.Accept(9);
  sampler.Accept(3);
  // Reference penalties, applied by hand: repetition on {1, 3, 9}, then frequency + presence on
  // the generated counts {9: 2, 3: 1}.
  std::vector<float> z = kSmall;
  for (int id : {1, 3, 9}) z[id] = z[id] > 0 ? z[id] / 1.5f : z[id] * 1.5f;
  z[9] = z[9] - 0.3f * 2 - 0.4f;
  z[3] = z[3] - 0.3f * 1 - 0.4f;
  CheckDistribution(sampler, kSmall, Expected(z, p));
}

// A row where the nucleus is wider than the first candidate threshold, exercising the widening
// path: one dominant token and a long flat tail with a ragged top-p cut inside the ties.
TEST(SamplerStatsTest, WideNucleusOnLargerVocab) {
  std::vector<float> logits(5000, 0.0f);
  logits[0] = 10.0f;
  for (int i = 4000; i < 5000; ++i) logits[i] = -50.0f;
  SamplingParams p = Make(1.0f, 0, 0.95f, 0.0f, 31);
  SequenceSampler sampler(p, {});
  CheckDistribution(sampler, logits, Expected(logits, p), /*draws=*/10000);

  SamplingParams q = Make(0.9f, 2000, 0.97f, 0.0f, 32);
  SequenceSampler sampler_k(q, {});
  CheckDistribution(sampler_k, logits, Expected(logits, q), /*draws=*/10000);
}

TEST(SamplerStatsTest, LlamaSizedVocab) {
  std::vector<float> logits(128256);
  for (size_t i = 0; i < logits.size(); ++i) {
    logits[i] = static_cast<float>(std::sin(i * 1.618) * 3.0 - (i % 7));
  }
  logits[1234] = 9.0f;
  logits[99999] = 8.5f;
  logits[4321] = 8.0f;
  SamplingParams p = Make(0.7f, 50, 0.9f, 0.0f, 41);
  SequenceSampler sampler(p, {});
  CheckDistribution(sampler, logits, Expected(logits, p), /*draws=*/10000);
}

}  // namespace
}  // namespace caduceus::sampling
