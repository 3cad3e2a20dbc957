// Memory-bound per-token kernels: embedding gather, RMSNorm (plain and fused with the residual
// add), RoPE, SiLU*mul and the KV-cache scatter. Plain loops the compiler vectorizes; every
// reduction (the RMSNorm sum of squares) runs in a fixed order per row.
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/fixed_order_sum.h"

namespace caduceus::kernels::cpu {
namespace {

float SumOfSquares(const float* x, int32_t n) {
  return FixedOrderSum(n, [&](int32_t i) { return x[i] * x[i]; });
}

void NormalizeRow(const float* x, const bf16* weight, int32_t hidden, float eps, float* out) {
  const float inv = 1.0f / std::sqrt(SumOfSquares(x, hidden) / static_cast<float>(hidden) + eps);
  for (int32_t j = 0; j < hidden; ++j) out[j] = (x[j] * inv) * Bf16ToFloat(weight[j]);
}

}  // namespace

void EmbeddingGather(const bf16* table, int64_t row_begin, int64_t rows, int32_t hidden,
                     const int32_t* ids, int32_t n, float* out, Stream) {
#pragma omp parallel for schedule(static) if (n > 8)
  for (int32_t i = 0; i < n; ++i) {
    float* dst = out + static_cast<int64_t>(i) * hidden;
    const int64_t row = static_cast<int64_t>(ids[i]) - row_begin;
    if (row < 0 || row >= rows) {
      std::memset(dst, 0, sizeof(float) * hidden);
      continue;
    }
    const bf16* src = table + row * hidden;
    for (int32_t j = 0; j < hidden; ++j) dst[j] = Bf16ToFloat(src[j]);
  }
}

void RmsNorm(const float* x, const bf16* weight, int32_t n, int32_t hidden, float eps, float* out,
             Stream) {
#pragma omp parallel for schedule(static) if (n > 8)
  for (int32_t i = 0; i < n; ++i) {
    const int64_t off = static_cast<int64_t>(i) * hidden;
    NormalizeRow(x + off, weight, hidden, eps, out + off);
  }
}

void AddRmsNorm(float* residual, const float* x, const bf16* weight, int32_t n, int32_t hidden,
                float eps, float* out, Stream) {
#pragma omp parallel for schedule(static) if (n > 8)
  for (int32_t i = 0; i < n; ++i) {
    const int64_t off = static_cast<int64_t>(i) * hidden;
    float* r = residual + off;
    const float* xi = x + off;
    for (int32_t j = 0; j < hidden; ++j) r[j] += xi[j];
    NormalizeRow(r, weight, hidden, eps, out + off);
  }
}

void Rope(float* x, int64_t row_stride, const int32_t* positions, int32_t n, int32_t heads,
          int32_t head_dim, const float* inv_freq, Stream) {
  const int32_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (n > 8)
  for (int32_t i = 0; i < n; ++i) {
    // cos/sin computed per token in float, as Hugging Face does (freqs = pos * inv_freq in fp32).
    float cos_v[512], sin_v[512];  // head_dim <= 1024 (checked by the model loader)
    for (int32_t d = 0; d < half; ++d) {
      const float angle = static_cast<float>(positions[i]) * inv_freq[d];
      cos_v[d] = std::cos(angle);
      sin_v[d] = std::sin(angle);
    }
    float* row = x + static_cast<int64_t>(i) * row_stride;
    for (int32_t h = 0; h < heads; ++h) {
      float* head = row + static_cast<int64_t>(h) * head_dim;
      for (int32_t d = 0; d < half; ++d) {
        const float a = head[d];
        const float b = head[d + half];
        head[d] = a * cos_v[d] - b * sin_v[d];
        head[d + half] = b * cos_v[d] + a * sin_v[d];
      }
    }
  }
}

void SiluMul(const float* gate_up, int32_t n, int32_t d, float* out, Stream) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(n) * d > 65536)
  for (int32_t i = 0; i < n; ++i) {
    const float* gate = gate_up + static_cast<int64_t>(i) * 2 * d;
    const float* up = gate + d;
    float* o = out + static_cast<int64_t>(i) * d;
    for (int32_t j = 0; j < d; ++j) {
      const float g = gate[j];
      o[j] = g / (1.0f + std::exp(-g)) * up[j];
    }
  }
}

void KvCacheWrite(const float* k, const float* v, int64_t row_stride, const int32_t* slot_mapping,
                  int32_t n, PagedKvLayer cache, Stream) {
  const int64_t row = static_cast<int64_t>(cache.kv_heads) * cache.head_dim;
  for (int32_t i = 0; i < n; ++i) {
    const int64_t slot = slot_mapping[i];
    if (cache.dtype == KvDtype::kBf16) {
      bf16* ck = static_cast<bf16*>(cache.k) + slot * row;
      bf16* cv = static_cast<bf16*>(cache.v) + slot * row;
      for (int64_t j = 0; j < row; ++j) {
        ck[j] = FloatToBf16(k[i * row_stride + j]);
        cv[j] = FloatToBf16(v[i * row_stride + j]);
      }
    } else {
      std::memcpy(static_cast<float*>(cache.k) + slot * row, k + i * row_stride,
                  sizeof(float) * row);
      std::memcpy(static_cast<float*>(cache.v) + slot * row, v + i * row_stride,
                  sizeof(float) * row);
    }
  }
}

}  // namespace caduceus::kernels::cpu
