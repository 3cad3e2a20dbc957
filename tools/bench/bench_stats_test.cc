#include "tools/bench/bench_stats.h"

#include <gtest/gtest.h>

namespace caduceus::tools {
namespace {

TEST(PercentileTest, SingleSampleIsEveryPercentile) {
  const std::vector<double> v = {2.5};
  EXPECT_DOUBLE_EQ(Percentile(v, 0.0), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 1.0), 2.5);
}

TEST(PercentileTest, InterpolatesLinearlyLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) == [2.5, 3.7, 3.97]
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(Percentile(v, 0.50), 2.5);
  EXPECT_NEAR(Percentile(v, 0.90), 3.7, 1e-12);
  EXPECT_NEAR(Percentile(v, 0.99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 1.0), 4.0);
}

TEST(PercentileTest, ExactRanksNeedNoInterpolation) {
  std::vector<double> v;
  for (int i = 0; i <= 100; ++i) v.push_back(i);  // rank k holds value k
  EXPECT_DOUBLE_EQ(Percentile(v, 0.50), 50.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.90), 90.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.99), 99.0);
}

TEST(PercentileTest, OutOfRangeQuantilesClamp) {
  const std::vector<double> v = {1, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, -1.0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 2.0), 2.0);
}

TEST(SummarizeTest, EmptyHasNoSummary) { EXPECT_FALSE(Summarize({}).has_value()); }

TEST(SummarizeTest, SortsUnorderedSamplesAndAverages) {
  auto s = Summarize({4, 1, 3, 2});
  ASSERT_TRUE(s.has_value());
  EXPECT_DOUBLE_EQ(s->p50, 2.5);
  EXPECT_NEAR(s->p90, 3.7, 1e-12);
  EXPECT_NEAR(s->p99, 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(s->mean, 2.5);
  EXPECT_EQ(s->count, 4u);
  EXPECT_LE(s->p50, s->p90);
  EXPECT_LE(s->p90, s->p99);
}

TEST(SummarizeTest, ConstantSamples) {
  auto s = Summarize(std::vector<double>(7, 0.125));
  ASSERT_TRUE(s.has_value());
  EXPECT_DOUBLE_EQ(s->p50, 0.125);
  EXPECT_DOUBLE_EQ(s->p99, 0.125);
  EXPECT_DOUBLE_EQ(s->mean, 0.125);
}

}  // namespace
}  // namespace caduceus::tools
