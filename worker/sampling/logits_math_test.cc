#include "worker/sampling/logits_math.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace caduceus::sampling::internal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(LogitsMathTest, FastExpMatchesStdExp) {
  EXPECT_EQ(FastExpNonPositive(0.0f), 1.0f);
  EXPECT_EQ(FastExpNonPositive(-kInf), 0.0f);
  EXPECT_EQ(FastExpNonPositive(-87.5f), 0.0f);
  double worst = 0.0;
  for (float x = -86.9f; x <= 0.0f; x += 0.0137f) {
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(FastExpNonPositive(x) - ref) / ref);
  }
  EXPECT_LT(worst, 5e-7);
}

TEST(LogitsMathTest, SanitizeMapsNonFinite) {
  EXPECT_EQ(Sanitize(std::numeric_limits<float>::quiet_NaN()), -kInf);
  EXPECT_EQ(Sanitize(kInf), FLT_MAX);
  EXPECT_EQ(Sanitize(-kInf), -kInf);
  EXPECT_EQ(Sanitize(1.5f), 1.5f);
}

TEST(LogitsMathTest, BlockMaxFirstIndexAndCollect) {
  std::vector<float> x(200, 0.0f);
  x[70] = 3.0f;
  x[150] = 3.0f;
  x[199] = 2.0f;
  std::vector<float> bm;
  EXPECT_EQ(BlockMax(x, &bm), 3.0f);
  ASSERT_EQ(bm.size(), 4u);
  EXPECT_EQ(FirstIndexOf(x, bm, 3.0f), 70);
  std::vector<IdValue> got;
  ASSERT_EQ(CollectAtLeast(x, bm, 2.0f, &got), 3u);
  EXPECT_EQ(got[0].id, 70);
  EXPECT_EQ(got[1].id, 150);
  EXPECT_EQ(got[2].id, 199);
}

TEST(LogitsMathTest, TopNOrdersByValueThenId) {
  std::vector<float> x(300, -1.0f);
  x[250] = 5.0f;
  x[3] = 4.0f;
  x[100] = 4.0f;
  x[200] = 4.0f;
  std::vector<float> bm;
  BlockMax(x, &bm);
  std::vector<IdValue> top;
  TopN(x, bm, 3, &top);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].id, 250);
  EXPECT_EQ(top[1].id, 3);
  EXPECT_EQ(top[2].id, 100);
}

TEST(LogitsMathTest, SumExpIsAccurate) {
  std::vector<float> x(128256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(i * 0.37) * 6.0);
  double ref = 0.0;
  for (float v : x) ref += std::exp(static_cast<double>(v) - 6.0);
  EXPECT_NEAR(SumExp(x, 6.0f, 1.0f, nullptr) / ref, 1.0, 1e-6);
}

TEST(LogitsMathTest, UniformDrawIsInRangeAndUnbiased) {
  double sum = 0.0;
  for (uint64_t step = 0; step < 100000; ++step) {
    const double u = UniformDraw(7, step);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
  EXPECT_EQ(UniformDraw(3, 9), UniformDraw(3, 9));
  EXPECT_NE(UniformDraw(3, 9), UniformDraw(4, 9));
}

}  // namespace
}  // namespace caduceus::sampling::internal
