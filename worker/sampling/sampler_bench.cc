// Sample() over a Llama-3-sized row (128256 logits) for the three common configurations.
// Run: build/worker/sampling/caduceus-bench-sampling
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "worker/sampling/sampler.h"

namespace caduceus::sampling {
namespace {

// Roughly LM-shaped: a Gaussian bulk with a handful of strong candidates on top.
std::vector<float> LlamaLikeLogits() {
  std::mt19937 rng(123);
  std::normal_distribution<float> bulk(0.0f, 2.5f);
  std::vector<float> logits(128256);
  for (float& x : logits) x = bulk(rng);
  std::uniform_int_distribution<int> pick(0, 128255);
  for (int i = 0; i < 20; ++i) logits[pick(rng)] = 14.0f + i * 0.3f;
  return logits;
}

void Run(benchmark::State& state, const SamplingParams& params) {
  const std::vector<float> logits = LlamaLikeLogits();
  SequenceSampler sampler(params, {});
  uint64_t step = 0;
  for (auto _ : state) {
    auto result = sampler.Sample(logits, step++);
    benchmark::DoNotOptimize(result);
  }
}

void BM_Greedy(benchmark::State& state) {
  SamplingParams p;
  p.temperature = 0.0f;
  Run(state, p);
}
void BM_GreedyWithoutLogprob(benchmark::State& state) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.skip_logprob = true;
  Run(state, p);
}
void BM_TopKTopPTemperature(benchmark::State& state) {
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 50;
  p.top_p = 0.9f;
  Run(state, p);
}
void BM_TopPOnly(benchmark::State& state) {
  SamplingParams p;
  p.top_p = 0.9f;
  Run(state, p);
}
// A flat row (no dominant tokens): the nucleus holds tens of thousands of tokens.
void BM_TopPFlat(benchmark::State& state) {
  std::mt19937 rng(7);
  std::normal_distribution<float> bulk(0.0f, 2.0f);
  std::vector<float> logits(128256);
  for (float& x : logits) x = bulk(rng);
  SamplingParams p;
  p.top_p = 0.95f;
  SequenceSampler sampler(p, {});
  uint64_t step = 0;
  for (auto _ : state) {
    auto result = sampler.Sample(logits, step++);
    benchmark::DoNotOptimize(result);
  }
}
void BM_TopPOnlyWithPenalties(benchmark::State& state) {
  SamplingParams p;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.2f;
  std::vector<int32_t> prompt(2000);
  for (int i = 0; i < 2000; ++i) prompt[i] = (i * 7919) % 128256;
  const std::vector<float> logits = LlamaLikeLogits();
  SequenceSampler sampler(p, prompt);
  for (int i = 0; i < 200; ++i) sampler.Accept(prompt[i]);
  uint64_t step = 0;
  for (auto _ : state) {
    auto result = sampler.Sample(logits, step++);
    benchmark::DoNotOptimize(result);
  }
}
void BM_PlainWithTopLogprobs(benchmark::State& state) {
  SamplingParams p;
  p.top_logprobs = 20;
  Run(state, p);
}

BENCHMARK(BM_Greedy);
BENCHMARK(BM_GreedyWithoutLogprob);
BENCHMARK(BM_TopKTopPTemperature);
BENCHMARK(BM_TopPOnly);
BENCHMARK(BM_TopPFlat);
BENCHMARK(BM_TopPOnlyWithPenalties);
BENCHMARK(BM_PlainWithTopLogprobs);

}  // namespace
}  // namespace caduceus::sampling

BENCHMARK_MAIN();
