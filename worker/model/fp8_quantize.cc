#include "worker/model/fp8_quantize.h"

#include <algorithm>
#include <cmath>

#include "common/fp8.h"

namespace caduceus::model {

void QuantizeRowsFp8(const bf16* w, int64_t rows, int64_t cols, uint8_t* out, float* scale) {
  // A 70B model has 70e9 weights to convert: rows in parallel.
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; ++r) {
    const bf16* row = w + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(Bf16ToFloat(row[c])));
    const float s = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
    scale[r] = s;
    uint8_t* dst = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] = FloatToFp8E4M3(Bf16ToFloat(row[c]) / s);
  }
}

}  // namespace caduceus::model
