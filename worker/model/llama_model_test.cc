// Forward-pass properties on the generated tiny model: batch invariance (alone vs batched,
// prefill vs decode, any physical block placement) and rejection of malformed steps.
// Numerical agreement with independent references is checked by tests/integration.
#include <cstdlib>
#include <numeric>
#include <string>

#include "gtest/gtest.h"
#include "worker/model/llama_model.h"
#include "worker/model/rope.h"

namespace caduceus::model {
namespace {

std::string TinyModelDir() {
  const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
  return std::string(dir ? dir : "testdata") + "/tiny-seed1";
}

class LlamaModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LlamaModel::Load(TinyModelDir());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() { delete model_; }

  static std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (1000 + 7919 * (i + 1) * (salt + 3)) % 128000;
    return ids;
  }
  static std::vector<int32_t> Blocks(std::initializer_list<int32_t> ids) { return ids; }
  static std::vector<float> Run(const std::vector<SequenceStep>& seqs, KvCache& cache,
                                StepLogits* out = nullptr) {
    StepBatch batch{seqs};
    StepLogits logits;
    auto status = model_->Forward(batch, cache, &logits);
    EXPECT_TRUE(status.ok()) << status;
    if (out) *out = logits;
    return logits.values;
  }
  static inline LlamaModel* model_ = nullptr;
};

TEST_F(LlamaModelTest, LogitsIdenticalAloneInBatchAndAcrossBlockPlacement) {
  const auto a = Prompt(20, 1), b = Prompt(7, 2), c = Prompt(33, 3);
  auto cache1 = model_->CreateKvCache(32).value();
  const auto blocks_a1 = Blocks({0, 1});
  const auto alone = Run({{a, 0, blocks_a1}}, *cache1);

  // The same sequence in a batch with two others, its blocks elsewhere and in reverse order.
  auto cache2 = model_->CreateKvCache(32).value();
  const auto blocks_b = Blocks({3}), blocks_a2 = Blocks({17, 5}), blocks_c = Blocks({8, 9, 30});
  StepLogits batched;
  Run({{b, 0, blocks_b}, {a, 0, blocks_a2}, {c, 0, blocks_c}}, *cache2, &batched);
  const auto row = batched.Row(batched.row_begin[1]);
  ASSERT_EQ(alone.size(), row.size());
  for (size_t i = 0; i < row.size(); ++i) ASSERT_EQ(alone[i], row[i]) << "logit " << i;

  // Prefill 19 tokens, then decode the 20th (with another sequence decoding beside it): the
  // last-token logits equal the 20-token prefill's bit for bit.
  auto cache3 = model_->CreateKvCache(32).value();
  const std::span<const int32_t> a_span(a);
  Run({{a_span.first(19), 0, blocks_a2}, {b, 0, blocks_b}}, *cache3);
  const int32_t next_b = 42;
  StepLogits decoded;
  Run({{std::span<const int32_t>(&next_b, 1), 7, blocks_b}, {a_span.subspan(19), 19, blocks_a2}},
      *cache3, &decoded);
  const auto drow = decoded.Row(decoded.row_begin[1]);
  for (size_t i = 0; i < drow.size(); ++i) ASSERT_EQ(alone[i], drow[i]) << "logit " << i;
}

TEST_F(LlamaModelTest, AllLogitsRowsMatchIncrementalDecode) {
  const auto a = Prompt(5, 4);
  auto cache = model_->CreateKvCache(4).value();
  const auto blocks = Blocks({2});
  StepLogits all;
  Run({{a, 0, blocks, /*all_logits=*/true}}, *cache, &all);
  ASSERT_EQ(all.values.size(), 5u * all.vocab_size);
  auto cache2 = model_->CreateKvCache(4).value();
  for (int t = 0; t < 5; ++t) {
    StepLogits one;
    Run({{std::span<const int32_t>(a).subspan(t, 1), t, blocks}}, *cache2, &one);
    const auto expect = all.Row(t);
    for (int i = 0; i < one.vocab_size; ++i) ASSERT_EQ(one.values[i], expect[i]) << t << "/" << i;
  }
}

