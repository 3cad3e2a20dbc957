// End-to-end generation on the tiny model: batching does not change greedy outputs, seeds
// reproduce, stops and limits end sequences with the right reason, bad requests are refused.
#include "worker/engine/local_engine.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace caduceus::engine {
namespace {

class LocalEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
    auto model = model::LlamaModel::Load(std::string(dir ? dir : "testdata") + "/tiny-seed1");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() { delete model_; }

  static GenerationRequest Request(std::vector<int32_t> prompt, int32_t max_new, float temp = 0) {
    GenerationRequest r;
    r.prompt_ids = std::move(prompt);
    r.max_new_tokens = max_new;
    r.sampling.temperature = temp;
    r.ignore_eos = true;
    return r;
  }
  static inline model::LlamaModel* model_ = nullptr;
};

TEST_F(LocalEngineTest, BatchedGreedyEqualsAloneWithChunkedPrefill) {
  std::vector<GenerationRequest> reqs = {Request({128000, 9906, 11, 1268}, 6),
                                         Request(std::vector<int32_t>(40, 791), 3),
                                         Request({128000, 3923, 374, 279, 1176}, 8)};
  LocalEngine batched(model_, EngineOptions{0, 16, false});  // 40-token prompt in 3 chunks
  auto together = batched.Run(reqs);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < reqs.size(); ++i) {
    LocalEngine single(model_, EngineOptions{});
    auto alone = single.Run({reqs[i]});
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*alone)[0].generated_ids, (*together)[i].generated_ids) << "request " << i;
    EXPECT_EQ((*together)[i].generated_ids.size(), static_cast<size_t>(reqs[i].max_new_tokens));
    EXPECT_EQ((*together)[i].finish_reason, FinishReason::kLength);
    // Logprobs match too, bit for bit.
    for (size_t t = 0; t < (*alone)[0].samples.size(); ++t) {
      EXPECT_EQ((*alone)[0].samples[t].logprob, (*together)[i].samples[t].logprob);
    }
  }
}

TEST_F(LocalEngineTest, GreedyWithoutLogprobsTakesTheLmHeadArgmaxAndTheSameTokens) {
  // skip_logprob makes a greedy request argmax_only: its tokens come from LinearArgmax, in a
  // batch that also has a request sampled from its logits row.
  std::vector<GenerationRequest> reqs = {Request({128000, 9906, 11, 1268}, 6),
                                         Request({128000, 3923, 374, 279, 1176}, 8)};
  LocalEngine engine(model_, EngineOptions{});
  auto from_rows = engine.Run(reqs);
  ASSERT_TRUE(from_rows.ok()) << from_rows.status();
  reqs[1].sampling.skip_logprob = true;
  ASSERT_TRUE(reqs[1].sampling.ArgmaxSuffices());
  auto mixed = engine.Run(reqs);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ((*mixed)[i].generated_ids, (*from_rows)[i].generated_ids) << "request " << i;
  }
  EXPECT_EQ((*mixed)[1].samples[0].logprob, 0.0f);  // not computed: there is no row
  EXPECT_LT((*mixed)[0].samples[0].logprob, 0.0f);
}

TEST_F(LocalEngineTest, SeedsReproduceAndDiffer) {
  auto run = [&](uint64_t seed) {
    // The random test model is very peaked (top-1/top-2 gaps of several logits): a high
    // temperature makes the seed matter.
    GenerationRequest r = Request({128000, 9906}, 12, 50.0f);
    r.sampling.seed = seed;
    LocalEngine engine(model_, EngineOptions{});
    auto out = engine.Run({r});
    EXPECT_TRUE(out.ok()) << out.status();
    return (*out)[0].generated_ids;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST_F(LocalEngineTest, StopTokenAndCallbackStopEndSequences) {
  LocalEngine engine(model_, EngineOptions{});
  auto greedy = engine.Run({Request({128000, 9906, 11}, 5)});
  ASSERT_TRUE(greedy.ok());
  const int32_t third = (*greedy)[0].generated_ids[2];

  GenerationRequest stop_at_third = Request({128000, 9906, 11}, 5);
  stop_at_third.ignore_eos = false;
  stop_at_third.stop_ids = {third};
  auto stopped = engine.Run({stop_at_third});
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ((*stopped)[0].finish_reason, FinishReason::kStopToken);
  EXPECT_EQ((*stopped)[0].generated_ids.back(), third);
  EXPECT_LE((*stopped)[0].generated_ids.size(), 3u);

  int calls = 0;
  auto by_callback = engine.Run({Request({128000, 9906, 11}, 5)},
                                [&](size_t, const sampling::SampleResult&) { return ++calls < 2; });
  ASSERT_TRUE(by_callback.ok());
  EXPECT_EQ((*by_callback)[0].finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ((*by_callback)[0].generated_ids.size(), 2u);
}

TEST_F(LocalEngineTest, RejectsBadRequestsWithTheirReason) {
  LocalEngine engine(model_, EngineOptions{});
  auto expect = [&](GenerationRequest r, const std::string& needle) {
    auto out = engine.Run({r});
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(out.status().message()).find(needle), std::string::npos) << out.status();
  };
  expect(Request({}, 4), "empty prompt");
  expect(Request({1, 2}, 0), "max_new_tokens");
  expect(Request({1, 2}, 9000), "context");
  GenerationRequest bad_p = Request({1, 2}, 4, 1.0f);
  bad_p.sampling.top_p = 1.5f;
  expect(bad_p, "top_p");
  expect(Request({1, 200000}, 4), "vocabulary");
}

}  // namespace
}  // namespace caduceus::engine
