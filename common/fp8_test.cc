// E4M3 conversions against the format's definition (OCP 8-bit floating point, E4M3): known
// codes, every finite code round-trips, ties go to the even mantissa, saturation, NaN.
#include "common/fp8.h"

#include <cmath>

#include "gtest/gtest.h"

namespace caduceus {
namespace {

TEST(Fp8E4M3, DecodesKnownCodes) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(Fp8E4M3ToFloat(0x80)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);          // exponent 7 = bias
  EXPECT_EQ(Fp8E4M3ToFloat(0xB8), -1.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x7E), 448.0f);        // largest finite
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), 0x1p-6f);       // smallest normal
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), 0x1p-9f);       // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x07), 7 * 0x1p-9f);   // largest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x3C), 1.5f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x77), 240.0f);        // 2^7 * 1.875
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xFF)));
}

TEST(Fp8E4M3, EveryFiniteCodeRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;
    EXPECT_EQ(FloatToFp8E4M3(Fp8E4M3ToFloat(static_cast<uint8_t>(b))), b) << b;
  }
}

TEST(Fp8E4M3, RoundsToNearestTiesToEven) {
  // Between 1.0 (0x38) and 1.125 (0x39): the midpoint goes to the even mantissa (1.0).
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);
  EXPECT_EQ(FloatToFp8E4M3(1.0626f), 0x39);
  // Between 1.125 (0x39) and 1.25 (0x3A): the midpoint goes to 1.25 (mantissa 2, even).
  EXPECT_EQ(FloatToFp8E4M3(1.1875f), 0x3A);
  // 1.9375 is the midpoint of 1.875 (0x3F) and 2.0 (0x40): even is 2.0, the next binade.
  EXPECT_EQ(FloatToFp8E4M3(1.9375f), 0x40);
  // Subnormals: 1.5 * 2^-9 ties to 2 * 2^-9; 0.5 * 2^-9 ties to 0.
  EXPECT_EQ(FloatToFp8E4M3(1.5f * 0x1p-9f), 0x02);
  EXPECT_EQ(FloatToFp8E4M3(0.5f * 0x1p-9f), 0x00);
  EXPECT_EQ(FloatToFp8E4M3(0.51f * 0x1p-9f), 0x01);
  // The largest subnormal rounds up into the smallest normal.
  EXPECT_EQ(FloatToFp8E4M3(7.5f * 0x1p-9f), 0x08);
  EXPECT_EQ(FloatToFp8E4M3(-1.0625f), 0xB8);
}

TEST(Fp8E4M3, SaturatesAndKeepsNaN) {
  EXPECT_EQ(FloatToFp8E4M3(448.0f), 0x7E);
  EXPECT_EQ(FloatToFp8E4M3(460.0f), 0x7E);  // would round to 480, which E4M3 cannot hold
  EXPECT_EQ(FloatToFp8E4M3(1e30f), 0x7E);
  EXPECT_EQ(FloatToFp8E4M3(-INFINITY), 0xFE);
  EXPECT_EQ(FloatToFp8E4M3(NAN), 0x7F);
  EXPECT_EQ(FloatToFp8E4M3(1e-30f), 0x00);
  EXPECT_EQ(FloatToFp8E4M3(-1e-30f), 0x80);
}

TEST(Fp8E4M3, NearestOverADenseSweep) {
  // Every rounded value is a nearest code (the decoded candidates on either side are no closer).
  for (float f = -500.0f; f <= 500.0f; f += 0.37f) {
    const float clamped = std::fmax(-448.0f, std::fmin(448.0f, f));
    const float got = Fp8E4M3ToFloat(FloatToFp8E4M3(f));
    for (int b = 0; b < 256; ++b) {
      const float c = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
      if (std::isnan(c)) continue;
      ASSERT_LE(std::fabs(got - clamped), std::fabs(c - clamped)) << f << " code " << b;
    }
  }
}

}  // namespace
}  // namespace caduceus
