// CUDA graphs through the real model and the real CUDA backend module, on the CUDA emulation
// (kernels/cuda/emulation: capture records the kernels, a launch replays them, replays check
// every pointer they hold): decode steps replayed from graphs give the bits of the same steps
// launched eagerly, padded batches included (3 -> 4 on the skinny Linear, 9 -> 16 on cuBLAS), and
// a step that reallocates the activations makes the next decode capture again instead of
// replaying into freed memory. Needs CADUCEUS_CUDA_MODULE_DIR pointing at the emulated modules.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "worker/model/llama_model.h"
#include "worker/model/model_test_util.h"

namespace caduceus::model {
namespace {

using test_util::TinyModelDir;

struct Steps {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> greedy;
  StepGraphStats stats;
  absl::Status status;
};

// Prefills `seqs` prompts, decodes them `decodes` times (argmax_only for odd sequences when
// `argmax_odd`), then runs a 60-token prefill of another sequence (the activations grow, so
// their addresses change) and decodes the first ones `decodes` more times.
Steps RunSteps(bool graphs, int seqs, int decodes, bool argmax_odd,
          const std::string& model_dir = TinyModelDir(), const std::string& device = "cuda:0") {
  Steps out;
  LoadOptions options = test_util::Options(0, 1, true, device);
  options.graphs.enabled = graphs;
  auto model = LlamaModel::Load(model_dir, options);
  if (!model.ok()) {
    out.status = model.status();
    return out;
  }
  auto cache = (*model)->CreateKvCache(64);
  if (!cache.ok()) {
    out.status = cache.status();
    return out;
  }
  std::vector<std::vector<int32_t>> prompts(seqs), tables(seqs);
  for (int s = 0; s < seqs; ++s) {
    for (int i = 0; i < 2 + s; ++i) prompts[s].push_back(1000 + 37 * s + 11 * i);
    for (int b = 0; b < 4; ++b) tables[s].push_back(4 * s + b);
  }
  std::vector<int32_t> next(seqs), pos(seqs);
  auto step = [&](const StepBatch& batch) {
    StepLogits logits;
    out.status.Update((*model)->Forward(batch, **cache, &logits));
    for (size_t s = 0; s < batch.sequences.size() && s < next.size(); ++s) {
      const int32_t row = logits.row_begin[s];
      next[s] = logits.HasValues(row) ? test_util::ArgMax(logits.Row(row)) : logits.greedy_token[row];
    }
    out.logits.push_back(std::move(logits.values));
    out.greedy.push_back(std::move(logits.greedy_token));
  };
  StepBatch prefill;
  for (int s = 0; s < seqs; ++s) {
    prefill.sequences.push_back({prompts[s], 0, tables[s]});
    pos[s] = static_cast<int32_t>(prompts[s].size());
  }
  step(prefill);
  auto decode = [&] {
    for (int d = 0; d < decodes && out.status.ok(); ++d) {
      StepBatch batch;
      for (int s = 0; s < seqs; ++s) {
        batch.sequences.push_back({std::span<const int32_t>(&next[s], 1), pos[s]++, tables[s]});
        batch.sequences.back().argmax_only = argmax_odd && s % 2 == 1;
      }
      step(batch);
    }
  };
  decode();
  const std::vector<int32_t> long_prompt(60, 4242), long_table = {60, 61, 62, 63};
  StepBatch grow;
  grow.sequences.push_back({long_prompt, 0, long_table});
  std::vector<int32_t> keep = next;
  step(grow);
  next = keep;
  decode();
  out.stats = (*model)->graph_stats();
  return out;
}

void ExpectSameBits(int seqs, bool argmax_odd, const std::string& model_dir = TinyModelDir()) {
  constexpr int kDecodes = 3;
  const Steps eager = RunSteps(false, seqs, kDecodes, argmax_odd, model_dir);
  const Steps graphs = RunSteps(true, seqs, kDecodes, argmax_odd, model_dir);
  ASSERT_TRUE(eager.status.ok()) << eager.status;
  ASSERT_TRUE(graphs.status.ok()) << graphs.status;
  ASSERT_EQ(eager.logits.size(), graphs.logits.size());
  for (size_t i = 0; i < eager.logits.size(); ++i) {
    EXPECT_TRUE(eager.logits[i] == graphs.logits[i]) << seqs << " sequences, step " << i;
    EXPECT_EQ(eager.greedy[i], graphs.greedy[i]) << seqs << " sequences, step " << i;
  }
  EXPECT_EQ(eager.stats.captures + eager.stats.replays, 0);
  // Per decode phase: eager (sizes the workspaces), capture, replay. The 60-token step between
  // the phases moved the activations, so the second phase captured again.
  EXPECT_EQ(graphs.stats.captures, 2);
  EXPECT_EQ(graphs.stats.replays, 2 * (kDecodes - 2));
  EXPECT_EQ(graphs.stats.failures, 0);
  EXPECT_GT(graphs.stats.nodes, 0);
}

TEST(StepGraphsEmulatedTest, ReplayedDecodeStepsGiveTheEagerBitsOnTheSkinnyPath) {
  ExpectSameBits(3, /*argmax_odd=*/true);  // padded to 4; greedy and logits rows mixed
}

TEST(StepGraphsEmulatedTest, ReplayedDecodeStepsGiveTheEagerBitsOnTheGemmPath) {
  ExpectSameBits(9, /*argmax_odd=*/false);  // padded to 16: cuBLAS Linear, lm_head in place
}

// FP8 weights (the tiny model quantized per channel by tests/reference/quantize_fp8.py): the
// CUDA LinearFp8 inside the model, captured and replayed like Linear, on both of its paths; and
// the same steps close to the CPU's LinearFp8 (the GEMM path splits activations into bf16 halves,
// so the bits differ; the greedy tokens do not).
TEST(StepGraphsEmulatedTest, Fp8WeightsReplayTheEagerBitsAndMatchTheCpu) {
  const std::string fp8_dir = TinyModelDir() + "-fp8";
  ExpectSameBits(3, /*argmax_odd=*/true, fp8_dir);
  ExpectSameBits(9, /*argmax_odd=*/false, fp8_dir);
  // The tolerance is the bf16 model's own CUDA-vs-CPU distance on the same steps (the bf16
  // Linear splits activations the same way), doubled: FP8 adds no error of its own there.
  auto worst_distance = [](const std::string& dir, double* worst) {
    const Steps cuda = RunSteps(false, 9, 2, false, dir);
    const Steps cpu = RunSteps(false, 9, 2, false, dir, "cpu");
    ASSERT_TRUE(cuda.status.ok() && cpu.status.ok()) << cuda.status << cpu.status;
    ASSERT_EQ(cuda.logits.size(), cpu.logits.size());
    *worst = 0;
    for (size_t i = 0; i < cuda.logits.size(); ++i) {
      ASSERT_EQ(cuda.logits[i].size(), cpu.logits[i].size());
      for (size_t j = 0; j < cuda.logits[i].size(); ++j) {
        *worst = std::max(*worst, std::fabs(double(cuda.logits[i][j]) - cpu.logits[i][j]));
      }
      for (size_t r = 0; r < cuda.logits[i].size() / 128256; ++r) {
        const std::span<const float> a(cuda.logits[i].data() + r * 128256, 128256);
        const std::span<const float> b(cpu.logits[i].data() + r * 128256, 128256);
        EXPECT_EQ(test_util::ArgMax(a), test_util::ArgMax(b)) << dir << " step " << i << " row " << r;
      }
    }
  };
  double bf16_worst = 0, fp8_worst = 0;
  worst_distance(TinyModelDir(), &bf16_worst);
  worst_distance(fp8_dir, &fp8_worst);
  std::printf("largest |cuda - cpu| logit distance: bf16 %.3g, fp8 %.3g\n", bf16_worst, fp8_worst);
  EXPECT_GT(fp8_worst, 0.0);  // the paths differ (or this test compares nothing)
  EXPECT_LE(fp8_worst, 2 * bf16_worst + 1e-3);
}

// The worker warms its model up on the main thread and steps it on another. The warm-up's decode
// step makes its graph shape one already seen, so the step thread captures that shape's first
// decode at once: the kernels' workspaces must be the ones the main thread's steps sized, since
// allocating inside a capture is refused (CUDA fails cudaMalloc in a capturing thread and
// cudaFreeAsync of non-graph memory; the emulation also invalidates the capture for
// cudaMallocAsync). Here it is split attention's workspace: a 40-block table (graph width 64
// blocks, 1024 positions) splits a decode into two 512-position partitions. The main thread runs
// the prefill and the first decode (eager, as the warm-up would), the step thread the next three
// (capture, replay, replay). Same tokens as eager steps, and no capture failure.
TEST(StepGraphsEmulatedTest, ShapeSeenOnOneThreadIsCapturedOnAnother) {
  constexpr int kDecodes = 4;
  auto run = [&](bool graphs, std::vector<int32_t>* tokens) -> absl::Status {
    LoadOptions options = test_util::Options(0, 1, true, "cuda:0");
    options.graphs.enabled = graphs;
    auto model = LlamaModel::Load(TinyModelDir(), options);
    if (!model.ok()) return model.status();
    auto cache = (*model)->CreateKvCache(64);
    if (!cache.ok()) return cache.status();
    const std::vector<int32_t> prompt = {1000, 2000, 3000, 4000, 5000};
    std::vector<int32_t> table(40);
    for (int b = 0; b < 40; ++b) table[b] = b;
    int32_t next = 0, pos = static_cast<int32_t>(prompt.size());
    StepBatch batch;
    batch.sequences.push_back({prompt, 0, table});
    auto step = [&]() -> absl::Status {
      StepLogits logits;
      RETURN_IF_ERROR((*model)->Forward(batch, **cache, &logits));
      next = test_util::ArgMax(logits.Row(logits.row_begin[0]));
      tokens->push_back(next);
      batch.sequences.clear();
      batch.sequences.push_back({std::span<const int32_t>(&next, 1), pos++, table});
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(step());  // prefill
    RETURN_IF_ERROR(step());  // first decode of the shape: eager, on this thread
    absl::Status status;
    std::thread([&] {
      for (int d = 1; d < kDecodes && status.ok(); ++d) status = step();
    }).join();
    if (graphs && status.ok()) {
      const StepGraphStats stats = (*model)->graph_stats();
      EXPECT_EQ(stats.captures, 1);
      EXPECT_EQ(stats.replays, kDecodes - 2);
      EXPECT_EQ(stats.failures, 0);
    }
    return status;
  };
  std::vector<int32_t> eager, graphs;
  ASSERT_TRUE(run(false, &eager).ok());
  const absl::Status status = run(true, &graphs);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(graphs, eager);
}

}  // namespace
}  // namespace caduceus::model
