// Paged causal grouped-query attention on the CPU.
//
// One work item = (query token, query head). It reads its sequence's keys through the block table,
// computes all scores, a max-subtracted softmax and the weighted sum of values, each in ascending
// position order. A query row's result therefore never depends on which other rows or sequences
// share the batch, nor on whether it arrives in a prefill chunk or a single decode step.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/fixed_order_sum.h"

namespace caduceus::kernels::cpu {
namespace {

float Dot(const float* a, const float* b, int32_t n) {
  return FixedOrderSum(n, [&](int32_t i) { return a[i] * b[i]; });
}

}  // namespace

void PagedAttention(const float* q, int32_t q_heads, PagedKvLayer cache,
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
  const int64_t work = static_cast<int64_t>(num_tokens) * q_heads;

#pragma omp parallel
  {
    std::vector<float> scores;
    std::vector<float> acc(head_dim);
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < work; ++item) {
      const int32_t row = static_cast<int32_t>(item / q_heads);
      const int32_t h = static_cast<int32_t>(item % q_heads);
      const int32_t kvh = h / group;
      const int32_t* table =
          batch.block_tables + static_cast<int64_t>(seq_of_row[row]) * batch.max_blocks_per_seq;
      const int32_t context = batch.positions[row] + 1;
      const float* qh = q + (static_cast<int64_t>(row) * q_heads + h) * head_dim;
      scores.resize(context);

      float max_score = -INFINITY;
      for (int32_t p = 0; p < context; ++p) {
        const int64_t slot =
            static_cast<int64_t>(table[p / cache.block_size]) * cache.block_size + p % cache.block_size;
        const float s = Dot(qh, cache.k + slot * kv_row + static_cast<int64_t>(kvh) * head_dim, head_dim) * scale;
        scores[p] = s;
        max_score = std::max(max_score, s);
      }
      float denom = 0.0f;
      for (int32_t p = 0; p < context; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        denom += scores[p];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int32_t p = 0; p < context; ++p) {
        const int64_t slot =
            static_cast<int64_t>(table[p / cache.block_size]) * cache.block_size + p % cache.block_size;
        const float* vp = cache.v + slot * kv_row + static_cast<int64_t>(kvh) * head_dim;
        const float weight = scores[p];
        for (int32_t d = 0; d < head_dim; ++d) acc[d] += weight * vp[d];
      }
      float* oh = out + (static_cast<int64_t>(row) * q_heads + h) * head_dim;
      const float inv = 1.0f / denom;
      for (int32_t d = 0; d < head_dim; ++d) oh[d] = acc[d] * inv;
    }
  }
}

}  // namespace caduceus::kernels::cpu
