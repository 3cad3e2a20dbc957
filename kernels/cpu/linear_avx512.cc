// AVX-512 Linear: y[m, n] = x[m, :] . w[n, :] with bf16 weights widened to fp32 in registers.
//
// Widening: 32 bf16 weights are loaded as one 512-bit integer vector; a 16-bit left shift turns
// the even elements into fp32 and a mask of the high halves turns the odd elements into fp32
// (one cheap instruction each, no cross-lane shuffle). The activations are permuted once per call
// into the matching even/odd order, so lane l of the accumulator sums k = 32b + 2l, then
// 32b + 2l + 1, for b ascending.
//
// Each output element owns one 16-lane accumulator and the 16 lanes are summed by one fixed
// tree. That order depends only on k, so an element gets the same bits whether it is computed in
// a 4x4 tile of a 512-token prefill, in an 8-row tile of a batch-1 decode, or by any thread
// (batch invariance).
//
// FP8 weights (LinearFp8) run the same micro-kernels: 32 E4M3 bytes are loaded as 16 pairs, each
// byte moved into the bit positions of an IEEE half (sign to bit 15, exponent and mantissa to
// bits 13..7) and widened by vcvtph2ps. That half is the E4M3 value times 2^-8 exactly, subnormals
// included (the half's exponent bias is 8 more than E4M3's), in the same even/odd
// lane order as the bf16 path; the 2^8 goes into the row's scale after the fixed-order sum.
#include <immintrin.h>

// GCC 12's AVX-512 headers build some intrinsics from deliberately undefined vectors
// (_mm512_undefined_*), which -Wmaybe-uninitialized reports as false positives in this file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>
#include <vector>

#include "kernels/cpu/linear_internal.h"

namespace caduceus::kernels::cpu::internal {
namespace {

constexpr int32_t kChunk = 32;  // k values per step: one 512-bit load of bf16 weights

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

// Activations in even/odd order per 32-chunk, zero-padded to a multiple of 32.
void PermuteActivations(const float* x, int32_t m, int32_t k, int32_t k_pad, float* xp) {
  for (int32_t i = 0; i < m; ++i) {
    const float* src = x + static_cast<int64_t>(i) * k;
    float* dst = xp + static_cast<int64_t>(i) * k_pad;
    for (int32_t b = 0; b < k_pad; b += kChunk) {
      for (int32_t l = 0; l < kChunk / 2; ++l) {
        const int32_t even = b + 2 * l, odd = even + 1;
        dst[b + l] = even < k ? src[even] : 0.0f;
        dst[b + kChunk / 2 + l] = odd < k ? src[odd] : 0.0f;
      }
    }
  }
}

// MT tokens x NT weight rows over the whole (padded) reduction.
// Software prefetch distance along each weight row. Decode streams 8 rows per core at once,
// more than the hardware prefetcher keeps ahead of; 512 bytes ahead measured 8% faster per step
// than none on the small preset (alternating A/B runs, docs/performance.md).
constexpr int kPrefetchBytes = 512;

// Widens the 32 weights of one chunk row to fp32 in the even/odd lane order. kTail: the chunk
// is the last, partial one, read with a masked load (zeros past k). Full chunks use plain loads:
// the masked load on every chunk cost about 10% of decode bandwidth on the CI machine (AMD EPYC,
// docs/performance.md).
template <bool kTail>
inline void WidenChunk(const bf16* row, __mmask32 mask, __m512& even, __m512& odd) {
  __m512i raw;
  if constexpr (kTail) {
    raw = _mm512_maskz_loadu_epi16(mask, row);
  } else {
    _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes, _MM_HINT_T0);
    raw = _mm512_loadu_si512(row);
  }
  even = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))));
}

