// Load-time FP8 quantization of bf16 projection matrices (--quantization fp8): one fp32 scale per
// output row, scale = amax(|row|) / 448 (1 for an all-zero row), each weight stored as the E4M3
// nearest to weight / scale (common/fp8.h: ties to even, saturating). Both divisions are fp32, so
// the bytes equal those of tests/reference/quantize_fp8.py (the independent quantizer the tests
// make FP8 checkpoints with) bit for bit.
#pragma once

#include <cstdint>

#include "common/bf16.h"

namespace caduceus::model {

// w: [rows, cols] bf16 -> out: [rows, cols] E4M3 bytes, scale: [rows].
void QuantizeRowsFp8(const bf16* w, int64_t rows, int64_t cols, uint8_t* out, float* scale);

}  // namespace caduceus::model
