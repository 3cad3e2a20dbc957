// AVX-512 Linear: y[m, n] = x[m, :] . w[n, :] with bf16 weights widened to fp32 in registers.
//
// Each output element owns one 16-lane accumulator: lane l sums x[k] * w[k] for k = l (mod 16)
// in ascending k with FMA, and the 16 lanes are then summed by one fixed reduction. That order
// depends only on k, so an element gets the same bits whether it is computed in a 4x4 tile of a
// 512-token prefill or alone in a batch-1 decode (batch invariance), and whatever thread runs it.
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/linear_internal.h"

namespace caduceus::kernels::cpu::internal {
namespace {

inline __m512 LoadBf16(const bf16* p, __mmask16 mask) {
  __m256i raw = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// Fixed-order horizontal sum (the same shuffle tree every time).
inline float ReduceAdd(__m512 v) {
  __m256 lo = _mm512_castps512_ps256(v);
  __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

// MT tokens x NT weight rows, full k.
template <int MT, int NT>
inline void MicroKernel(const float* x, int32_t ldx, int32_t k, const bf16* w, int32_t ldw,
                        float* y, int32_t ldy) {
  __m512 acc[MT][NT];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int32_t kk = 0; kk < k; kk += 16) {
    const int32_t rem = k - kk;
    const __mmask16 mask = rem >= 16 ? static_cast<__mmask16>(0xffff)
                                     : static_cast<__mmask16>((1u << rem) - 1u);
    __m512 wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = LoadBf16(w + static_cast<int64_t>(j) * ldw + kk, mask);
    for (int i = 0; i < MT; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + static_cast<int64_t>(i) * ldx + kk);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) y[static_cast<int64_t>(i) * ldy + j] = ReduceAdd(acc[i][j]);
}

template <int NT>
inline void RowTile(const float* x, int32_t mt, int32_t ldx, int32_t k, const bf16* w,
                    int32_t ldw, float* y, int32_t ldy) {
  switch (mt) {
    case 4: MicroKernel<4, NT>(x, ldx, k, w, ldw, y, ldy); break;
    case 3: MicroKernel<3, NT>(x, ldx, k, w, ldw, y, ldy); break;
    case 2: MicroKernel<2, NT>(x, ldx, k, w, ldw, y, ldy); break;
    default: MicroKernel<1, NT>(x, ldx, k, w, ldw, y, ldy); break;
  }
}

}  // namespace

void LinearAvx512(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y) {
  const int32_t row_tiles = (n + kRowTile - 1) / kRowTile;
  for (int32_t m0 = 0; m0 < m; m0 += kTokenBlock) {
    const int32_t m1 = std::min(m, m0 + kTokenBlock);
#pragma omp parallel for schedule(static)
    for (int32_t t = 0; t < row_tiles; ++t) {
      const int32_t n0 = t * kRowTile;
      const int32_t nt = std::min(kRowTile, n - n0);
      const bf16* wt = w + static_cast<int64_t>(n0) * k;
      for (int32_t i = m0; i < m1; i += kTokenTile) {
        const int32_t mt = std::min(kTokenTile, m1 - i);
        const float* xt = x + static_cast<int64_t>(i) * k;
        float* yt = y + static_cast<int64_t>(i) * n + n0;
        switch (nt) {
          case 4: RowTile<4>(xt, mt, k, k, wt, k, yt, n); break;
          case 3: RowTile<3>(xt, mt, k, k, wt, k, yt, n); break;
          case 2: RowTile<2>(xt, mt, k, k, wt, k, yt, n); break;
          default: RowTile<1>(xt, mt, k, k, wt, k, yt, n); break;
        }
      }
    }
  }
}

}  // namespace caduceus::kernels::cpu::internal
