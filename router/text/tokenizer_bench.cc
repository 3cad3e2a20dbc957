// Tokenizer speed on the fixture corpus (Google Benchmark). Replaces the timed unit test:
// speed is measured here, never asserted in tests.
//   caduceus-bench-tokenizer --tokenizer-dir DIR --corpus tests/fixtures/tokenizer/corpus.json
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "nlohmann/json.hpp"
#include "router/text/tokenizer.h"

namespace {

std::string g_tokenizer_dir;
std::string g_corpus_path;

const std::vector<std::string>& Corpus() {
  static const std::vector<std::string> texts = [] {
    std::vector<std::string> out;
    std::ifstream in(g_corpus_path);
    const auto doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    const auto& list = doc.is_object() && doc.contains("texts") ? doc["texts"] : doc;
    for (const auto& t : list) {
      if (t.is_string()) out.push_back(t.get<std::string>());
      if (t.is_object() && t.contains("text")) out.push_back(t["text"].get<std::string>());
    }
    return out;
  }();
  return texts;
}

std::unique_ptr<caduceus::text::Tokenizer> Load() {
  auto tok = caduceus::text::Tokenizer::FromModelDir(g_tokenizer_dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*tok);
}

// Cold: a fresh tokenizer per iteration, so every pre-token goes through BPE.
void BM_EncodeCorpusCold(benchmark::State& state) {
  size_t tokens = 0, bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto tok = Load();
    state.ResumeTiming();
    for (const auto& t : Corpus()) {
      tokens += tok->Encode(t, false).size();
      bytes += t.size();
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  state.counters["bytes_per_s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EncodeCorpusCold)->Iterations(3)->Unit(benchmark::kMillisecond);

// Warm: the per-pre-token cache is filled, as in a long-running router.
void BM_EncodeCorpusWarm(benchmark::State& state) {
  static auto tok = Load();
  size_t tokens = 0, bytes = 0;
  for (auto _ : state) {
    for (const auto& t : Corpus()) {
      tokens += tok->Encode(t, false).size();
      bytes += t.size();
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  state.counters["bytes_per_s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EncodeCorpusWarm)->Unit(benchmark::kMillisecond);

void BM_LoadTokenizer(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Load());
}
BENCHMARK(BM_LoadTokenizer)->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  g_tokenizer_dir = CADUCEUS_DEFAULT_TOKENIZER_DIR;
  g_corpus_path = CADUCEUS_DEFAULT_CORPUS;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--tokenizer-dir=", 16) == 0) {
      g_tokenizer_dir = argv[i] + 16;
    } else if (std::strncmp(argv[i], "--corpus=", 9) == 0) {
      g_corpus_path = argv[i] + 9;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
