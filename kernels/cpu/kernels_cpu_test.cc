// CPU kernels against straightforward float64 loops, plus the batch-invariance property.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <utility>
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

// The greedy token of a logits row as the sampler defines it, by a plain ascending scan:
// NaN never wins, +inf counts as FLT_MAX, the first of equal maxima wins.
std::pair<int32_t, float> ScanArgmax(const float* row, int n) {
  int32_t best = -1;
  float best_value = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < n; ++j) {
    float v = row[j];
    if (std::isnan(v)) continue;
    if (v == std::numeric_limits<float>::infinity()) v = std::numeric_limits<float>::max();
    if (v > best_value) {
      best_value = v;
      best = j;
    }
  }
  return {best, best_value};
}

using LinearFn = void (*)(const float*, int32_t, int32_t, const bf16*, int32_t, float*);
using ArgmaxFn = void (*)(const float*, int32_t, int32_t, const bf16*, int32_t, int32_t*, float*);

// LinearArgmax of one implementation against a scan of the same implementation's Linear output.
void ExpectArgmaxOfLinear(LinearFn linear, ArgmaxFn argmax, const std::vector<float>& x, int m,
                          int k, const std::vector<bf16>& w, int n, const std::string& what) {
  std::vector<float> y(static_cast<size_t>(m) * n);
  linear(x.data(), m, k, w.data(), n, y.data());
  std::vector<int32_t> index(m, -7);
  std::vector<float> value(m, 7.0f);
  argmax(x.data(), m, k, w.data(), n, index.data(), value.data());
  for (int i = 0; i < m; ++i) {
    const auto [want_index, want_value] = ScanArgmax(y.data() + static_cast<size_t>(i) * n, n);
    ASSERT_EQ(index[i], want_index) << what << " row " << i;
    ASSERT_EQ(value[i], want_value) << what << " row " << i;  // bit-identical logits
  }
}

void ExpectArgmaxOfLinearBothPaths(const std::vector<float>& x, int m, int k,
                                   const std::vector<bf16>& w, int n, const std::string& what) {
  ExpectArgmaxOfLinear(&internal::LinearGeneric, &internal::LinearArgmaxGeneric, x, m, k, w, n,
                       "generic " + what);
  if (internal::CpuHasAvx512()) {
    ExpectArgmaxOfLinear(&internal::LinearAvx512, &internal::LinearArgmaxAvx512, x, m, k, w, n,
                         "avx512 " + what);
  }
}

class LinearArgmaxTest : public ::testing::TestWithParam<Shape> {};

TEST_P(LinearArgmaxTest, EqualsTheArgmaxOfLinearBitForBit) {
  const auto [m, k, n] = GetParam();
  const auto x = RandomFloats(static_cast<size_t>(m) * k, 11);
  const auto w = RandomBf16(static_cast<size_t>(n) * k, 12, 0.1f);
  ExpectArgmaxOfLinearBothPaths(x, m, k, w, n,
                                std::to_string(m) + "x" + std::to_string(k) + "x" +
                                    std::to_string(n));
  // The dispatched kernel, and every row alone (batch invariance of the greedy token).
  std::vector<int32_t> index(m);
  std::vector<float> value(m);
  LinearArgmax(x.data(), m, k, w.data(), n, index.data(), value.data());
  for (int i = 0; i < m; ++i) {
    int32_t alone_index = -7;
    float alone_value = 0;
    LinearArgmax(x.data() + static_cast<size_t>(i) * k, 1, k, w.data(), n, &alone_index,
                 &alone_value);
    ASSERT_EQ(alone_index, index[i]) << "row " << i;
    ASSERT_EQ(alone_value, value[i]) << "row " << i;
  }
}

// Odd k and n (masked tails, partial tiles), m = 1 (8-row tiles), m > 64 (two token blocks).
INSTANTIATE_TEST_SUITE_P(Shapes, LinearArgmaxTest,
                         ::testing::Values(Shape{1, 16, 4}, Shape{1, 64, 1001}, Shape{1, 256, 37},
                                           Shape{3, 33, 5}, Shape{32, 256, 2051},
                                           Shape{70, 64, 13}, Shape{5, 300, 8}));

