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
inline uint8_t FloatToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7Fu;
  const uint8_t sign = std::signbit(f) ? 0x80u : 0x00u;
  const float a = std::fabs(f);
  if (a >= kFp8E4M3Max) return sign | 0x7Eu;
  if (a == 0.0f) return sign;
  // The E4M3 grid around a: spacing 2^(e - 3) for a in [2^e, 2^(e+1)), e >= -6; 2^-9 below 2^-6.
  int e = 0;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): a in [2^(e-1), 2^e)
  const int exponent = std::max(e - 1, -6);
  const float step = std::ldexp(1.0f, exponent - 3);
  // a / step is exact (power-of-two division); rint rounds ties to even (default rounding mode).
  const float units = std::rint(a / step);  // a = units * step, units in [0, 16]
  // units == 16 carries into the next binade, which the encoding below handles (8 + 8 = 16).
  uint32_t code;
  if (exponent == -6 && units < 8.0f) {
    code = static_cast<uint32_t>(units);  // subnormal (or zero)
  } else {
    // units in [8, 16]: value = (units / 8) * 2^exponent.
    int biased = exponent + 7;
    uint32_t u = static_cast<uint32_t>(units);
    if (u == 16) {
      u = 8;
      ++biased;
    }
    code = (static_cast<uint32_t>(biased) << 3) | (u - 8);
  }
  if (code > 0x7Eu) code = 0x7Eu;  // rounding up past 448 saturates (never a NaN code)
  return static_cast<uint8_t>(sign | code);
}

}  // namespace caduceus