// E4M3 bytes -> the IEEE half bits of (value * 2^-8): sign to bit 15, exponent|mantissa
// (7 bits) to bits 13..7, bit 14 clear. Exact for every finite E4M3 value, subnormals included (a
// half subnormal is m/8 * 2^-14 = E4M3's m/8 * 2^-6 * 2^-8). `high` holds the byte in bits 15..8
// of each 16-bit lane, whatever is below: its sign is already in place, its 7 other bits move
// down by one. One bit-select (vpternlogd: bit 15 from `high`, the rest from `high >> 1`) and
// one mask.
inline __m256i Fp8HighByteAsHalfBits(__m256i high) {
  const __m256i sign = _mm256_set1_epi16(static_cast<int16_t>(0x8000));
  // ternarylogic 0xE4 = C ? A : B, bit by bit, with A = high, B = high >> 1, C = sign.
  const __m256i merged = _mm256_ternarylogic_epi32(high, _mm256_srli_epi16(high, 1), sign, 0xE4);
  return _mm256_and_si256(merged, _mm256_set1_epi16(static_cast<int16_t>(0xBF80)));
}

template <bool kTail>
inline void WidenChunk(const uint8_t* row, __mmask32 mask, __m512& even, __m512& odd) {
  __m256i raw;  // 16 pairs: byte 2l in the low half of 16-bit lane l, byte 2l + 1 in the high half
  if constexpr (kTail) {
    raw = _mm256_maskz_loadu_epi8(mask, row);
  } else {
    _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes / 2, _MM_HINT_T0);
    raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
  }
  even = _mm512_cvtph_ps(Fp8HighByteAsHalfBits(_mm256_slli_epi16(raw, 8)));
  odd = _mm512_cvtph_ps(Fp8HighByteAsHalfBits(raw));
}

// One 32-value chunk of the reduction for MT tokens x NT weight rows.
template <int MT, int NT, bool kTail, typename W>
inline void AccumulateChunk(const float* xp, int32_t ldx, int32_t kk, __mmask32 mask, const W* w,
                            int32_t ldw, __m512 (&acc)[MT][NT]) {
  __m512 w_even[NT], w_odd[NT];
  for (int j = 0; j < NT; ++j) {
    WidenChunk<kTail>(w + static_cast<int64_t>(j) * ldw + kk, mask, w_even[j], w_odd[j]);
  }
  for (int i = 0; i < MT; ++i) {
    const float* xi = xp + static_cast<int64_t>(i) * ldx + kk;
    const __m512 x_even = _mm512_loadu_ps(xi);
    const __m512 x_odd = _mm512_loadu_ps(xi + kChunk / 2);
    for (int j = 0; j < NT; ++j) {
      acc[i][j] = _mm512_fmadd_ps(x_even, w_even[j], acc[i][j]);
      acc[i][j] = _mm512_fmadd_ps(x_odd, w_odd[j], acc[i][j]);
    }
  }
}

template <int MT, int NT, typename W>
inline void MicroKernel(const float* xp, int32_t ldx, int32_t k, const W* w, int32_t ldw,
                        float* y, int32_t ldy) {
  __m512 acc[MT][NT];
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  const int32_t k_full = k / kChunk * kChunk;
  for (int32_t kk = 0; kk < k_full; kk += kChunk) {
    AccumulateChunk<MT, NT, false>(xp, ldx, kk, 0, w, ldw, acc);
  }
  if (k_full < k) {
    const __mmask32 tail = static_cast<__mmask32>((1u << (k - k_full)) - 1u);
    AccumulateChunk<MT, NT, true>(xp, ldx, k_full, tail, w, ldw, acc);
  }
  for (int i = 0; i < MT; ++i)
    for (int j = 0; j < NT; ++j) y[static_cast<int64_t>(i) * ldy + j] = ReduceAdd(acc[i][j]);
}

template <int NT, typename W>
inline void RowTile(const float* xp, int32_t mt, int32_t ldx, int32_t k, const W* w,
                    int32_t ldw, float* y, int32_t ldy) {
  switch (mt) {
    case 4: MicroKernel<4, NT>(xp, ldx, k, w, ldw, y, ldy); break;
    case 3: MicroKernel<3, NT>(xp, ldx, k, w, ldw, y, ldy); break;
    case 2: MicroKernel<2, NT>(xp, ldx, k, w, ldw, y, ldy); break;
    default: MicroKernel<1, NT>(xp, ldx, k, w, ldw, y, ldy); break;
  }
}

