#include "worker/sampling/sampling_params.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caduceus::sampling {
namespace {

using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

void ExpectInvalid(const SamplingParams& p, const std::string& name, const std::string& range) {
  absl::Status s = p.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
  EXPECT_THAT(std::string(s.message()), HasSubstr(name));
  EXPECT_THAT(std::string(s.message()), HasSubstr(range));
}

TEST(SamplingParamsTest, DefaultsAreValid) { EXPECT_TRUE(SamplingParams{}.Validate().ok()); }

TEST(SamplingParamsTest, BoundaryValuesAreValid) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = 1;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repetition_penalty = 0.01f;
  p.frequency_penalty = -2.0f;
  p.presence_penalty = 2.0f;
  p.top_logprobs = 20;
  EXPECT_TRUE(p.Validate().ok());
  p.top_p = 1e-6f;
  p.min_p = 0.0f;
  p.temperature = 100.0f;
  p.top_logprobs = 0;
  EXPECT_TRUE(p.Validate().ok());
}

TEST(SamplingParamsTest, ExactMessageFormat) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_EQ(p.Validate().message(), "top_p must be in (0, 1], got 1.5");
}

struct FloatCase {
  std::function<void(SamplingParams&, float)> set;
  std::string name;
  std::string range;
  std::vector<float> bad;
};

TEST(SamplingParamsTest, EachFloatParameterRejectsOutOfRangeAndNaN) {
  const std::vector<FloatCase> cases = {
      {[](SamplingParams& p, float v) { p.temperature = v; },
       "temperature",
       ">= 0",
       {-0.1f, kInf, kNaN}},
      {[](SamplingParams& p, float v) { p.top_p = v; },
       "top_p",
       "(0, 1]",
       {0.0f, 1.5f, -1.0f, kNaN}},
      {[](SamplingParams& p, float v) { p.min_p = v; }, "min_p", "[0, 1]", {-0.01f, 1.01f, kNaN}},
      {[](SamplingParams& p, float v) { p.repetition_penalty = v; },
       "repetition_penalty",
       "> 0",
       {0.0f, -1.0f, kInf, kNaN}},
      {[](SamplingParams& p, float v) { p.frequency_penalty = v; },
       "frequency_penalty",
       "[-2, 2]",
       {-2.01f, 2.5f, kNaN}},
      {[](SamplingParams& p, float v) { p.presence_penalty = v; },
       "presence_penalty",
       "[-2, 2]",
       {-3.0f, 2.01f, kNaN}},
  };
  for (const FloatCase& c : cases) {
    for (float bad : c.bad) {
      SamplingParams p;
      c.set(p, bad);
      ExpectInvalid(p, c.name, c.range);
    }
  }
}

TEST(SamplingParamsTest, NaNIsReportedAsNaN) {
  SamplingParams p;
  p.min_p = kNaN;
  EXPECT_THAT(std::string(p.Validate().message()), HasSubstr("got nan"));
}

TEST(SamplingParamsTest, IntegerParameters) {
  SamplingParams p;
  p.top_k = -1;
  ExpectInvalid(p, "top_k", ">= 0");
  p = SamplingParams{};
  p.top_logprobs = 21;
  ExpectInvalid(p, "top_logprobs", "[0, 20]");
  p.top_logprobs = -1;
  ExpectInvalid(p, "top_logprobs", "[0, 20]");
}

TEST(SamplingParamsTest, GreedyAndPenaltyPredicates) {
  SamplingParams p;
  EXPECT_FALSE(p.IsGreedy());
  EXPECT_FALSE(p.HasPenalties());
  p.temperature = 0.0f;
  EXPECT_TRUE(p.IsGreedy());
  p.presence_penalty = 0.5f;
  EXPECT_TRUE(p.HasPenalties());
}

}  // namespace
}  // namespace caduceus::sampling
