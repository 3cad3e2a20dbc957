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
#include "worker/backend/emulated_device.h"
#include "worker/model/llama_model.h"
#include "worker/model/llama_weights.h"
#include "worker/model/shard_spec.h"
#include "worker/model/thread_communicator.h"

namespace caduceus::model {
namespace {

constexpr int kSteps = 16;
constexpr double kLogitTolerance = 1e-4;

std::string TinyModelDir() {
  const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
  return std::string(dir ? dir : "testdata") + "/tiny-seed1";
}

std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int salt = 0; salt < 4; ++salt) {
    const int n = 3 + 11 * salt;  // 3, 14, 25, 36 tokens: one to three KV blocks
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (1000 + 7919 * (i + 1) * (salt + 3)) % 128000;
    prompts.push_back(std::move(ids));
  }
  return prompts;
}

int32_t ArgMax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// What one rank saw: the greedy continuation of each prompt and the logits of every step.
struct Trace {
  std::vector<std::vector<int32_t>> tokens;  // per prompt
  std::vector<std::vector<float>> logits;    // per step: [prompts, vocab]
  absl::Status status;
};

// Prefills every prompt in one step, then decodes all of them together for kSteps steps. With
// argmax_odd, the odd sequences are argmax_only: their greedy tokens come from the lm_head's
// argmax (LinearArgmax, gathered across ranks) in the same steps as the others' logits rows.
Trace Generate(LlamaModel& model, bool argmax_odd = false) {
  const auto prompts = Prompts();
  const size_t num = prompts.size();
  Trace trace;
  trace.tokens.resize(num);
  auto cache_or = model.CreateKvCache(64);
  if (!cache_or.ok()) {
    trace.status = cache_or.status();
    return trace;
  }
  KvCache& cache = **cache_or;
  std::vector<std::vector<int32_t>> blocks(num);
  for (size_t s = 0; s < num; ++s) {
    for (int b = 0; b < 4; ++b) blocks[s].push_back(static_cast<int32_t>(s * 4 + b));
  }
  std::vector<int32_t> next(num);
  for (int step = 0; step <= kSteps; ++step) {
    StepBatch batch;
    for (size_t s = 0; s < num; ++s) {
      if (step == 0) {
        batch.sequences.push_back({prompts[s], 0, blocks[s]});
      } else {
        const int32_t pos = static_cast<int32_t>(prompts[s].size()) + step - 1;
        batch.sequences.push_back({std::span<const int32_t>(&next[s], 1), pos, blocks[s]});
      }
      batch.sequences.back().argmax_only = argmax_odd && s % 2 == 1;
    }
    StepLogits logits;
    trace.status = model.Forward(batch, cache, &logits);
    if (!trace.status.ok()) return trace;
    for (size_t s = 0; s < num; ++s) {
      const int32_t row = logits.row_begin[s];
      if (batch.sequences[s].argmax_only) {
        if (logits.HasValues(row)) {
          trace.status = absl::InternalError("an argmax_only row came with logits");
          return trace;
        }
        next[s] = logits.greedy_token[row];
      } else {
        next[s] = ArgMax(logits.Row(row));
      }
      trace.tokens[s].push_back(next[s]);
    }
    trace.logits.push_back(std::move(logits.values));
  }
  return trace;
}

LoadOptions Options(int rank, int size, bool resident_weights = true,
                    const std::string& device = "cpu") {
  LoadOptions options;
  options.shard = {rank, size};
  options.resident_weights = resident_weights;
  options.device = device;
  return options;
}

// Runs a TP group of `size` threads; returns each rank's trace.
std::vector<Trace> RunGroup(int size, bool resident_weights = true, bool argmax_odd = false,
                            const std::string& device = "cpu") {
  ThreadCommunicatorGroup group(size);
  std::vector<Trace> traces(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto model =
          LlamaModel::Load(TinyModelDir(), Options(r, size, resident_weights, device),
                           group.rank(r));
      if (!model.ok()) {
        // The others block in the first collective until the group times out; fine for a test
        // that fails anyway, and it cannot hang.
        traces[r].status = model.status();
        return;
      }
      traces[r] = Generate(**model, argmax_odd);
    });
  }
  for (std::thread& t : threads) t.join();
  return traces;
}

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

