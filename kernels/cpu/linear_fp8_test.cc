// LinearFp8 (weight-only FP8) on the CPU: against a float64 loop over the decoded weights, against
// Linear over the same weights widened to bf16 (the bit-for-bit contract of kernel_signatures.inc),
// batch invariance, and both instruction-set paths.
#include <cmath>
#include <vector>

#include "common/fp8.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_internal.h"
#include "kernels/testing/random_tensors.h"

namespace caduceus::kernels::cpu {
namespace {

using kernels::testing::RandomFloats;
using kernels::testing::RandomFp8;
using kernels::testing::RandomScales;

using Fp8Fn = void (*)(const float*, int32_t, int32_t, const uint8_t*, const float*, int32_t,
                       float*);
using Bf16Fn = void (*)(const float*, int32_t, int32_t, const bf16*, int32_t, float*);

struct Shape {
  int m, k, n;
};

// The paths this CPU can run: the portable one always, AVX-512 when present.
std::vector<std::pair<Fp8Fn, Bf16Fn>> Paths() {
  std::vector<std::pair<Fp8Fn, Bf16Fn>> paths = {
      {&internal::LinearFp8Generic, &internal::LinearGeneric}};
  if (internal::CpuHasAvx512()) paths.push_back({&internal::LinearFp8Avx512, &internal::LinearAvx512});
  return paths;
}

class LinearFp8Test : public ::testing::TestWithParam<Shape> {};

TEST_P(LinearFp8Test, MatchesFloat64OverTheDecodedWeights) {
  const auto [m, k, n] = GetParam();
  const auto x = RandomFloats(size_t(m) * k, 11);
  const auto w = RandomFp8(size_t(n) * k, 12);
  const auto scale = RandomScales(n, 13);
  std::vector<float> y(size_t(m) * n);
  LinearFp8(x.data(), m, k, w.data(), scale.data(), n, y.data());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double ref = 0, mag = 0;
      for (int kk = 0; kk < k; ++kk) {
        // Decoded from the format's definition here, not through common/fp8.h.
        const uint8_t b = w[size_t(j) * k + kk];
        const int e = (b >> 3) & 15, mant = b & 7;
        const double v = (e == 0 ? mant / 8.0 * std::ldexp(1.0, -6)
                                 : (1 + mant / 8.0) * std::ldexp(1.0, e - 7)) *
                         ((b & 0x80) ? -1 : 1);
        const double p = double(x[size_t(i) * k + kk]) * v * scale[j];
        ref += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y[size_t(i) * n + j], ref, 1e-5 * mag + 1e-9) << i << "," << j;
    }
  }
}

TEST_P(LinearFp8Test, EqualsScaledLinearOverBf16WeightsOnEveryPath) {
  const auto [m, k, n] = GetParam();
  const auto x = RandomFloats(size_t(m) * k, 21);
  const auto w = RandomFp8(size_t(n) * k, 22);
  const auto scale = RandomScales(n, 23);
  std::vector<bf16> widened(w.size());
  for (size_t i = 0; i < w.size(); ++i) widened[i] = FloatToBf16(Fp8E4M3ToFloat(w[i]));
  for (const auto& [fp8, linear] : Paths()) {
    std::vector<float> y(size_t(m) * n), ref(size_t(m) * n);
    fp8(x.data(), m, k, w.data(), scale.data(), n, y.data());
    linear(x.data(), m, k, widened.data(), n, ref.data());
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        ASSERT_EQ(y[size_t(i) * n + j], ref[size_t(i) * n + j] * scale[j]) << i << "," << j;
      }
    }
    // Batch invariance: each row alone gives the same bits.
    for (int i = 0; i < m; ++i) {
      std::vector<float> alone(n);
      fp8(x.data() + size_t(i) * k, 1, k, w.data(), scale.data(), n, alone.data());
      for (int j = 0; j < n; ++j) ASSERT_EQ(alone[j], y[size_t(i) * n + j]) << i << "," << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearFp8Test,
                         ::testing::Values(Shape{1, 16, 4}, Shape{1, 256, 37}, Shape{1, 96, 8},
                                           Shape{3, 33, 5}, Shape{7, 100, 9}, Shape{70, 64, 13},
                                           Shape{5, 2048, 64}, Shape{130, 48, 7}));

TEST(LinearFp8Test, EmptyShapesWriteNothing) {
  float y = 7.0f;
  LinearFp8(nullptr, 0, 4, nullptr, nullptr, 1, &y);
  LinearFp8(nullptr, 1, 4, nullptr, nullptr, 0, &y);
  EXPECT_EQ(y, 7.0f);
}

}  // namespace
}  // namespace caduceus::kernels::cpu
