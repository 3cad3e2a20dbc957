// CPU kernels against straightforward float64 loops, plus the batch-invariance property.
#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/testing/random_tensors.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_internal.h"

namespace caduceus::kernels::cpu {
namespace {

using kernels::testing::RandomBf16;
using kernels::testing::RandomFloats;

struct Shape {
  int m, k, n;
};

class LinearTest : public ::testing::TestWithParam<Shape> {};

TEST_P(LinearTest, MatchesFloat64AndIsBatchInvariant) {
  const auto [m, k, n] = GetParam();
  auto x = RandomFloats(static_cast<size_t>(m) * k, 1);
  auto w = RandomBf16(static_cast<size_t>(n) * k, 2, 0.1f);
  std::vector<float> y(static_cast<size_t>(m) * n);
  Linear(x.data(), m, k, w.data(), n, y.data());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double ref = 0, mag = 0;
      for (int kk = 0; kk < k; ++kk) {
        const double p = double(x[i * k + kk]) * Bf16ToFloat(w[j * k + kk]);
        ref += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y[i * n + j], ref, 1e-5 * mag + 1e-6) << i << "," << j;
    }
  }
  // Every row computed alone (batch 1) must give the same bits as inside the batch.
  for (int i = 0; i < m; ++i) {
    std::vector<float> alone(n);
    Linear(x.data() + static_cast<size_t>(i) * k, 1, k, w.data(), n, alone.data());
    for (int j = 0; j < n; ++j) ASSERT_EQ(alone[j], y[i * n + j]) << "row " << i << " col " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(Shape{1, 16, 4}, Shape{1, 256, 37}, Shape{3, 33, 5},
                                           Shape{7, 100, 9}, Shape{70, 64, 13},
                                           Shape{5, 2048, 64}, Shape{130, 48, 7}));

TEST(LinearTest, GenericPathAgreesWithAvx512) {
  if (!internal::CpuHasAvx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  const int m = 9, k = 300, n = 21;
  auto x = RandomFloats(m * k, 3);
  auto w = RandomBf16(n * k, 4, 0.1f);
  std::vector<float> a(m * n), b(m * n);
  internal::LinearAvx512(x.data(), m, k, w.data(), n, a.data());
  internal::LinearGeneric(x.data(), m, k, w.data(), n, b.data());
  for (int i = 0; i < m * n; ++i) EXPECT_NEAR(a[i], b[i], 1e-4f);
}

TEST(RmsNormTest, MatchesFloat64AndFusedResidual) {
  const int n = 3, h = 40;
  auto x = RandomFloats(n * h, 5);
  auto r0 = RandomFloats(n * h, 6);
  auto w = RandomBf16(h, 7);
  std::vector<float> out(n * h), residual = r0, fused(n * h);
  AddRmsNorm(residual.data(), x.data(), w.data(), n, h, 1e-5f, fused.data());
  for (int i = 0; i < n; ++i) {
    double ss = 0;
    for (int j = 0; j < h; ++j) {
      const double v = double(r0[i * h + j]) + x[i * h + j];
      EXPECT_FLOAT_EQ(residual[i * h + j], static_cast<float>(v));
      ss += v * v;
    }
    const double inv = 1.0 / std::sqrt(ss / h + 1e-5);
    for (int j = 0; j < h; ++j) {
      const double ref = (double(r0[i * h + j]) + x[i * h + j]) * inv * Bf16ToFloat(w[j]);
      EXPECT_NEAR(fused[i * h + j], ref, 1e-5 * (1 + std::fabs(ref)));
    }
  }
  RmsNorm(residual.data(), w.data(), n, h, 1e-5f, out.data());
  EXPECT_EQ(out, fused);
}

TEST(RopeTest, RotateHalfMatchesFloat64) {
  const int n = 2, qh = 2, kvh = 1, d = 8;
  auto q = RandomFloats(n * qh * d, 8);
  auto k = RandomFloats(n * kvh * d, 9);
  auto q0 = q, k0 = k;
  std::vector<float> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / d));
  const int32_t pos[2] = {0, 17};
  Rope(q.data(), k.data(), pos, n, qh, kvh, d, inv_freq.data());
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < qh; ++h) {
      const float* src = &q0[(t * qh + h) * d];
      const float* dst = &q[(t * qh + h) * d];
      for (int i = 0; i < d / 2; ++i) {
        const double a = pos[t] * double(inv_freq[i]);
        EXPECT_NEAR(dst[i], src[i] * std::cos(a) - src[i + d / 2] * std::sin(a), 1e-5);
        EXPECT_NEAR(dst[i + d / 2], src[i + d / 2] * std::cos(a) + src[i] * std::sin(a), 1e-5);
      }
    }
  }
  for (int i = 0; i < d; ++i) EXPECT_FLOAT_EQ(k[i], k0[i]);  // position 0 is the identity
}

