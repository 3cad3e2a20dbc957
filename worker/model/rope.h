// Rotary-embedding frequencies, including the Llama-3.1 "llama3" frequency scaling.
#pragma once

#include <vector>

#include "worker/model/model_config.h"

namespace caduceus::model {

// inv_freq[i] = theta^(-2i/head_dim), i < head_dim/2, adjusted by config.rope_scaling if set.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace caduceus::model
