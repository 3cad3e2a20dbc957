// The device-memory code path without a GPU (the emulated device, worker/backend/
// emulated_device.h), the warm-up step that sizes device memory, the KV budget on a device, and
// the bf16 KV cache, all on the generated tiny model.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/backend/emulated_device.h"
#include "worker/model/kv_cache.h"
#include "worker/model/llama_model.h"
#include "worker/model/model_test_util.h"
#include "worker/model/thread_communicator.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {
namespace {

using test_util::Generate;
using test_util::kSteps;
using test_util::Options;
using test_util::RunGroup;
using test_util::TinyModelDir;
using test_util::Trace;

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

// Followers (ranks > 0, which the worker never asks for results) take part in every collective
// but copy nothing back, and the leader's logits and greedy tokens keep their bits.
TEST(EmulatedDeviceTest, FollowersReadNothingBack) {
  const std::vector<Trace> all = RunGroup(2, true, /*argmax_odd=*/true, backend::kEmulatedDevice);
  ASSERT_TRUE(all[0].status.ok() && all[1].status.ok()) << all[0].status << all[1].status;
  ThreadCommunicatorGroup group(2);
  std::vector<Trace> traces(2);
  std::vector<int64_t> read_back(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto model = LlamaModel::Load(TinyModelDir(), Options(r, 2, true, backend::kEmulatedDevice),
                                    group.rank(r));
      if (!model.ok()) {
        traces[r].status = model.status();
        return;
      }
      const int64_t before = backend::EmulatedDeviceBytesToHostOnThisThread();
      traces[r] = test_util::Generate(**model, /*argmax_odd=*/true, r > 0 ? &all[0] : nullptr);
      read_back[r] = backend::EmulatedDeviceBytesToHostOnThisThread() - before;
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(traces[0].status.ok() && traces[1].status.ok())
      << traces[0].status << traces[1].status;
  EXPECT_EQ(traces[0].tokens, all[0].tokens);
  EXPECT_TRUE(traces[0].logits == all[0].logits) << "the leader's logits changed";
  EXPECT_EQ(traces[1].tokens, all[0].tokens);
  EXPECT_TRUE(traces[1].logits.empty());
  // The leader reads two sequences' logits rows (128256 floats each) per step, and more.
  EXPECT_GT(read_back[0], int64_t{2} * 128256 * 4 * (kSteps + 1));
  EXPECT_EQ(read_back[1], 0) << "a follower copied results back to the host";
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
  // And speculative decoding's verification of greedy guesses next to a prefill chunk: every
  // row but the chunk's first 15 wants the lm_head's argmax (all_logits + argmax_only), so the
  // lm_head's input rows are gathered (not in place) for almost the whole step.
  StepBatch guessed = prefill;
  for (size_t s = 1; s < guessed.sequences.size(); ++s) {
    guessed.sequences[s].all_logits = true;
    guessed.sequences[s].argmax_only = true;
  }
  StepLogits logits;
  ASSERT_TRUE((*model)->Forward(prefill, **cache, &logits).ok());
  ASSERT_TRUE((*model)->Forward(decode, **cache, &logits).ok());
  ASSERT_TRUE((*model)->Forward(guessed, **cache, &logits).ok());
  EXPECT_EQ(logits.greedy_token.size(), static_cast<size_t>(kMaxTokens - 15));
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

}  // namespace
}  // namespace caduceus::model
