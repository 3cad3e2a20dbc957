// Memory-bound per-token kernels: embedding gather, RMSNorm (plain and fused with the residual
// add), RoPE, SiLU*mul and the KV-cache scatter (fp32 or bf16 cache). Semantics follow
// kernels/cpu/elementwise.cc; each output row is produced by one thread block with a fixed
// reduction tree, so a row's bits do not depend on how many rows share the launch (batch
// invariance).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace caduceus::kernels::cuda {
namespace {

using internal::Bf16ToF32;
using internal::StreamOf;

constexpr int kRowThreads = 256;  // one block per token row (hidden is 4096..8192 in practice)
constexpr int kFlatThreads = 256;

__global__ void EmbeddingGatherKernel(const bf16* table, int64_t row_begin, int64_t rows,
                                      int32_t hidden, const int32_t* ids, float* out) {
  const int64_t i = blockIdx.x;
  float* dst = out + i * hidden;
  const int64_t row = static_cast<int64_t>(ids[i]) - row_begin;
  if (row < 0 || row >= rows) {  // another rank's shard: the all-reduce fills it in
    for (int32_t j = threadIdx.x; j < hidden; j += blockDim.x) dst[j] = 0.0f;
    return;
  }
  const bf16* src = table + row * hidden;
  for (int32_t j = threadIdx.x; j < hidden; j += blockDim.x) dst[j] = Bf16ToF32(src[j]);
}

// out = x * rsqrt(mean(x^2) + eps) * weight for one row. When `residual` is set, the row is first
// accumulated into it (residual += x) and the updated residual is normalized. Each thread rereads
// only the elements it wrote itself, so the second pass needs no barrier beyond the reduction's.
__global__ void RmsNormKernel(float* residual, const float* x, const bf16* weight, int32_t hidden,
                              float eps, float* out) {
  __shared__ float scratch[kRowThreads / internal::kWarp];
  const int64_t off = static_cast<int64_t>(blockIdx.x) * hidden;
  const float* xr = x + off;
  float* src = residual != nullptr ? residual + off : nullptr;
  float sum = 0.0f;
  for (int32_t j = threadIdx.x; j < hidden; j += kRowThreads) {
    float v = xr[j];
    if (src != nullptr) {
      v += src[j];
      src[j] = v;
    }
    sum = fmaf(v, v, sum);
  }
  const float total = internal::BlockSum<kRowThreads>(sum, scratch);
  // 1/sqrt rather than rsqrtf: rsqrtf is approximate (2 ulp); match the CPU's correctly rounded op.
  const float inv = 1.0f / sqrtf(total / static_cast<float>(hidden) + eps);
  const float* in = src != nullptr ? src : xr;
  float* o = out + off;
  for (int32_t j = threadIdx.x; j < hidden; j += kRowThreads) {
    o[j] = (in[j] * inv) * Bf16ToF32(weight[j]);
  }
}

// One thread per (token, head, pair). cos/sin use the accurate sincosf (full range reduction):
// positions reach 8k+ and inv_freq[0] = 1, so angles are thousands of radians.
__global__ void RopeKernel(float* x, int64_t row_stride, const int32_t* positions, int32_t n,
                           int32_t heads, int32_t head_dim, const float* inv_freq) {
  const int32_t half = head_dim / 2;
  const int64_t total = static_cast<int64_t>(n) * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t d = static_cast<int32_t>(idx % half);
    const int64_t th = idx / half;
    const int32_t h = static_cast<int32_t>(th % heads);
    const int64_t i = th / heads;
    float* head = x + i * row_stride + static_cast<int64_t>(h) * head_dim;
    // Same fp32 product as the CPU (and Hugging Face): freqs = pos * inv_freq.
    const float angle = static_cast<float>(positions[i]) * inv_freq[d];
    float s, c;
    sincosf(angle, &s, &c);
    const float a = head[d];
    const float b = head[d + half];
    // Products rounded separately (no FMA contraction), as the expression is written.
    head[d] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    head[d + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

// Element (i, j) of the output reads gate_up[i, j] and gate_up[i, d + j].
__global__ void SiluMulKernel(const float* gate_up, int32_t d, int64_t total, float* out) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / d, j = idx % d;
    const float g = gate_up[i * 2 * d + j];
    out[idx] = g / (1.0f + expf(-g)) * gate_up[i * 2 * d + d + j];
  }
}

// A cache element from an fp32 value: stored as is, or rounded to bf16 (nearest even).
__device__ __forceinline__ void StoreKv(float* dst, float x) { *dst = x; }
__device__ __forceinline__ void StoreKv(bf16* dst, float x) { *dst = internal::F32ToBf16(x); }

// One block per new token; a k or v row is contiguous in the source and in the cache. `T` is the
// cache's element type (float or bf16).
template <typename T>
__global__ void KvCacheWriteKernel(const float* k, const float* v, int64_t row_stride,
                                   const int32_t* slot_mapping, T* cache_k, T* cache_v,
                                   int64_t row) {
  const int64_t i = blockIdx.x;
  const int64_t slot = slot_mapping[i];
  if (slot < 0) return;  // padding token (no slot): nothing to store
  for (int64_t j = threadIdx.x; j < row; j += blockDim.x) {
    StoreKv(cache_k + slot * row + j, k[i * row_stride + j]);
    StoreKv(cache_v + slot * row + j, v[i * row_stride + j]);
  }
}

}  // namespace

