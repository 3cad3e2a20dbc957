// Linear against LinearFp8 on the CPU at the 8B model's projection shapes, decode rows (m = 1, 8)
// and a prefill chunk (m = 64). Several copies of the weights rotate so each call streams its
// weights from memory, as in a decode step, not from the cache. The weights sit in huge pages,
// as the worker's weight arena puts them (weight_arena.h): with 4 KiB pages the CI VM ran these
// working sets up to 30x slower, erratically (2026-12-01).
// Run: build/kernels/caduceus-bench-linear-fp8 [--benchmark_filter=...]
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/testing/random_tensors.h"

namespace caduceus::kernels::cpu {
namespace {

constexpr int kCopies = 4;  // x the largest matrix (235 MB bf16): far beyond any cache

// `values` copied into an anonymous mapping with transparent huge pages requested.
template <typename T>
std::shared_ptr<T> InHugePages(const std::vector<T>& values) {
  const size_t bytes = values.size() * sizeof(T);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  madvise(p, bytes, MADV_HUGEPAGE);
  std::memcpy(p, values.data(), bytes);
  return std::shared_ptr<T>(static_cast<T*>(p), [bytes](T* q) { munmap(q, bytes); });
}

struct Case {
  int32_t m, k, n;
  explicit Case(const benchmark::State& s)
      : m(static_cast<int32_t>(s.range(0))), k(static_cast<int32_t>(s.range(1))),
        n(static_cast<int32_t>(s.range(2))) {}
};

void Report(benchmark::State& state, const Case& c, int64_t weight_bytes) {
  state.SetBytesProcessed(state.iterations() * weight_bytes);
  state.counters["weights/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * c.k * c.n, benchmark::Counter::kIsRate);
}

void BM_LinearBf16(benchmark::State& state) {
  const Case c(state);
  const auto x = testing::RandomFloats(size_t(c.m) * c.k, 1);
  std::vector<std::shared_ptr<bf16>> w;
  for (int i = 0; i < kCopies; ++i) w.push_back(InHugePages(testing::RandomBf16(size_t(c.n) * c.k, 2 + i, 0.02f)));
  std::vector<float> y(size_t(c.m) * c.n);
  int i = 0;
  for (auto _ : state) {
    Linear(x.data(), c.m, c.k, w[i++ % kCopies].get(), c.n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  Report(state, c, int64_t{c.k} * c.n * 2);
}

void BM_LinearFp8(benchmark::State& state) {
  const Case c(state);
  const auto x = testing::RandomFloats(size_t(c.m) * c.k, 1);
  std::vector<std::shared_ptr<uint8_t>> w;
  for (int i = 0; i < kCopies; ++i) w.push_back(InHugePages(testing::RandomFp8(size_t(c.n) * c.k, 2 + i)));
  const auto scale = testing::RandomScales(c.n, 9);
  std::vector<float> y(size_t(c.m) * c.n);
  int i = 0;
  for (auto _ : state) {
    LinearFp8(x.data(), c.m, c.k, w[i++ % kCopies].get(), scale.data(), c.n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  Report(state, c, int64_t{c.k} * c.n + int64_t{c.n} * 4);
}

// {m, k, n}: q|k|v, gate|up and down of Llama-3 8B.
void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t m : {1, 8, 64}) {
    b->Args({m, 4096, 6144});
    b->Args({m, 4096, 28672});
    b->Args({m, 14336, 4096});
  }
  b->ArgNames({"m", "k", "n"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_LinearBf16)->Apply(Shapes);
BENCHMARK(BM_LinearFp8)->Apply(Shapes);

}  // namespace
}  // namespace caduceus::kernels::cpu

BENCHMARK_MAIN();
