// Paged causal grouped-query attention on the CPU.
//
// One work item = (query token, kv head): the query heads sharing that kv head (GQA) go together,
// so each key and value row is read once for all of them. It reads its sequence's keys through
// the block table, computes all scores, a max-subtracted softmax and the weighted sum of values,
// each in ascending position order. A query row's result therefore never depends on which other rows or sequences
// share the batch, nor on whether it arrives in a prefill chunk or a single decode step.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/fast_exp.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/fixed_order_sum.h"

// The per-item loops vectorize; AVX-512 and AVX2 clones, picked at load time, run them several
// times faster than the SSE2 baseline (a 2048-token context made a small-preset decode step
// ~2x slower before). The clones keep the same summation order (FixedOrderSum's 16 lanes).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CADUCEUS_ATTENTION_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CADUCEUS_ATTENTION_CLONES
#endif

namespace caduceus::kernels::cpu {
namespace {

// A cached key or value element as fp32 (bf16 widens exactly).
inline float Load(float x) { return x; }
inline float Load(bf16 x) { return Bf16ToFloat(x); }

template <typename T>
inline float Dot(const float* a, const T* b, int32_t n) {
  return FixedOrderSum(n, [&](int32_t i) { return a[i] * Load(b[i]); });
}

// One (query row, kv head): the `group` query heads that share the kv head, together, so each
// key and value row is read once for all of them. For each query head the arithmetic and its
// order are those of a head alone: scores in ascending position, a max-subtracted softmax, the
// values summed in ascending position. T is the cache's element type (float or bf16).
template <typename T>
__attribute__((always_inline)) inline void AttendGroup(
    const float* q, int32_t group, int32_t head_dim, const T* k, const T* v, int64_t kv_row,
    const int32_t* table, int32_t block_size, int32_t context, float scale, float* scores,
    float* acc, float* inv, float* out) {
  // Consecutive positions of one kv head are a whole cache row apart (kv_heads x head_dim
  // elements) and blocks are scattered: the hardware prefetcher does not follow, so each key and
  // value row is requested kAhead positions before it is used.
  constexpr int32_t kAhead = 16;
  constexpr int32_t kPerLine = 64 / sizeof(T);
  auto row_of = [&](const T* base, int32_t p) {
    const int64_t slot = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
    return base + slot * kv_row;
  };
  auto prefetch_row = [&](const T* row) {
    for (int32_t d = 0; d < head_dim; d += kPerLine) __builtin_prefetch(row + d);
  };
  for (int32_t p = 0; p < context; ++p) {
    if (p + kAhead < context) prefetch_row(row_of(k, p + kAhead));
    const T* kp = row_of(k, p);
    for (int32_t g = 0; g < group; ++g) {
      scores[static_cast<int64_t>(g) * context + p] = Dot(q + g * head_dim, kp, head_dim) * scale;
    }
  }
  for (int32_t g = 0; g < group; ++g) {
    float* sg = scores + static_cast<int64_t>(g) * context;
    float max_score = -INFINITY;
    for (int32_t p = 0; p < context; ++p) max_score = std::max(max_score, sg[p]);
    for (int32_t p = 0; p < context; ++p) sg[p] = FastExpNonPositive(sg[p] - max_score);
    float denom = 0.0f;
    for (int32_t p = 0; p < context; ++p) denom += sg[p];
    inv[g] = 1.0f / denom;
  }
  std::fill(acc, acc + static_cast<int64_t>(group) * head_dim, 0.0f);
  for (int32_t p = 0; p < context; ++p) {
    if (p + kAhead < context) prefetch_row(row_of(v, p + kAhead));
    const T* vp = row_of(v, p);
    for (int32_t g = 0; g < group; ++g) {
      const float weight = scores[static_cast<int64_t>(g) * context + p];
      float* ag = acc + g * head_dim;
      for (int32_t d = 0; d < head_dim; ++d) ag[d] += weight * Load(vp[d]);
    }
  }
  for (int32_t g = 0; g < group; ++g) {
    for (int32_t d = 0; d < head_dim; ++d) out[g * head_dim + d] = acc[g * head_dim + d] * inv[g];
  }
}

// The ISA clones are made per cache type here (target_clones does not apply to templates).
CADUCEUS_ATTENTION_CLONES void AttendGroupF32(const float* q, int32_t group, int32_t head_dim,
                                              const float* k, const float* v, int64_t kv_row,
                                              const int32_t* table, int32_t block_size,
                                              int32_t context, float scale, float* scores,
                                              float* acc, float* inv, float* out) {
  AttendGroup(q, group, head_dim, k, v, kv_row, table, block_size, context, scale, scores, acc,
              inv, out);
}
CADUCEUS_ATTENTION_CLONES void AttendGroupBf16(const float* q, int32_t group, int32_t head_dim,
                                               const bf16* k, const bf16* v, int64_t kv_row,
                                               const int32_t* table, int32_t block_size,
                                               int32_t context, float scale, float* scores,
                                               float* acc, float* inv, float* out) {
  AttendGroup(q, group, head_dim, k, v, kv_row, table, block_size, context, scale, scores, acc,
              inv, out);
}

}  // namespace

void PagedAttention(const float* q, int64_t q_row_stride, int32_t q_heads, PagedKvLayer cache,
                    const AttentionBatch& batch, float scale, float* out, Stream) {
  const int32_t head_dim = cache.head_dim;
  const int32_t group = q_heads / cache.kv_heads;
  const int64_t kv_row = static_cast<int64_t>(cache.kv_heads) * head_dim;
  const int32_t num_tokens = batch.query_start[batch.num_seqs];

  // Map each token row back to its sequence once, so the parallel loop is flat over rows x heads.
  std::vector<int32_t> seq_of_row(num_tokens);
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    for (int32_t r = batch.query_start[s]; r < batch.query_start[s + 1]; ++r) seq_of_row[r] = s;
  }
  const int64_t work = static_cast<int64_t>(num_tokens) * cache.kv_heads;

#pragma omp parallel
  {
    std::vector<float> scores;
    std::vector<float> acc(static_cast<size_t>(group) * head_dim), inv(group);
#pragma omp for schedule(dynamic, 2)
    for (int64_t item = 0; item < work; ++item) {
      const int32_t row = static_cast<int32_t>(item / cache.kv_heads);
      const int32_t kvh = static_cast<int32_t>(item % cache.kv_heads);
      const int32_t* table =
          batch.block_tables + static_cast<int64_t>(seq_of_row[row]) * batch.max_blocks_per_seq;
      const int32_t context = batch.positions[row] + 1;
      scores.resize(static_cast<size_t>(group) * context);
      const int64_t head_offset = static_cast<int64_t>(kvh) * group * head_dim;
      const float* qg = q + row * q_row_stride + head_offset;
      float* og = out + static_cast<int64_t>(row) * q_heads * head_dim + head_offset;
      const int64_t head = static_cast<int64_t>(kvh) * head_dim;
      if (cache.dtype == KvDtype::kBf16) {
        AttendGroupBf16(qg, group, head_dim, static_cast<const bf16*>(cache.k) + head,
                        static_cast<const bf16*>(cache.v) + head, kv_row, table, cache.block_size,
                        context, scale, scores.data(), acc.data(), inv.data(), og);
      } else {
        AttendGroupF32(qg, group, head_dim, static_cast<const float*>(cache.k) + head,
                       static_cast<const float*>(cache.v) + head, kv_row, table,
                       cache.block_size, context, scale, scores.data(), acc.data(), inv.data(),
                       og);
      }
    }
  }
}

}  // namespace caduceus::kernels::cpu
