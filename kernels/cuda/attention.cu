// Paged causal grouped-query attention on the GPU.
//
// One thread block per work item (query row, query head), exactly the CPU's unit of work
// (kernels/cpu/attention.cc). The host does not know the number of query rows (query_start lives
// on the device and reading it would need a synchronization), so the grid is a fixed number of
// blocks that stride over items; blocks without an item exit at once. An item's result depends only
// on its own row, its sequence's block table and the cache, never on the grid or the batch, so a
// row gives the same bits alone, in a prefill chunk, or decoded (batch invariance).
//
// Inside an item, keys are visited in tiles of kThreads positions in ascending order:
//   1. scores: warp w takes positions w, w + kWarps, ... of the tile; its lanes split head_dim
//      and combine by butterfly (fixed order);
//   2. online softmax: the running max is raised to the tile max, the accumulator and the running
//      denominator are rescaled by exp(old_max - new_max) (the flash-attention update), so no
//      buffer proportional to the context length is needed;
//   3. values: thread t owns dims t, t + kThreads, ...; it adds weight * v in ascending position
//      order (coalesced loads across threads).
// Not done (see README): splitting one long context across blocks (split-K / flash-decoding),
// sharing K/V loads between the q heads of one GQA group, bf16 KV.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace caduceus::kernels::cuda {
namespace {

using internal::kWarp;

constexpr int kThreads = 128;  // = keys per tile
constexpr int kWarps = kThreads / kWarp;
constexpr int kMaxDimsPerThread = 4;
constexpr int kMaxHeadDim = kThreads * kMaxDimsPerThread;  // 512; Llama-3 uses 128
constexpr int kBlocksPerSm = 8;

struct AttentionParams {
  const float* q;
  int64_t q_row_stride;
  const float* k_cache;
  const float* v_cache;
  float* out;
  const int32_t* query_start;
  const int32_t* positions;
  const int32_t* block_tables;
  int32_t num_seqs;
  int32_t max_blocks_per_seq;
  int32_t q_heads;
  int32_t group;  // q heads per kv head
  int32_t kv_heads;
  int32_t head_dim;
  int32_t block_size;
  float scale;
};

// Sequence owning query row `row`: the last s with query_start[s] <= row (binary search).
__device__ int32_t SequenceOfRow(const int32_t* query_start, int32_t num_seqs, int32_t row) {
  int32_t lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (query_start[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(AttentionParams p) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float weights[kThreads];
  __shared__ float scratch[kWarps];

  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t kv_row = static_cast<int64_t>(p.kv_heads) * p.head_dim;
  const int64_t items = static_cast<int64_t>(p.query_start[p.num_seqs]) * p.q_heads;

  // Heads vary fastest so neighbouring blocks read the same sequence's keys (L2 reuse within a
  // GQA group).
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int32_t row = static_cast<int32_t>(item / p.q_heads);
    const int32_t h = static_cast<int32_t>(item % p.q_heads);
    const int32_t kvh = h / p.group;
    const int32_t seq = SequenceOfRow(p.query_start, p.num_seqs, row);
    const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
    const int32_t context = p.positions[row] + 1;
    const float* qh = p.q + row * p.q_row_stride + static_cast<int64_t>(h) * p.head_dim;
    const float* k_head = p.k_cache + static_cast<int64_t>(kvh) * p.head_dim;
    const float* v_head = p.v_cache + static_cast<int64_t>(kvh) * p.head_dim;

    for (int d = threadIdx.x; d < p.head_dim; d += kThreads) q_s[d] = qh[d];
    __syncthreads();

    float acc[kMaxDimsPerThread] = {};
    float running_max = -INFINITY;
    float denom = 0.0f;
    for (int32_t t0 = 0; t0 < context; t0 += kThreads) {
      const int32_t tile = min(kThreads, context - t0);
      // 1. scores of this tile
      for (int32_t j = warp; j < tile; j += kWarps) {
        const int32_t pos = t0 + j;
        const int64_t slot =
            static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
        const float* kp = k_head + slot * kv_row;
        float dot = 0.0f;
        for (int d = lane; d < p.head_dim; d += kWarp) dot = fmaf(q_s[d], kp[d], dot);
        dot = internal::WarpSum(dot);
        if (lane == 0) weights[j] = dot * p.scale;
      }
      __syncthreads();
      // 2. online softmax update
      const float score = threadIdx.x < tile ? weights[threadIdx.x] : -INFINITY;
      const float new_max = fmaxf(running_max, internal::BlockMax<kThreads>(score, scratch));
      const float e = threadIdx.x < tile ? expf(score - new_max) : 0.0f;
      if (threadIdx.x < tile) weights[threadIdx.x] = e;
      const float rescale = expf(running_max - new_max);  // 0 on the first tile (-inf)
      denom = denom * rescale + internal::BlockSum<kThreads>(e, scratch);  // syncs: weights ready
      running_max = new_max;
      // 3. weighted values
#pragma unroll
      for (int i = 0; i < kMaxDimsPerThread; ++i) acc[i] *= rescale;
      for (int32_t j = 0; j < tile; ++j) {
        const int32_t pos = t0 + j;
        const int64_t slot =
            static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
        const float* vp = v_head + slot * kv_row;
        const float wgt = weights[j];
#pragma unroll
        for (int i = 0; i < kMaxDimsPerThread; ++i) {
          const int d = threadIdx.x + i * kThreads;
          if (d < p.head_dim) acc[i] = fmaf(wgt, vp[d], acc[i]);
        }
      }
      __syncthreads();  // weights are overwritten by the next tile
    }

    float* oh = p.out + (static_cast<int64_t>(row) * p.q_heads + h) * p.head_dim;
    const float inv = 1.0f / denom;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      if (d < p.head_dim) oh[d] = acc[i] * inv;
    }
    // q_s is reloaded for the next item: make sure every thread is done with it.
    __syncthreads();
  }
}

// Enough blocks to fill the device a few times over; cached per device.
unsigned AttentionGrid() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> sm_count[kMaxDevices] = {};
  int device = 0;
  CADUCEUS_CUDA_CHECK(cudaGetDevice(&device));
  int sms = device < kMaxDevices ? sm_count[device].load(std::memory_order_relaxed) : 0;
  if (sms == 0) {
    CADUCEUS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    // Threads racing here all store the same value.
    if (device < kMaxDevices) sm_count[device].store(sms, std::memory_order_relaxed);
  }
  return static_cast<unsigned>(sms * kBlocksPerSm);
}

}  // namespace

void PagedAttention(const float* q, int64_t q_row_stride, int32_t q_heads, PagedKvLayer cache,
                    const AttentionBatch& batch, float scale, float* out, Stream stream) {
  if (batch.num_seqs <= 0 || q_heads <= 0) return;
  if (cache.head_dim > kMaxHeadDim || cache.kv_heads <= 0 || q_heads % cache.kv_heads != 0) {
    std::fprintf(stderr, "PagedAttention: unsupported head_dim %d / heads %d:%d\n", cache.head_dim,
                 q_heads, cache.kv_heads);
    std::abort();
  }
  AttentionParams p{q,
                    q_row_stride,
                    cache.k,
                    cache.v,
                    out,
                    batch.query_start,
                    batch.positions,
                    batch.block_tables,
                    batch.num_seqs,
                    batch.max_blocks_per_seq,
                    q_heads,
                    q_heads / cache.kv_heads,
                    cache.kv_heads,
                    cache.head_dim,
                    cache.block_size,
                    scale};
  PagedAttentionKernel<<<AttentionGrid(), kThreads, 0, internal::StreamOf(stream)>>>(p);
  CADUCEUS_CUDA_CHECK_LAUNCH();
}

}  // namespace caduceus::kernels::cuda