// The device-memory code path on the emulated device (worker/backend/emulated_device.h): weights
// placed in device memory, step metadata copied up, logits and greedy tokens copied back, every
// kernel argument checked to be device memory. The kernels are the CPU's, so every logit must
// have the CPU's bits, unsharded and sharded (the TP collectives then move device buffers).
TEST(EmulatedDeviceTest, DevicePathGivesTheCpuBits) {
  for (const int size : {1, 2}) {
    const std::vector<Trace> cpu = RunGroup(size, true, /*argmax_odd=*/true, "cpu");
    const std::vector<Trace> dev = RunGroup(size, true, /*argmax_odd=*/true, backend::kEmulatedDevice);
    for (int r = 0; r < size; ++r) {
      ASSERT_TRUE(cpu[r].status.ok()) << cpu[r].status;
      ASSERT_TRUE(dev[r].status.ok()) << dev[r].status;
      EXPECT_EQ(dev[r].tokens, cpu[r].tokens) << "TP=" << size << " rank " << r;
      EXPECT_TRUE(dev[r].logits == cpu[r].logits) << "TP=" << size << " rank " << r;
    }
  }
}

// Every weight lives on the device once (tied embeddings placed once), and unloading the model
// gives all of it back.
TEST(EmulatedDeviceTest, WeightsArePlacedOnTheDeviceAndFreed) {
  const int64_t before = backend::EmulatedDeviceAllocatedBytes();
  auto store = WeightStore::Open(TinyModelDir());
  ASSERT_TRUE(store.ok()) << store.status();
  {
    auto model = LlamaModel::Load(TinyModelDir(), Options(0, 1, true, backend::kEmulatedDevice));
    ASSERT_TRUE(model.ok()) << model.status();
    const int64_t placed = backend::EmulatedDeviceAllocatedBytes() - before;
    // The tiny model is stored in bf16: the device holds exactly the stored bytes (+ RoPE table).
    EXPECT_GE(placed, static_cast<int64_t>((*store)->total_bytes()));
    EXPECT_LT(placed, static_cast<int64_t>((*store)->total_bytes()) + (1 << 20));
  }
  EXPECT_EQ(backend::EmulatedDeviceAllocatedBytes(), before);
}

// The warm-up at the largest step grows every activation buffer to its final size: the steps
// after it, up to that size, allocate no device memory (so the KV cache may take the rest).
TEST(EmulatedDeviceTest, AfterWarmUpNoStepAllocates) {
  auto model = LlamaModel::Load(TinyModelDir(), Options(0, 1, true, backend::kEmulatedDevice));
  ASSERT_TRUE(model.ok()) << model.status();
  constexpr int32_t kMaxTokens = 96, kMaxSeqs = 6;
  const int64_t before = backend::EmulatedDeviceAllocatedBytes();
  ASSERT_TRUE((*model)->WarmUp(kMaxTokens, kMaxSeqs).ok());
  const int64_t activations = backend::EmulatedDeviceAllocatedBytes() - before;
  EXPECT_GT(activations, 0);
  auto cache = (*model)->CreateKvCache(64);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const int64_t ready = backend::EmulatedDeviceAllocatedBytes();
  // Full-size steps of both kinds: 6 prefills of 16 tokens with logits rows, 6 greedy decodes.
  std::vector<int32_t> prompt(kMaxTokens / kMaxSeqs, 7);
  std::vector<std::vector<int32_t>> tables(kMaxSeqs);
  StepBatch prefill, decode;
  for (int s = 0; s < kMaxSeqs; ++s) {
    tables[s] = {2 * s, 2 * s + 1};
    prefill.sequences.push_back({prompt, 0, tables[s]});
    decode.sequences.push_back({std::span<const int32_t>(prompt.data(), 1), 16, tables[s]});
    decode.sequences.back().argmax_only = true;
  }
  StepLogits logits;
  ASSERT_TRUE((*model)->Forward(prefill, **cache, &logits).ok());
  ASSERT_TRUE((*model)->Forward(decode, **cache, &logits).ok());
  EXPECT_EQ(backend::EmulatedDeviceAllocatedBytes(), ready);
}

TEST(KvCacheBudgetTest, UtilizationOfTheDeviceLessWhatIsInUse) {
  // 100 bytes, 30 in use after weights + warm-up, 90% allowed: 60 for the cache.
  EXPECT_EQ(KvCache::DeviceBudget(0.9, 100, 70).value(), 60);
  EXPECT_EQ(KvCache::DeviceBudget(1.0, 100, 70).value(), 70);
  const auto full = KvCache::DeviceBudget(0.5, 100, 40);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("60 of 100 bytes are in use"), std::string::npos)
      << full.status();
  for (const double bad : {0.0, -0.1, 1.5}) {
    EXPECT_EQ(KvCache::DeviceBudget(bad, 100, 70).status().code(),
              absl::StatusCode::kInvalidArgument) << bad;
  }
}