TEST(LinearArgmaxTest, TiesNonFiniteLogitsAndEmptyRows) {
  const int k = 40, n = 23, m = 3;
  std::vector<float> x(static_cast<size_t>(m) * k, 1.0f);
  x[2 * k + 5] = std::numeric_limits<float>::quiet_NaN();  // row 2: every logit is NaN
  auto w = RandomBf16(static_cast<size_t>(n) * k, 13, 0.1f);
  const bf16 half = FloatToBf16(0.5f);
  for (int kk = 0; kk < k; ++kk) {
    w[4 * k + kk] = half;   // rows 4 and 17: the same, largest logit; 4 must win
    w[17 * k + kk] = half;
    w[9 * k + kk] = FloatToBf16(std::numeric_limits<float>::quiet_NaN());  // row 9: NaN logit
  }
  ExpectArgmaxOfLinearBothPaths(x, m, k, w, n, "ties");
  std::vector<int32_t> index(m);
  std::vector<float> value(m);
  LinearArgmax(x.data(), m, k, w.data(), n, index.data(), value.data());
  EXPECT_EQ(index[0], 4);
  EXPECT_EQ(index[1], 4);
  EXPECT_EQ(index[2], -1) << "a row of NaN logits has no greedy token";
  EXPECT_EQ(value[2], -std::numeric_limits<float>::infinity());

  // +inf logits count as FLT_MAX, and the first of them wins.
  for (int kk = 0; kk < k; ++kk) {
    w[6 * k + kk] = FloatToBf16(std::numeric_limits<float>::infinity());
    w[20 * k + kk] = FloatToBf16(std::numeric_limits<float>::infinity());
  }
  ExpectArgmaxOfLinearBothPaths(x, 2, k, w, n, "+inf");
  LinearArgmax(x.data(), 2, k, w.data(), n, index.data(), value.data());
  EXPECT_EQ(index[0], 6);
  EXPECT_EQ(value[0], std::numeric_limits<float>::max());

  // No columns at all: no greedy token.
  LinearArgmax(x.data(), 1, k, w.data(), 0, index.data(), value.data());
  EXPECT_EQ(index[0], -1);
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

// Rope works on the fused q|k|v rows the model's projection writes: the first q_heads + kv_heads
// heads of each row rotate, the value heads after them and anything past the row stay untouched.
TEST(RopeTest, RotatesQueryAndKeyHeadsOfFusedRowsAgainstFloat64) {
  const int n = 3, qh = 2, kvh = 1, d = 8;
  const int row = (qh + 2 * kvh) * d + 3;  // 3 floats of padding: the stride is not the width
  auto x = RandomFloats(n * row, 8);
  const auto x0 = x;
  std::vector<float> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / d));
  const int32_t pos[n] = {0, 17, 4000};
  Rope(x.data(), row, pos, n, qh + kvh, d, inv_freq.data());
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < qh + kvh; ++h) {
      const float* src = &x0[t * row + h * d];
      const float* dst = &x[t * row + h * d];
      for (int i = 0; i < d / 2; ++i) {
        const double a = pos[t] * double(inv_freq[i]);
        EXPECT_NEAR(dst[i], src[i] * std::cos(a) - src[i + d / 2] * std::sin(a), 1e-5);
        EXPECT_NEAR(dst[i + d / 2], src[i + d / 2] * std::cos(a) + src[i] * std::sin(a), 1e-5);
      }
    }
    for (int j = (qh + kvh) * d; j < row; ++j) EXPECT_EQ(x[t * row + j], x0[t * row + j]) << j;
  }
  for (int i = 0; i < (qh + kvh) * d; ++i) EXPECT_FLOAT_EQ(x[i], x0[i]);  // position 0: identity
}

TEST(SiluMulTest, ReadsGateThenUpFromEachFusedRow) {
  // Two rows of [gate | up], d = 5.
  const std::vector<float> gate_up = {-3, -0.5, 0, 0.5, 4, 1, 2, 3, 4, 5,
                                      2, -1, 7, -7, 0.25, -2, 0.5, 1, 3, -4};
  std::vector<float> o(10);
  SiluMul(gate_up.data(), 2, 5, o.data());
  for (int r = 0; r < 2; ++r) {
    for (int i = 0; i < 5; ++i) {
      const double g = gate_up[r * 10 + i], u = gate_up[r * 10 + 5 + i];
      EXPECT_NEAR(o[r * 5 + i], g / (1 + std::exp(-g)) * u, 1e-6) << r << " " << i;
    }
  }
}

// Attention over a paged cache with scattered, out-of-order blocks equals a dense float64 one,
// and a row's output does not depend on the other rows or sequences in the batch.
// With a bf16 cache the reference uses the keys and values as stored (rounded to bf16): the
// kernel's arithmetic is the fp32 one on exactly widened elements.
class PagedAttentionTest : public ::testing::TestWithParam<KvDtype> {};