TEST(SiluMulTest, Matches) {
  std::vector<float> g = {-3, -0.5, 0, 0.5, 4}, u = {1, 2, 3, 4, 5}, o(5);
  SiluMul(g.data(), u.data(), 1, 5, o.data());
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(o[i], g[i] / (1 + std::exp(-double(g[i]))) * u[i], 1e-6);
}

// Attention over a paged cache with scattered, out-of-order blocks equals a dense float64 one,
// and a row's output does not depend on the other rows or sequences in the batch.
TEST(PagedAttentionTest, MatchesDenseReferenceWithScatteredBlocks) {
  const int q_heads = 4, kv_heads = 2, d = 8, bs = 4, nblocks = 16;
  std::vector<float> kc(nblocks * bs * kv_heads * d, NAN), vc(kc.size(), NAN);
  PagedKvLayer cache{kc.data(), vc.data(), nblocks, bs, kv_heads, d};
  // Seq 0: 6 tokens in blocks {9, 2}; seq 1: 3 tokens in block {5}.
  const std::vector<int> lens = {6, 3};
  const std::vector<std::vector<int32_t>> tables = {{9, 2}, {5, 0}};
  std::vector<std::vector<float>> keys, values;
  for (int s = 0; s < 2; ++s) {
    keys.push_back(RandomFloats(lens[s] * kv_heads * d, 10 + s));
    values.push_back(RandomFloats(lens[s] * kv_heads * d, 20 + s));
    std::vector<int32_t> slots(lens[s]);
    for (int p = 0; p < lens[s]; ++p) slots[p] = tables[s][p / bs] * bs + p % bs;
    KvCacheWrite(keys[s].data(), values[s].data(), slots.data(), lens[s], cache);
  }
  // Query rows: all 6 of seq 0 (prefill), the last of seq 1 (decode).
  const int32_t query_start[3] = {0, 6, 7};
  const int32_t positions[7] = {0, 1, 2, 3, 4, 5, 2};
  const int32_t flat_tables[4] = {9, 2, 5, 0};
  AttentionBatch batch{2, query_start, positions, flat_tables, 2};
  auto q = RandomFloats(7 * q_heads * d, 30);
  std::vector<float> out(q.size());
  const float scale = 1.0f / std::sqrt(float(d));
  PagedAttention(q.data(), q_heads, cache, batch, scale, out.data());
  for (int row = 0; row < 7; ++row) {
    const int s = row < 6 ? 0 : 1;
    for (int h = 0; h < q_heads; ++h) {
      const int kvh = h / (q_heads / kv_heads);
      const float* qh = &q[(row * q_heads + h) * d];
      std::vector<double> sc(positions[row] + 1);
      double mx = -1e300, den = 0;
      for (int p = 0; p <= positions[row]; ++p) {
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += double(qh[i]) * keys[s][(p * kv_heads + kvh) * d + i];
        sc[p] = dot * scale;
        mx = std::max(mx, sc[p]);
      }
      for (auto& v : sc) den += (v = std::exp(v - mx));
      for (int i = 0; i < d; ++i) {
        double ref = 0;
        for (int p = 0; p <= positions[row]; ++p) ref += sc[p] / den * values[s][(p * kv_heads + kvh) * d + i];
        EXPECT_NEAR(out[(row * q_heads + h) * d + i], ref, 1e-5) << row << " " << h;
      }
    }
  }
  // Decode row of seq 1 alone gives identical bits.
  const int32_t qs1[2] = {0, 1};
  const int32_t pos1[1] = {2};
  const int32_t table1[2] = {5, 0};
  AttentionBatch alone{1, qs1, pos1, table1, 2};
  std::vector<float> out1(q_heads * d);
  PagedAttention(q.data() + 6 * q_heads * d, q_heads, cache, alone, scale, out1.data());
  for (int i = 0; i < q_heads * d; ++i) EXPECT_EQ(out1[i], out[6 * q_heads * d + i]);
}

TEST(EmbeddingGatherTest, RowsInsideTheShardOnly) {
  auto table = RandomBf16(4 * 3, 40);
  const int32_t ids[3] = {5, 2, 6};  // shard holds rows [4, 8)
  std::vector<float> out(9, 7.0f);
  EmbeddingGather(table.data(), 4, 4, 3, ids, 3, out.data());
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(out[j], Bf16ToFloat(table[1 * 3 + j]));
    EXPECT_EQ(out[3 + j], 0.0f);
    EXPECT_EQ(out[6 + j], Bf16ToFloat(table[2 * 3 + j]));
  }
}

}  // namespace
}  // namespace caduceus::kernels::cpu