// A bf16 KV cache: half the bytes per block, and logits that stay within bf16 rounding of the
// fp32 cache's (each stored key and value moves by at most 2^-9 relative). On the emulated device
// the bf16 path gives the CPU's bits as well.
TEST(Bf16KvCacheTest, HalfTheBytesAndLogitsCloseToTheFp32Cache) {
  LoadOptions f32 = Options(0, 1), bf16 = Options(0, 1);
  bf16.kv_dtype = kernels::KvDtype::kBf16;
  LoadOptions emulated = bf16;
  emulated.device = backend::kEmulatedDevice;
  auto a = LlamaModel::Load(TinyModelDir(), f32);
  auto b = LlamaModel::Load(TinyModelDir(), bf16);
  auto e = LlamaModel::Load(TinyModelDir(), emulated);
  ASSERT_TRUE(a.ok() && b.ok() && e.ok());
  EXPECT_EQ(2 * (*b)->KvCacheBytesPerBlock(), (*a)->KvCacheBytesPerBlock());
  const Trace ta = Generate(**a), tb = Generate(**b), te = Generate(**e);
  ASSERT_TRUE(ta.status.ok() && tb.status.ok() && te.status.ok()) << tb.status << te.status;
  EXPECT_TRUE(te.logits == tb.logits) << "emulated device, bf16 cache: not the CPU's bits";
  const size_t vocab = 128256;
  double worst = 0;
  int same_tokens = 0, tokens = 0;
  // Logits of step s follow tokens [0, s) of each sequence: compare only while those agree.
  std::vector<size_t> agree(ta.tokens.size());
  for (size_t p = 0; p < ta.tokens.size(); ++p) {
    agree[p] = std::mismatch(ta.tokens[p].begin(), ta.tokens[p].end(), tb.tokens[p].begin()).first -
               ta.tokens[p].begin();
  }
  for (size_t step = 0; step < ta.logits.size(); ++step) {
    for (size_t row = 0; row * vocab < ta.logits[step].size(); ++row) {
      if (agree[row] < step) continue;
      const float* x = &ta.logits[step][row * vocab];
      const float* y = &tb.logits[step][row * vocab];
      float scale = 0;
      for (size_t i = 0; i < vocab; ++i) scale = std::max(scale, std::abs(x[i]));
      for (size_t i = 0; i < vocab; ++i) {
        worst = std::max(worst, std::abs(double(x[i]) - y[i]) / scale);
      }
    }
  }
  for (size_t p = 0; p < ta.tokens.size(); ++p) {
    for (size_t i = 0; i < ta.tokens[p].size(); ++i) {
      same_tokens += ta.tokens[p][i] == tb.tokens[p][i];
      ++tokens;
    }
  }
  std::printf("bf16 KV cache: worst relative logit difference %.3g; %d of %d greedy tokens as "
              "with fp32\n", worst, same_tokens, tokens);
  // Measured 6.7e-3 (2 layers, random weights; deterministic). The bound leaves 3x for the
  // rounding to compound differently, and is far below what a misread cache gives (O(1)).
  EXPECT_LT(worst, 2e-2);
  EXPECT_GT(worst, 0) << "a bf16 cache that changes nothing is not storing bf16";
}

// Run by OutOfDeviceMemoryIsAClearError in a child process whose emulated device is 16 MiB.
TEST(EmulatedDeviceTest, DISABLED_OutOfMemoryChild) {
  if (std::getenv("CADUCEUS_EMULATED_DEVICE_BYTES") == nullptr) GTEST_SKIP() << "child only";
  auto model = LlamaModel::Load(TinyModelDir(), Options(0, 1, true, backend::kEmulatedDevice));
  ASSERT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted) << model.status();
  EXPECT_NE(model.status().message().find("out of device memory placing"), std::string::npos)
      << model.status();
  EXPECT_EQ(backend::EmulatedDeviceAllocatedBytes(), 0) << "a failed load leaks device memory";
}

TEST(EmulatedDeviceTest, OutOfDeviceMemoryIsAClearError) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = "CADUCEUS_EMULATED_DEVICE_BYTES=16777216 '" + self +
                          "' --gtest_also_run_disabled_tests"
                          " --gtest_filter=EmulatedDeviceTest.DISABLED_OutOfMemoryChild";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
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