TEST_P(PagedAttentionTest, MatchesDenseReferenceWithScatteredBlocks) {
  const KvDtype dtype = GetParam();
  const int q_heads = 4, kv_heads = 2, d = 8, bs = 4, nblocks = 16;
  // 0xFF bytes are NaN in both element types: a read of an unwritten slot poisons the output.
  const size_t cache_bytes = size_t(nblocks) * bs * kv_heads * d * KvDtypeBytes(dtype);
  std::vector<char> kc(cache_bytes, '\xff'), vc(cache_bytes, '\xff');
  PagedKvLayer cache{kc.data(), vc.data(), nblocks, bs, kv_heads, d, dtype};
  auto stored = [&](float x) {
    return dtype == KvDtype::kBf16 ? Bf16ToFloat(FloatToBf16(x)) : x;
  };
  // Seq 0: 6 tokens in blocks {9, 2}; seq 1: 3 tokens in block {5}.
  const std::vector<int> lens = {6, 3};
  const std::vector<std::vector<int32_t>> tables = {{9, 2}, {5, 0}};
  std::vector<std::vector<float>> keys, values;
  for (int s = 0; s < 2; ++s) {
    keys.push_back(RandomFloats(lens[s] * kv_heads * d, 10 + s));
    values.push_back(RandomFloats(lens[s] * kv_heads * d, 20 + s));
    std::vector<int32_t> slots(lens[s]);
    for (int p = 0; p < lens[s]; ++p) slots[p] = tables[s][p / bs] * bs + p % bs;
    // Through the fused layout: token p's k and v inside one row of width 3 * kv_heads * d.
    const int kv = kv_heads * d, width = 3 * kv;
    std::vector<float> fused(lens[s] * width, NAN);
    for (int p = 0; p < lens[s]; ++p) {
      std::copy_n(&keys[s][p * kv], kv, &fused[p * width + kv]);
      std::copy_n(&values[s][p * kv], kv, &fused[p * width + 2 * kv]);
    }
    KvCacheWrite(fused.data() + kv, fused.data() + 2 * kv, width, slots.data(), lens[s], cache);
    for (auto& x : keys.back()) x = stored(x);  // what the reference attends to
    for (auto& x : values.back()) x = stored(x);
  }
  // Query rows: all 6 of seq 0 (prefill), the last of seq 1 (decode).
  const int32_t query_start[3] = {0, 6, 7};
  const int32_t positions[7] = {0, 1, 2, 3, 4, 5, 2};
  const int32_t flat_tables[4] = {9, 2, 5, 0};
  AttentionBatch batch{2, query_start, positions, flat_tables, 2};
  auto q = RandomFloats(7 * q_heads * d, 30);
  // The kernel reads each query row at its stride (here inside a wider row of NaN).
  const int q_stride = q_heads * d + 2 * kv_heads * d;
  std::vector<float> q_rows(7 * q_stride, NAN);
  for (int row = 0; row < 7; ++row) {
    std::copy_n(&q[row * q_heads * d], q_heads * d, &q_rows[row * q_stride]);
  }
  std::vector<float> out(q.size());
  const float scale = 1.0f / std::sqrt(float(d));
  PagedAttention(q_rows.data(), q_stride, q_heads, cache, batch, scale, out.data());
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
  PagedAttention(q.data() + 6 * q_heads * d, q_heads * d, q_heads, cache, alone, scale,
                 out1.data());
  for (int i = 0; i < q_heads * d; ++i) EXPECT_EQ(out1[i], out[6 * q_heads * d + i]);
}

INSTANTIATE_TEST_SUITE_P(CacheTypes, PagedAttentionTest,
                         ::testing::Values(KvDtype::kF32, KvDtype::kBf16),
                         [](const auto& info) {
                           return info.param == KvDtype::kBf16 ? "bf16" : "f32";
                         });

// A bf16 cache stores each value rounded to nearest even, in its slot, and nothing else.
TEST(KvCacheWriteTest, Bf16CacheStoresRoundedValuesInTheirSlots) {
  const int kv_heads = 2, d = 4, bs = 4, nblocks = 3, row = kv_heads * d, stride = 3 * row;
  std::vector<bf16> kc(nblocks * bs * row, bf16{0x7FC0}), vc(kc);
  PagedKvLayer cache{kc.data(), vc.data(), nblocks, bs, kv_heads, d, KvDtype::kBf16};
  const auto src = RandomFloats(2 * stride, 50);
  const int32_t slots[2] = {9, 2};
  KvCacheWrite(src.data(), src.data() + row, stride, slots, 2, cache);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < row; ++j) {
      EXPECT_EQ(kc[slots[i] * row + j].bits, FloatToBf16(src[i * stride + j]).bits);
      EXPECT_EQ(vc[slots[i] * row + j].bits, FloatToBf16(src[i * stride + row + j]).bits);
    }
  }
  int untouched = 0;
  for (const bf16 x : kc) untouched += x.bits == 0x7FC0;
  EXPECT_EQ(untouched, (nblocks * bs - 2) * row);
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
