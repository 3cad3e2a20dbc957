// FP8 E4M3 ("OCP float8_e4m3fn", PyTorch's torch.float8_e4m3fn, safetensors "F8_E4M3"): 1 sign
// bit, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; 0x7F and 0xFF are NaN, so the
// largest finite magnitude is 448 (0x7E). Exponent field 0 holds the subnormals m/8 * 2^-6.
//
// Weight-only FP8 (docs/architecture.md, "FP8 weights"): a quantized matrix stores one E4M3 byte
// per weight and one fp32 scale per output row; the real weight is Fp8E4M3ToFloat(byte) * scale.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace caduceus {

inline constexpr float kFp8E4M3Max = 448.0f;

// Exact: every E4M3 value is a float (and a bf16). NaN for 0x7F/0xFF.
inline float Fp8E4M3ToFloat(uint8_t v) {
  const uint32_t exponent = (v >> 3) & 0xFu, mantissa = v & 0x7u;
  float magnitude;
  if (exponent == 0xFu && mantissa == 0x7u) {
    magnitude = NAN;
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // m/8 * 2^-6
  } else {
    magnitude = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, static_cast<int>(exponent) - 7);
  }
  return (v & 0x80u) ? -magnitude : magnitude;
}

// Round to nearest, ties to even mantissa, saturating at +-448 (what PyTorch's
// `x.clamp(-448, 448).to(torch.float8_e4m3fn)` stores). NaN -> 0x7F. -0 keeps its sign.
// Bit arithmetic rather than frexp/ldexp: load-time quantization converts every weight of a 70B
// model (common/fp8_test.cc checks it against the nearest code by exhaustive comparison).
inline uint8_t FloatToFp8E4M3(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return 0x7Fu;  // NaN
  float a;
  std::memcpy(&a, &abs_bits, sizeof(a));
  if (a >= kFp8E4M3Max) return sign | 0x7Eu;
  if (a < 0x1p-6f) {
    // Subnormal range: the grid is 2^-9, so the code is round(a * 2^9) (exact scaling; rint
    // rounds ties to even). 8 rounds up to the smallest normal, which is code 0x08 as well.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  }
  // Normal: drop the fp32 mantissa to 3 bits, ties to even (a carry moves into the exponent),
  // then rebias the exponent from 127 to 7.
  const uint32_t rounded = abs_bits + 0x7FFFFu + ((abs_bits >> 20) & 1u);
  const uint32_t code = std::min<uint32_t>((rounded >> 20) - (120u << 3), 0x7Eu);
  return sign | static_cast<uint8_t>(code);
}

}  // namespace caduceus
