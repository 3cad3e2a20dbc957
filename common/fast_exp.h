// A vectorizable exp for the softmax-style loops (sampling over the vocabulary, attention over
// the context), where every argument is x - max <= 0.
#pragma once

#include <bit>
#include <cstdint>

namespace caduceus {

// exp(x) for x <= 0, relative error ~2e-7, exactly 1 at 0 and exactly 0 below -87 (where float
// exp would be denormal). Branch-free so GCC vectorizes it; std::exp would be a scalar libm call
// per element, ~10x slower over a 128k vocabulary or a long attention context.
inline float FastExpNonPositive(float x) {
  const float xc = x < -87.0f ? -87.0f : x;  // also maps -inf
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const int32_t n_int = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  // Cody-Waite split of ln2 keeps r accurate.
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 +
                                          r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  const float scale = std::bit_cast<float>((n_int + 127) << 23);
  return x < -87.0f ? 0.0f : p * scale;
}

}  // namespace caduceus