// Weight rows per tile when there is a single token (decode at batch 1).
constexpr int32_t kSingleTokenRows = 8;

// One output tile: mt tokens x nt weight rows (nt <= 4; or kSingleTokenRows with mt == 1), written to y with row stride ldy. Used by Linear and LinearArgmax alike, so both
// compute every element with the same micro-kernel (and the same bits).
template <typename W>
inline void ComputeTile(const float* xt, int32_t mt, int32_t ldx, int32_t k, const W* wt,
                        int32_t nt, float* y, int32_t ldy) {
  switch (nt) {
    case kSingleTokenRows: MicroKernel<1, kSingleTokenRows>(xt, ldx, k, wt, k, y, ldy); break;
    case 4: RowTile<4>(xt, mt, ldx, k, wt, k, y, ldy); break;
    case 3: RowTile<3>(xt, mt, ldx, k, wt, k, y, ldy); break;
    case 2: RowTile<2>(xt, mt, ldx, k, wt, k, y, ldy); break;
    default:  // 1, or the partial last tile of a single token (5-7 rows)
      for (int32_t j = 0; j < nt; ++j) {
        RowTile<1>(xt, mt, ldx, k, wt + static_cast<int64_t>(j) * k, k, y + j, ldy);
      }
      break;
  }
}

// Decode (a single token): 8 weight rows per tile keeps more independent memory streams and
// accumulator chains in flight.
template <typename W>
void LinearSingleToken(const float* xp, int32_t k_pad, int32_t k, const W* w, int32_t n,
                       float* y) {
  const int32_t tiles = (n + kSingleTokenRows - 1) / kSingleTokenRows;
#pragma omp parallel for schedule(dynamic, DynamicChunk(tiles))
  for (int32_t t = 0; t < tiles; ++t) {
    const int32_t n0 = t * kSingleTokenRows;
    ComputeTile(xp, 1, k_pad, k, w + static_cast<int64_t>(n0) * k,
                std::min(kSingleTokenRows, n - n0), y + n0, n);
  }
}

// Folds `count` logits of one token (columns n0, n0 + 1, ...) into its running argmax. A vector
// compare first rejects the common case, where none reaches the best so far (an ordered compare:
// NaN never passes); a scalar Consider per logit made the argmax kernel 10% slower than Linear.
inline void FoldRow(const float* v, int32_t count, int32_t n0, RowArgmax& best) {
  if (count == 4) {
    if (_mm_movemask_ps(_mm_cmp_ps(_mm_loadu_ps(v), _mm_set1_ps(best.value), _CMP_GE_OQ)) == 0) {
      return;
    }
  } else if (count == 8) {
    const __m256 bar = _mm256_set1_ps(best.value);
    if (_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v), bar, _CMP_GE_OQ)) == 0) return;
  }
  for (int32_t b = 0; b < count; ++b) best.Consider(v[b], n0 + b);
}

// Permuted activations of the current call, per thread (Linear runs from any serving thread).
const float* Permute(const float* x, int32_t m, int32_t k, int32_t k_pad) {
  thread_local std::vector<float> permuted;
  permuted.resize(static_cast<size_t>(m) * k_pad);
  PermuteActivations(x, m, k, k_pad, permuted.data());
  return permuted.data();
}

}  // namespace

