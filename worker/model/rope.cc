#include "worker/model/rope.h"

#include <cmath>
#include <numbers>

namespace caduceus::model {

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int half = config.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    double freq = 1.0 / std::pow(config.rope_theta, 2.0 * i / config.head_dim);
    if (config.rope_scaling.has_value()) {
      // Llama-3.1: long wavelengths are slowed down by `factor`, short ones kept, and the band in
      // between interpolated smoothly (Meta's reference implementation, as adopted by HF).
      const RopeScaling& s = *config.rope_scaling;
      const double old_len = s.original_max_position_embeddings;
      const double low_freq_wavelen = old_len / s.low_freq_factor;
      const double high_freq_wavelen = old_len / s.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / freq;
      if (wavelen > low_freq_wavelen) {
        freq = freq / s.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        freq = (1.0 - smooth) * freq / s.factor + smooth * freq;
      }
    }
    inv_freq[i] = static_cast<float>(freq);
  }
  return inv_freq;
}

}  // namespace caduceus::model
