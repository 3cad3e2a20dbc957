#include "worker/sampling/logits_math.h"

#include <algorithm>

// The two full-row kernels dominate a Sample() call; AVX-512 and AVX2 clones, picked at load
// time, run them faster than the SSE2 baseline on x86-64 while the binary still runs anywhere.
// Results can differ in the last bits between clones (lane count changes the summation order),
// so determinism holds per machine, not across CPU generations.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CADUCEUS_ROW_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CADUCEUS_ROW_KERNEL
#endif

namespace caduceus::sampling::internal {

CADUCEUS_ROW_KERNEL float BlockMax(std::span<const float> x, std::vector<float>* block_max) {
  const size_t n = x.size();
  const size_t blocks = (n + kBlock - 1) / kBlock;
  block_max->resize(blocks);
  float global = -std::numeric_limits<float>::infinity();
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * kBlock;
    const size_t end = std::min(n, begin + kBlock);
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (size_t i = begin; i < end; ++i) m = std::max(m, Sanitize(x[i]));
    (*block_max)[b] = m;
    global = std::max(global, m);
  }
  return global;
}

int32_t FirstIndexOf(std::span<const float> x, std::span<const float> block_max, float value) {
  for (size_t b = 0; b < block_max.size(); ++b) {
    if (block_max[b] < value) continue;
    const size_t end = std::min(x.size(), (b + 1) * kBlock);
    for (size_t i = b * kBlock; i < end; ++i) {
      if (Sanitize(x[i]) == value) return static_cast<int32_t>(i);
    }
  }
  return -1;
}

CADUCEUS_ROW_KERNEL double SumExp(std::span<const float> x, float max, float inv_t,
                                  std::vector<double>* block_sums) {
  const size_t n = x.size();
  const size_t blocks = (n + kBlock - 1) / kBlock;
  if (block_sums != nullptr) block_sums->resize(blocks);
  double total = 0.0;
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * kBlock;
    const size_t end = std::min(n, begin + kBlock);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (size_t i = begin; i < end; ++i) s += FastExpNonPositive((Sanitize(x[i]) - max) * inv_t);
    if (block_sums != nullptr) (*block_sums)[b] = s;
    total += s;
  }
  return total;
}

void TopN(std::span<const float> x, std::span<const float> block_max, int32_t n,
          std::vector<IdValue>* out) {
  out->clear();
  const size_t want = std::min<size_t>(static_cast<size_t>(std::max(n, 0)), x.size());
  if (want == 0) return;
  // `out` stays sorted by (value desc, id asc). Ids arrive in ascending order, so a newcomer
  // equal to the current worst does not displace it: ties keep the lowest ids.
  for (size_t b = 0; b < block_max.size(); ++b) {
    if (out->size() == want && block_max[b] <= out->back().value) continue;
    const size_t end = std::min(x.size(), (b + 1) * kBlock);
    for (size_t i = b * kBlock; i < end; ++i) {
      const float v = Sanitize(x[i]);
      if (out->size() == want) {
        if (!(v > out->back().value)) continue;
        out->pop_back();
      }
      auto pos = std::upper_bound(out->begin(), out->end(), v,
                                  [](float value, const IdValue& e) { return value > e.value; });
      out->insert(pos, IdValue{static_cast<int32_t>(i), v});
    }
  }
}

size_t CollectAtLeast(std::span<const float> x, std::span<const float> block_max, float threshold,
                      std::vector<IdValue>* out) {
  // Branch-free append: every entry of a visited block is written and the count advances only
  // for those that pass. With ~half the entries passing on flat rows, a branch per entry would
  // mispredict constantly. `out` only ever grows, so steady state never touches the allocator.
  if (out->size() < x.size()) out->resize(x.size());
  IdValue* dst = out->data();
  size_t count = 0;
  for (size_t b = 0; b < block_max.size(); ++b) {
    if (block_max[b] < threshold) continue;
    const size_t end = std::min(x.size(), (b + 1) * kBlock);
    for (size_t i = b * kBlock; i < end; ++i) {
      const float v = Sanitize(x[i]);
      dst[count] = IdValue{static_cast<int32_t>(i), v};
      count += v >= threshold ? 1 : 0;
    }
  }
  return count;
}

namespace {
uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

double UniformDraw(uint64_t seed, uint64_t step) {
  // Two rounds so that neighbouring (seed, step) pairs, e.g. (s, t+1) and (s+1, t), decorrelate.
  const uint64_t h = SplitMix64(SplitMix64(seed) ^ (step * 0xd1b54a32d192ed03ULL));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

}  // namespace caduceus::sampling::internal