void LinearArgmaxAvx512(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n,
                        int32_t* index, float* value) {
  const int32_t k_pad = (k + kChunk - 1) / kChunk * kChunk;
  const float* xp = Permute(x, m, k, k_pad);
  // One token: 8 weight rows per tile, as LinearSingleToken; otherwise the 4x4 tiles of Linear.
  // The tile shape never changes an element's bits (the reduction order depends only on k).
  const int32_t row_tile = m == 1 ? kSingleTokenRows : kRowTile;
  const int32_t row_tiles = (n + row_tile - 1) / row_tile;
  for (int32_t m0 = 0; m0 < m; m0 += kTokenBlock) {
    const int32_t m1 = std::min(m, m0 + kTokenBlock);
    std::vector<RowArgmax> best(m1 - m0);
#pragma omp parallel
    {
      // Each thread folds its tiles into its own maxima, merged once at the end; the merge rule
      // (largest value, then lowest index) makes the result independent of who computed what.
      std::vector<RowArgmax> mine(m1 - m0);
      float tile[std::max(kTokenTile * kRowTile, kSingleTokenRows)];
#pragma omp for schedule(dynamic, DynamicChunk(row_tiles)) nowait
      for (int32_t t = 0; t < row_tiles; ++t) {
        const int32_t n0 = t * row_tile;
        const int32_t nt = std::min(row_tile, n - n0);
        const bf16* wt = w + static_cast<int64_t>(n0) * k;
        for (int32_t i = m0; i < m1; i += kTokenTile) {
          const int32_t mt = std::min(kTokenTile, m1 - i);
          ComputeTile(xp + static_cast<int64_t>(i) * k_pad, mt, k_pad, k, wt, nt, tile, nt);
          for (int32_t a = 0; a < mt; ++a) FoldRow(tile + a * nt, nt, n0, mine[i - m0 + a]);
        }
      }
#pragma omp critical(caduceus_linear_argmax)
      for (int32_t r = 0; r < m1 - m0; ++r) best[r].Merge(mine[r]);
    }
    for (int32_t r = 0; r < m1 - m0; ++r) {
      index[m0 + r] = best[r].index;
      value[m0 + r] = best[r].value;
    }
  }
}

namespace {

// Multiplies the mt x nt tile at y (row stride ldy) by its rows' FP8 scales (times the 2^8 the
// half widening took out; an exact power of two, so one rounding per element).
inline void ScaleTile(float* y, int32_t mt, int32_t nt, int32_t ldy, const float* scale) {
  for (int32_t i = 0; i < mt; ++i) {
    for (int32_t j = 0; j < nt; ++j) y[static_cast<int64_t>(i) * ldy + j] *= 256.0f * scale[j];
  }
}

// Linear and LinearFp8 (scale non-null for FP8 weights).
template <typename W>
void LinearTiles(const float* x, int32_t m, int32_t k, const W* w, const float* scale, int32_t n,
                 float* y) {
  const int32_t k_pad = (k + kChunk - 1) / kChunk * kChunk;
  const float* xp = Permute(x, m, k, k_pad);
  if (m == 1) {
    LinearSingleToken(xp, k_pad, k, w, n, y);
    if (scale != nullptr) ScaleTile(y, 1, n, n, scale);
    return;
  }
  const int32_t row_tiles = (n + kRowTile - 1) / kRowTile;
  for (int32_t m0 = 0; m0 < m; m0 += kTokenBlock) {
    const int32_t m1 = std::min(m, m0 + kTokenBlock);
#pragma omp parallel for schedule(dynamic, DynamicChunk(row_tiles))
    for (int32_t t = 0; t < row_tiles; ++t) {
      const int32_t n0 = t * kRowTile;
      const int32_t nt = std::min(kRowTile, n - n0);
      const W* wt = w + static_cast<int64_t>(n0) * k;
      for (int32_t i = m0; i < m1; i += kTokenTile) {
        const int32_t mt = std::min(kTokenTile, m1 - i);
        float* yt = y + static_cast<int64_t>(i) * n + n0;
        ComputeTile(xp + static_cast<int64_t>(i) * k_pad, mt, k_pad, k, wt, nt, yt, n);
        if (scale != nullptr) ScaleTile(yt, mt, nt, n, scale + n0);
      }
    }
  }
}

}  // namespace

void LinearAvx512(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y) {
  LinearTiles(x, m, k, w, nullptr, n, y);
}

void LinearFp8Avx512(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
                     int32_t n, float* y) {
  LinearTiles(x, m, k, w, scale, n, y);
}

}  // namespace caduceus::kernels::cpu::internal
