// ProposeNgramDraft over histories of 1k to 128k tokens (Llama-3.1's context): the router calls
// it for every decoding sequence of every speculative step, on the replica's loop thread.
// Worst case: random tokens, so no suffix recurs and every n-gram length scans the history.
// Run: build/router/scheduler/caduceus-bench-ngram-draft
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "router/scheduler/ngram_draft.h"

namespace caduceus::router {
namespace {

std::vector<int32_t> History(int64_t len, int32_t vocab) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<int32_t> v(static_cast<size_t>(len));
  for (int32_t& t : v) t = token(rng);
  return v;
}

// Random 128k-vocabulary tokens: no match at all (the full scan for each n-gram length).
void BM_NoMatch(benchmark::State& state) {
  const std::vector<int32_t> tokens = History(state.range(0), 128256);
  for (auto _ : state) {
    auto draft = ProposeNgramDraft(tokens, NgramDraftConfig{2, 4}, 4);
    benchmark::DoNotOptimize(draft);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// A 64-token vocabulary: first tokens collide often, so the scan compares more per position.
void BM_SmallVocabulary(benchmark::State& state) {
  std::vector<int32_t> tokens = History(state.range(0), 64);
  tokens.push_back(100000);  // a suffix that never occurred: scans everything, n = 4..2
  tokens.push_back(100001);
  for (auto _ : state) {
    auto draft = ProposeNgramDraft(tokens, NgramDraftConfig{2, 4}, 4);
    benchmark::DoNotOptimize(draft);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// The incremental index after one more token (the steady state of a decoding sequence).
void BM_IndexNextToken(benchmark::State& state) {
  const std::vector<int32_t> all = History(state.range(0) + 1000000, 128256);
  std::vector<int32_t> tokens(all.begin(), all.begin() + state.range(0));
  NgramIndex index(NgramDraftConfig{2, 4});
  index.Propose(tokens, 4);
  size_t next = tokens.size();
  for (auto _ : state) {
    tokens.push_back(all[next++]);
    auto draft = index.Propose(tokens, 4);
    benchmark::DoNotOptimize(draft);
  }
}

BENCHMARK(BM_NoMatch)->Arg(1024)->Arg(8192)->Arg(32768)->Arg(131072);
BENCHMARK(BM_IndexNextToken)->Arg(8192)->Arg(131072);
BENCHMARK(BM_SmallVocabulary)->Arg(8192)->Arg(131072);

}  // namespace
}  // namespace caduceus::router

BENCHMARK_MAIN();
