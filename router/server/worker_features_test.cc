// Version skew between router and workers: fields an older worker would ignore are not sent to it.
#include "router/server/worker_features.h"

#include "gtest/gtest.h"

namespace caduceus::router {
namespace {

worker::v1::InfoResponse Info(std::vector<std::string> features) {
  worker::v1::InfoResponse info;
  info.set_block_size(16);
  info.set_num_kv_blocks(1000);
  info.set_max_step_sequences(256);
  info.set_max_step_tokens(8192);
  for (const std::string& f : features) info.add_features(f);
  return info;
}

SchedulerConfig Wanted() {
  SchedulerConfig c;
  c.max_num_seqs = 128;
  c.max_tokens_per_step = 4096;
  c.speculative_tokens = 4;
  return c;
}

TEST(WorkerFeaturesTest, CurrentWorkersGetEverything) {
  std::vector<std::string> warnings;
  const SchedulerConfig sc = SchedulerConfigFor(Wanted(), Info({"draft_tokens", "logit_bias"}), &warnings);
  EXPECT_EQ(sc.speculative_tokens, 4);
  EXPECT_EQ(sc.num_blocks, 1000);
  EXPECT_EQ(sc.block_size, 16);
  EXPECT_EQ(sc.max_num_seqs, 128);
  EXPECT_TRUE(warnings.empty());
  EXPECT_TRUE(WorkerHas(Info({"draft_tokens", "logit_bias"}), kFeatureLogitBias));
}

TEST(WorkerFeaturesTest, OlderWorkersGetNoGuessesAndNoBias) {
  std::vector<std::string> warnings;
  const SchedulerConfig sc = SchedulerConfigFor(Wanted(), Info({}), &warnings);
  EXPECT_EQ(sc.speculative_tokens, 0);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("cannot verify speculative guesses"), std::string::npos);
  EXPECT_FALSE(WorkerHas(Info({"draft_tokens"}), kFeatureLogitBias));
  // Speculation off on the router: nothing to warn about.
  SchedulerConfig plain = Wanted();
  plain.speculative_tokens = 0;
  warnings.clear();
  SchedulerConfigFor(plain, Info({}), &warnings);
  EXPECT_TRUE(warnings.empty());
}

TEST(WorkerFeaturesTest, StepLimitsAreCappedAtTheWorkers) {
  SchedulerConfig wanted = Wanted();
  wanted.max_num_seqs = 512;
  wanted.max_tokens_per_step = 16384;
  std::vector<std::string> warnings;
  const SchedulerConfig sc = SchedulerConfigFor(wanted, Info({"draft_tokens"}), &warnings);
  EXPECT_EQ(sc.max_num_seqs, 256);
  EXPECT_EQ(sc.max_tokens_per_step, 8192);
  EXPECT_LE(sc.prefill_chunk_tokens, 8192);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("capped to 256 / 8192"), std::string::npos) << warnings[0];
}

}  // namespace
}  // namespace caduceus::router
