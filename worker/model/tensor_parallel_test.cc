// Tensor-parallel LlamaModel groups (ranks = threads, ThreadCommunicator) against the unsharded
// model on the generated tiny model (8 heads, 2 KV heads, intermediate 768, vocab 128256):
// TP=2 splits the KV heads, TP=4 replicates them. Greedy tokens must be identical; logits are
// not bit-identical (the o_proj/down_proj/embedding sums are split across ranks and added in
// another order), so they are compared with a tolerance of 1e-4 relative to the row's largest
// |logit| (elementwise relative error is meaningless for logits near zero).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/model/llama_model.h"
#include "worker/model/llama_weights.h"
#include "worker/model/model_test_util.h"
#include "worker/model/shard_spec.h"
#include "worker/model/thread_communicator.h"

namespace caduceus::model {
namespace {

using test_util::Generate;
using test_util::kSteps;
using test_util::Options;
using test_util::RunGroup;
using test_util::TinyModelDir;
using test_util::Trace;

constexpr double kLogitTolerance = 1e-4;

class TensorParallelTest : public ::testing::TestWithParam<int> {
 protected:
  static void SetUpTestSuite() {
    auto model = LlamaModel::Load(TinyModelDir());
    ASSERT_TRUE(model.ok()) << model.status();
    reference_ = new Trace(Generate(**model));
    ASSERT_TRUE(reference_->status.ok()) << reference_->status;
  }
  static void TearDownTestSuite() { delete reference_; }
  static inline Trace* reference_ = nullptr;
};

TEST_P(TensorParallelTest, MatchesUnshardedModel) {
  ASSERT_NE(reference_, nullptr);
  const int size = GetParam();
  const std::vector<Trace> traces = RunGroup(size);
  for (int r = 0; r < size; ++r) ASSERT_TRUE(traces[r].status.ok()) << r << ": " << traces[r].status;
  const Trace& ref = *reference_;
  for (int r = 0; r < size; ++r) {
    // Every rank ends with the same full logits (AllGather copies, never recomputes).
    EXPECT_EQ(traces[r].logits, traces[0].logits) << "rank " << r;
    EXPECT_EQ(traces[r].tokens, ref.tokens) << "rank " << r;
  }
  const Trace& tp = traces[0];
  ASSERT_EQ(tp.logits.size(), ref.logits.size());
  double worst = 0;
  for (size_t step = 0; step < ref.logits.size(); ++step) {
    const std::vector<float>& a = ref.logits[step];
    const std::vector<float>& b = tp.logits[step];
    ASSERT_EQ(a.size(), b.size());
    const size_t vocab = 128256;
    for (size_t row = 0; row * vocab < a.size(); ++row) {
      float scale = 0;
      for (size_t i = 0; i < vocab; ++i) scale = std::max(scale, std::abs(a[row * vocab + i]));
      for (size_t i = 0; i < vocab; ++i) {
        const double err = std::abs(double(a[row * vocab + i]) - b[row * vocab + i]) / scale;
        worst = std::max(worst, err);
        ASSERT_LE(err, kLogitTolerance) << "step " << step << " row " << row << " logit " << i;
      }
    }
  }
  RecordProperty("worst_relative_logit_error", std::to_string(worst));
  std::printf("TP=%d worst relative logit error %.3g\n", size, worst);
}

// Without the arena the row slices point into the mapped files and the column slices of
// o_proj/down_proj are the store's copies.
TEST_F(TensorParallelTest, MappedWeightsGiveTheSameTokens) {
  ASSERT_NE(reference_, nullptr);
  const std::vector<Trace> traces = RunGroup(2, /*resident_weights=*/false);
  for (const Trace& t : traces) {
    ASSERT_TRUE(t.status.ok()) << t.status;
    EXPECT_EQ(t.tokens, reference_->tokens);
  }
}

// The greedy tokens of argmax_only sequences (the lm_head's argmax, merged across the vocab
// shards) equal the argmax of the full logits rows, unsharded and sharded.
TEST_P(TensorParallelTest, ArgmaxOnlyRowsGiveTheSameTokens) {
  ASSERT_NE(reference_, nullptr);
  auto model = LlamaModel::Load(TinyModelDir());
  ASSERT_TRUE(model.ok()) << model.status();
  const Trace unsharded = Generate(**model, /*argmax_odd=*/true);
  ASSERT_TRUE(unsharded.status.ok()) << unsharded.status;
  EXPECT_EQ(unsharded.tokens, reference_->tokens);
  for (const Trace& t : RunGroup(GetParam(), true, /*argmax_odd=*/true)) {
    ASSERT_TRUE(t.status.ok()) << t.status;
    EXPECT_EQ(t.tokens, reference_->tokens);
  }
}

// all_logits + argmax_only (speculative decoding's guessed rows of a greedy sequence): one
// greedy token per row, equal to the argmax of the same rows' logits, unsharded and sharded.
TEST_P(TensorParallelTest, ArgmaxRowsOfAllLogitsSequences) {
  const std::vector<int32_t> prompt = test_util::Prompts()[2];  // 25 tokens
  const std::vector<int32_t> rows_table = {0, 1}, argmax_table = {2, 3};
  for (int size : {1, GetParam()}) {
    ThreadCommunicatorGroup group(size);
    std::vector<absl::Status> status(size);
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] {
        auto model = LlamaModel::Load(TinyModelDir(), test_util::Options(r, size), group.rank(r));
        if (!model.ok()) {
          status[r] = model.status();
          return;
        }
        auto cache = (*model)->CreateKvCache(8);
        if (!cache.ok()) {
          status[r] = cache.status();
          return;
        }
        StepBatch batch;
        batch.sequences.push_back({prompt, 0, rows_table, /*all_logits=*/true, false, 20});
        batch.sequences.push_back({prompt, 0, argmax_table, /*all_logits=*/true, true, 20});
        StepLogits logits;
        status[r] = (*model)->Forward(batch, **cache, r == 0 ? &logits : nullptr);
        if (!status[r].ok() || r != 0) return;
        EXPECT_EQ(logits.row_begin, (std::vector<int32_t>{0, 5}));
        for (int i = 0; i < 5; ++i) {
          EXPECT_TRUE(logits.HasValues(i));
          EXPECT_FALSE(logits.HasValues(5 + i));
          EXPECT_EQ(logits.greedy_token[5 + i], test_util::ArgMax(logits.Row(i))) << "row " << i;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (const absl::Status& st : status) EXPECT_TRUE(st.ok()) << st;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, TensorParallelTest, ::testing::Values(2, 4),
                         [](const auto& info) { return "TP" + std::to_string(info.param); });

// Forwards to a ThreadCommunicator and counts Flush calls; a Flush can be made to fail, as a
// device communicator's does when a deferred collective failed.
class FlushCountingCommunicator : public parallel::Communicator {
 public:
  explicit FlushCountingCommunicator(parallel::Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(float* data, size_t count) override {
    ++since_flush;
    return inner_->AllReduceSum(data, count);
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    ++since_flush;
    return inner_->AllGather(in, count, out);
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return inner_->Broadcast(data, bytes, root);
  }
  absl::Status Flush() override {
    ++flushes;
    since_flush = 0;
    return fail_flush ? absl::UnavailableError("deferred all-reduce failed") : absl::OkStatus();
  }
  parallel::Communicator* inner_;
  int flushes = 0, since_flush = 0;
  bool fail_flush = false;
};

// The model flushes the communicator before the host reads a step's results (logits rows and
// greedy tokens), so that a device communicator may defer completion; a failed flush fails the
// step with its status.
TEST(TensorParallelFlushTest, EveryStepFlushesBeforeItsResultsAndReportsFailures) {
  ThreadCommunicatorGroup group(2);
  std::vector<std::unique_ptr<FlushCountingCommunicator>> comms;
  for (int r = 0; r < 2; ++r) comms.push_back(std::make_unique<FlushCountingCommunicator>(group.rank(r)));
  std::vector<Trace> traces(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto model = LlamaModel::Load(TinyModelDir(), Options(r, 2), comms[r].get());
      if (!model.ok()) {
        traces[r].status = model.status();
        return;
      }
      traces[r] = Generate(**model, /*argmax_odd=*/true);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(traces[r].status.ok()) << traces[r].status;
    // Each of the kSteps + 1 steps has logits rows and greedy rows: one flush after each gather.
    EXPECT_EQ(comms[r]->flushes, 2 * (kSteps + 1)) << "rank " << r;
    EXPECT_EQ(comms[r]->since_flush, 0) << "rank " << r << ": collectives after the last flush";
  }
  // A failing flush (rank 1) fails that rank's step with the communicator's status.
  comms[1]->fail_flush = true;
  threads.clear();
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto model = LlamaModel::Load(TinyModelDir(), Options(r, 2), comms[r].get());
      ASSERT_TRUE(model.ok());
      auto cache = (*model)->CreateKvCache(4);
      ASSERT_TRUE(cache.ok());
      const std::vector<int32_t> tokens = {1, 2, 3}, table = {0};
      StepBatch batch;
      batch.sequences.push_back({tokens, 0, table});
      StepLogits logits;
      traces[r].status = (*model)->Forward(batch, **cache, &logits);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(traces[0].status.ok()) << traces[0].status;
  EXPECT_EQ(traces[1].status.code(), absl::StatusCode::kUnavailable) << traces[1].status;
}

TEST(TensorParallelLoadTest, UnsplittableSizeNamesTheField) {
  ThreadCommunicatorGroup group(3);
  auto model = LlamaModel::Load(TinyModelDir(), Options(0, 3), group.rank(0));
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_NE(model.status().message().find("num_attention_heads"), std::string::npos)
      << model.status();
}

TEST(TensorParallelLoadTest, ShardedLoadNeedsAMatchingCommunicator) {
  auto missing = LlamaModel::Load(TinyModelDir(), Options(0, 2), nullptr);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument) << missing.status();
  ThreadCommunicatorGroup group(2);
  auto wrong_rank = LlamaModel::Load(TinyModelDir(), Options(0, 2), group.rank(1));
  EXPECT_EQ(wrong_rank.status().code(), absl::StatusCode::kInvalidArgument) << wrong_rank.status();
}

int64_t VmRssBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // kB
  }
  return -1;
}

// Run by RankTouchesOnlyItsSlices in a fresh process of this binary (so that no other test's
// memory blurs VmRSS): loads rank 0 of a group of CADUCEUS_TP_RSS_SIZE and writes the RSS growth
// to CADUCEUS_TP_RSS_OUT.
TEST(TensorParallelRssTest, DISABLED_Child) {
  const char* out = std::getenv("CADUCEUS_TP_RSS_OUT");
  const char* size_env = std::getenv("CADUCEUS_TP_RSS_SIZE");
  if (out == nullptr || size_env == nullptr) GTEST_SKIP() << "only run by RankTouchesOnlyItsSlices";
  const int size = std::atoi(size_env);
  ThreadCommunicatorGroup group(size);
  const int64_t before = VmRssBytes();
  auto model = LlamaModel::Load(TinyModelDir(), Options(0, size), group.rank(0));
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t after = VmRssBytes();
  std::ofstream(out) << (after - before);
}

TEST(TensorParallelRssTest, RankTouchesOnlyItsSlices) {
  if (std::getenv("CADUCEUS_TESTDATA_DIR") == nullptr) GTEST_SKIP() << "run through ctest";
  // Resolved here: inside the shell, /proc/self/exe would be the shell.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto growth = [&](int size) -> int64_t {
    const std::string out = ::testing::TempDir() + "/tp_rss_" + std::to_string(size);
    const std::string cmd = "CADUCEUS_TP_RSS_OUT=" + out + " CADUCEUS_TP_RSS_SIZE=" +
                            std::to_string(size) +
                            " '" + self + "' --gtest_also_run_disabled_tests"
                            " --gtest_filter=TensorParallelRssTest.DISABLED_Child > /dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    int64_t bytes = -1;
    std::ifstream(out) >> bytes;
    std::remove(out.c_str());
    return bytes;
  };
  const int64_t whole = growth(1), half = growth(2);
  std::printf("RSS growth at load: TP=1 %lld bytes, TP=2 rank 0 %lld bytes\n",
              static_cast<long long>(whole), static_cast<long long>(half));
  ASSERT_GT(whole, 0);
  ASSERT_GT(half, 0);
  // Mostly the arena (lm_head and projections); the rest is allocator and kernel-table noise.
  EXPECT_GT(double(half) / whole, 0.4);
  EXPECT_LT(double(half) / whole, 0.6);
}

TEST(ThreadCommunicatorTest, CollectivesAcrossThreads) {
  constexpr int kSize = 3;
  ThreadCommunicatorGroup group(kSize);
  std::vector<std::vector<float>> sums(kSize), gathered(kSize);
  std::vector<int64_t> broadcast(kSize);
  std::vector<absl::Status> status(kSize);
  std::vector<std::thread> threads;
  for (int r = 0; r < kSize; ++r) {
    threads.emplace_back([&, r] {
      parallel::Communicator* comm = group.rank(r);
      // Values whose float sum depends on the order: 1e8 + 1 + (-1e8) is 0 in rank order.
      const float mine[3] = {1e8f, 1.0f, -1e8f};
      sums[r] = {mine[r], float(r), 0.5f};
      absl::Status s = comm->AllReduceSum(sums[r].data(), sums[r].size());
      const float in[2] = {float(10 * r), float(10 * r + 1)};
      gathered[r].resize(2 * kSize);
      if (s.ok()) s = comm->AllGather(in, 2, gathered[r].data());
      broadcast[r] = r == 1 ? 42 : -1;
      if (s.ok()) s = comm->Broadcast(&broadcast[r], sizeof(int64_t), 1);
      status[r] = s;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kSize; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    EXPECT_EQ(sums[r], (std::vector<float>{(1e8f + 1.0f) + -1e8f, 3.0f, 1.5f}));
    EXPECT_EQ(gathered[r], (std::vector<float>{0, 1, 10, 11, 20, 21}));
    EXPECT_EQ(broadcast[r], 42);
  }
}

TEST(ThreadCommunicatorTest, MissingPeerTimesOutInsteadOfHanging) {
  ThreadCommunicatorGroup group(2, std::chrono::milliseconds(50));
  float x = 1;
  EXPECT_EQ(group.rank(0)->AllReduceSum(&x, 1).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(group.rank(1)->AllReduceSum(&x, 1).code(), absl::StatusCode::kUnavailable);
}

TEST(ThreadCommunicatorTest, MismatchedCallsAreAnError) {
  ThreadCommunicatorGroup group(2);
  absl::Status status[2];
  std::vector<float> out(8);
  std::thread peer([&] {
    float a[2] = {1, 2};
    status[1] = group.rank(1)->AllReduceSum(a, 2);
  });
  float b[3] = {1, 2, 3};
  status[0] = group.rank(0)->AllGather(b, 3, out.data());
  peer.join();
  EXPECT_EQ(status[0].code(), absl::StatusCode::kInvalidArgument) << status[0];
  EXPECT_EQ(status[1].code(), absl::StatusCode::kInvalidArgument) << status[1];
}

TEST(ShardLayoutTest, RejectsEachUnsplittableField) {
  ModelConfig c;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.intermediate_size = 768;
  c.vocab_size = 128256;
  auto expect_invalid = [](const ModelConfig& config, ShardSpec spec, const std::string& field) {
    auto layout = ShardLayout::Make(config, spec);
    EXPECT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(layout.status().message().find(field), std::string::npos) << layout.status();
  };
  expect_invalid(c, {0, 3}, "num_attention_heads");
  expect_invalid(c, {2, 2}, "rank 2");
  expect_invalid(c, {0, 0}, "size 0");
  ModelConfig inter = c;
  inter.intermediate_size = 770;
  expect_invalid(inter, {0, 4}, "intermediate_size");
  ModelConfig vocab = c;
  vocab.vocab_size = 128258;
  expect_invalid(vocab, {0, 4}, "vocab_size");
  ModelConfig kv = c;  // 12 heads over 3 ranks, but 4 KV heads neither split nor replicate
  kv.num_heads = 12;
  kv.num_kv_heads = 4;
  kv.intermediate_size = 768;
  expect_invalid(kv, {0, 3}, "num_key_value_heads");
}

TEST(ShardLayoutTest, SplitsOrReplicatesKvHeads) {
  ModelConfig c;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.intermediate_size = 768;
  c.vocab_size = 128256;
  for (int r = 0; r < 2; ++r) {
    auto l = ShardLayout::Make(c, {r, 2}).value();
    EXPECT_FALSE(l.kv_replicated);
    EXPECT_EQ(l.q_heads, 4);
    EXPECT_EQ(l.kv_heads, 1);
    EXPECT_EQ(l.kv_head_begin, r);
    EXPECT_EQ(l.vocab_begin, r * 64128);
  }
  // TP=4: query heads {0,1},{2,3} read KV head 0 and {4,5},{6,7} read KV head 1.
  const int expected_kv[] = {0, 0, 1, 1};
  for (int r = 0; r < 4; ++r) {
    auto l = ShardLayout::Make(c, {r, 4}).value();
    EXPECT_TRUE(l.kv_replicated);
    EXPECT_EQ(l.q_heads, 2);
    EXPECT_EQ(l.q_head_begin, 2 * r);
    EXPECT_EQ(l.kv_heads, 1);
    EXPECT_EQ(l.kv_head_begin, expected_kv[r]);
    EXPECT_EQ(l.inter, 192);
  }
}

TEST(TensorParallelLoadTest, EachRankHoldsItsShareOfTheWeights) {
  auto config = ModelConfig::LoadFromDir(TinyModelDir());
  ASSERT_TRUE(config.ok()) << config.status();
  const double whole = static_cast<double>(LlamaWeights::ArenaBytes(*config));
  for (int r = 0; r < 2; ++r) {
    const double half =
        static_cast<double>(LlamaWeights::ArenaBytes(*config, ShardLayout::Make(*config, {r, 2}).value()));
    EXPECT_NEAR(half / whole, 0.5, 0.005) << "rank " << r;
  }
  // TP=4 replicates the KV heads, so a rank holds a little more than a quarter.
  const double quarter =
      static_cast<double>(LlamaWeights::ArenaBytes(*config, ShardLayout::Make(*config, {3, 4}).value()));
  EXPECT_GT(quarter / whole, 0.25);
  EXPECT_LT(quarter / whole, 0.27);

  // The loaded model reads (per token) half the unsharded bytes, give or take the replicated
  // norms and the one embedding row.
  auto full = LlamaModel::Load(TinyModelDir());
  ASSERT_TRUE(full.ok()) << full.status();
  ThreadCommunicatorGroup group(2);
  auto rank1 = LlamaModel::Load(TinyModelDir(), Options(1, 2), group.rank(1));
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  const double ratio = double((*rank1)->WeightBytesPerToken()) / (*full)->WeightBytesPerToken();
  EXPECT_NEAR(ratio, 0.5, 0.005);
  EXPECT_EQ((*rank1)->shard().vocab_begin, 64128);
}

}  // namespace
}  // namespace caduceus::model