TEST_F(LlamaModelTest, LogitsFromGivesTheLastRowsOfAllLogits) {
  // Scoring asks for the rows from logits_from on: they equal the same rows of all_logits, in
  // a batch where the other sequence keeps its single last row.
  const auto a = Prompt(7, 4), b = Prompt(3, 9);
  const auto blocks_a = Blocks({0, 1}), blocks_b = Blocks({2});
  auto cache = model_->CreateKvCache(4).value();
  StepLogits all;
  Run({{a, 0, blocks_a, /*all_logits=*/true}}, *cache, &all);
  auto cache2 = model_->CreateKvCache(4).value();
  StepLogits some;
  SequenceStep scored{a, 0, blocks_a, /*all_logits=*/true};
  scored.logits_from = 4;
  Run({{b, 0, blocks_b}, scored}, *cache2, &some);
  ASSERT_EQ(some.row_begin.size(), 2u);
  ASSERT_EQ(some.row_begin[1], 1);
  ASSERT_EQ(some.values.size(), 4u * some.vocab_size);  // b's last row + a's rows 4, 5, 6
  for (int r = 0; r < 3; ++r) {
    const auto got = some.Row(some.row_begin[1] + r), want = all.Row(4 + r);
    for (int i = 0; i < some.vocab_size; ++i) ASSERT_EQ(got[i], want[i]) << r << "/" << i;
  }
}

TEST_F(LlamaModelTest, LogitsRowsBeyondTheWarmUpsStepComeInGroupsWithTheSameValues) {
  // After a warm-up with 2-row steps, 5 all_logits rows run through the lm_head in groups of 2.
  const auto a = Prompt(5, 6);
  const auto blocks = Blocks({1});
  auto cache = model_->CreateKvCache(4).value();
  StepLogits whole;
  Run({{a, 0, blocks, /*all_logits=*/true}}, *cache, &whole);
  ASSERT_TRUE(model_->WarmUp(8, 2).ok());
  auto cache2 = model_->CreateKvCache(4).value();
  StepLogits grouped;
  Run({{a, 0, blocks, /*all_logits=*/true}}, *cache2, &grouped);
  ASSERT_TRUE(model_->WarmUp(256, 256).ok());  // the other tests' (default) group again
  ASSERT_EQ(grouped.values.size(), whole.values.size());
  for (size_t i = 0; i < whole.values.size(); ++i) ASSERT_EQ(grouped.values[i], whole.values[i]) << i;
}

TEST_F(LlamaModelTest, RejectsMalformedSteps) {
  auto cache = model_->CreateKvCache(4).value();
  const std::vector<int32_t> ok_tokens = {1, 2, 3};
  const std::vector<int32_t> bad_token = {1, 128256};
  const std::vector<int32_t> one_block = {0}, bad_block = {4}, none = {};
  StepLogits logits;
  auto expect_invalid = [&](std::vector<SequenceStep> seqs, const std::string& needle) {
    auto status = model_->Forward(StepBatch{std::move(seqs)}, *cache, &logits);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(std::string(status.message()).find(needle), std::string::npos) << status;
  };
  expect_invalid({}, "no sequences");
  expect_invalid({{bad_token, 0, one_block}}, "vocabulary");
  expect_invalid({{ok_tokens, 0, bad_block}}, "block id 4");
  expect_invalid({{ok_tokens, 0, none}}, "block table");
  expect_invalid({{ok_tokens, 15, one_block}}, "block table");
  std::vector<int32_t> many(8200, 1);
  expect_invalid({{many, 0, one_block}}, "max context");
  expect_invalid({{std::span<const int32_t>(), 0, one_block}}, "no new tokens");
  // The model still serves after rejected steps.
  EXPECT_TRUE(model_->Forward(StepBatch{{{ok_tokens, 0, one_block}}}, *cache, &logits).ok());
}

TEST(RopeTest, Llama3ScalingKeepsHighAndSlowsLowFrequencies) {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  const auto plain = RopeInverseFrequencies(c);
  c.rope_scaling = RopeScaling{8.0, 1.0, 4.0, 8192};
  const auto scaled = RopeInverseFrequencies(c);
  EXPECT_EQ(plain[0], scaled[0]);                          // wavelength 2*pi: untouched
  EXPECT_FLOAT_EQ(scaled[63], plain[63] / 8.0f);           // longest wavelength: divided by factor
  for (int i = 0; i < 64; ++i) {
    EXPECT_LE(scaled[i], plain[i]);
    EXPECT_GE(scaled[i], plain[i] / 8.0f * 0.999999f);
  }
}

}  // namespace
}  // namespace caduceus::model