void EmbeddingGather(const bf16* table, int64_t row_begin, int64_t rows, int32_t hidden,
                     const int32_t* ids, int32_t n, float* out, Stream stream) {
  if (n <= 0 || hidden <= 0) return;
  internal::Launch(EmbeddingGatherKernel, n, kRowThreads, StreamOf(stream), table, row_begin, rows,
                   hidden, ids, out);
}

void RmsNorm(const float* x, const bf16* weight, int32_t n, int32_t hidden, float eps, float* out,
             Stream stream) {
  if (n <= 0 || hidden <= 0) return;
  internal::Launch(RmsNormKernel, n, kRowThreads, StreamOf(stream), nullptr, x, weight, hidden, eps,
                   out);
}

void AddRmsNorm(float* residual, const float* x, const bf16* weight, int32_t n, int32_t hidden,
                float eps, float* out, Stream stream) {
  if (n <= 0 || hidden <= 0) return;
  internal::Launch(RmsNormKernel, n, kRowThreads, StreamOf(stream), residual, x, weight, hidden,
                   eps, out);
}

void Rope(float* x, int64_t row_stride, const int32_t* positions, int32_t n, int32_t heads,
          int32_t head_dim, const float* inv_freq, Stream stream) {
  const int64_t total = static_cast<int64_t>(n) * heads * (head_dim / 2);
  if (total <= 0) return;
  internal::Launch(RopeKernel, internal::GridFor(total, kFlatThreads), kFlatThreads,
                   StreamOf(stream), x, row_stride, positions, n, heads, head_dim, inv_freq);
}

void SiluMul(const float* gate_up, int32_t n, int32_t d, float* out, Stream stream) {
  const int64_t total = static_cast<int64_t>(n) * d;
  if (total <= 0) return;
  internal::Launch(SiluMulKernel, internal::GridFor(total, kFlatThreads), kFlatThreads,
                   StreamOf(stream), gate_up, d, total, out);
}

void KvCacheWrite(const float* k, const float* v, int64_t row_stride, const int32_t* slot_mapping,
                  int32_t n, PagedKvLayer cache, Stream stream) {
  const int64_t row = static_cast<int64_t>(cache.kv_heads) * cache.head_dim;
  if (n <= 0 || row <= 0) return;
  switch (cache.dtype) {
    case KvDtype::kF32:
      internal::Launch(KvCacheWriteKernel<float>, n, kRowThreads, StreamOf(stream), k, v,
                       row_stride, slot_mapping, static_cast<float*>(cache.k),
                       static_cast<float*>(cache.v), row);
      break;
    case KvDtype::kBf16:
      internal::Launch(KvCacheWriteKernel<bf16>, n, kRowThreads, StreamOf(stream), k, v, row_stride,
                       slot_mapping, static_cast<bf16*>(cache.k), static_cast<bf16*>(cache.v), row);
      break;
    default:
      std::fprintf(stderr, "KvCacheWrite: unknown KV cache dtype %d\n",
                   static_cast<int>(cache.dtype));
      std::abort();
  }
}

}  // namespace caduceus::kernels::cuda
