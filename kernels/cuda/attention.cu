// Paged causal grouped-query attention on the GPU, with split-K ("flash-decoding") for long
// contexts in small batches.
//
// Work item = (query row, query head), the CPU's unit of work (kernels/cpu/attention.cc) split by
// head. A row's context [0, positions[row]] is cut into partitions of kPartition positions (a
// fixed size, independent of the batch). Each partition is attended on its own, keys in tiles of
// kThreads positions in ascending order:
//   1. scores: warp w takes positions w, w + kWarps, ... of the tile; its lanes split head_dim
//      and combine by butterfly (fixed order);
//   2. online softmax: the running max is raised to the tile max, the accumulator and the running
//      denominator are rescaled by exp(old_max - new_max) (the flash-attention update), so no
//      buffer proportional to the context length is needed;
//   3. values: thread t owns dims t, t + kThreads, ...; it adds weight * v in ascending position
//      order (coalesced loads across threads).
// giving a partial result (m = max score, l = sum exp(score - m), acc = sum exp(score - m) * v).
// The partials of a row are then merged in ascending partition order by MergeInto (one function,
// the only place partials are combined) and the output is acc / l.
//
// Two paths, chosen by the host per call, compute the same partials and merge them the same way,
// so a row gives the same bits on either:
//   - one block per item (the default): the block attends its partitions one after the other and
//     merges each into a running result in registers. The host does not know the number of query
//     rows unless AttentionBatch::num_tokens says it (query_start lives on the device and reading
//     it would need a synchronization), so the grid is a fixed number of blocks striding over
//     items; blocks without an item exit at once.
//   - split (num_tokens known and num_tokens * q_heads < kSplitBelowItemsPerSm * SMs, e.g. a
//     long-context decode at batch 1, which would leave most SMs idle): one block per
//     (row, partition, head) writes its partial to a workspace, then MergePartitionsKernel (one
//     block per item) merges them. The grid covers the host's upper bound of partitions per row,
//     ceil(max_blocks_per_seq * block_size / kPartition); blocks past a row's real context exit.
// Both paths run the partitions in the same kernel (PagedAttentionKernel, a runtime switch), and
// every floating-point operation that touches a partial or a merge is an explicit intrinsic
// (fmaf, __fmul_rn, __frcp_rn) or expf/fmaxf, so no compiler contraction can differ between the
// kernels; the scalar merge step is one __noinline__ function called by both. An item's
// result therefore depends only on its own row, its sequence's block table and the cache, never on
// the grid, the path or the batch: a row gives the same bits alone, in a prefill chunk, or decoded
// (batch invariance).
//
// KV element type: the cache holds fp32 or bf16 (PagedKvLayer::dtype). PagedAttentionKernel is a
// template on the element type, chosen by the host per call (LaunchPartitions); LoadKv widens an
// element to fp32 at the load (exact for bf16: its bits are the float's high half), so every
// operation after a load is the same fp32 code for either type. Both paths of one dtype run the
// same instance, and MergePartitionsKernel never reads the cache, so the bits stay identical
// between the paths for each dtype.
//
// Split workspace: per stream (per host thread on the default streams), grown on demand
// (stream-ordered), the same internal::StreamWorkspace as Linear's (stream_workspace.cuh). An
// event recorded after each split call makes a call on a different stream wait for the previous
// one, so a shared workspace never races. A CUDA graph that captured a split call keeps the
// workspace pointer: it is valid until a later call on the same stream grows the workspace.
// Not done (see README): sharing K/V loads between the q heads of one GQA group.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/stream_workspace.cuh"

namespace caduceus::kernels::cuda {
namespace {

using internal::kWarp;

constexpr int kThreads = 128;  // = keys per tile
constexpr int kWarps = kThreads / kWarp;
constexpr int kMaxDimsPerThread = 4;
constexpr int kMaxHeadDim = kThreads * kMaxDimsPerThread;  // 512; Llama-3 uses 128
constexpr int kBlocksPerSm = 8;
// Positions per partition: the online softmax restarts here, on every path and in every batch.
constexpr int32_t kPartition = 4 * kThreads;
static_assert(kPartition % kThreads == 0, "a partition is a whole number of tiles");
// Split when there are fewer (row, head) items than this many per SM.
constexpr int64_t kSplitBelowItemsPerSm = 2;
// Never grow the split workspace past this; larger calls take the one-block-per-item path (same
// bits, less parallel).
constexpr int64_t kMaxWorkspaceBytes = int64_t{256} << 20;

struct AttentionParams {
  const float* q;
  int64_t q_row_stride;
  const void* k_cache;  // elements of the kernel's KvT (float or bf16)
  const void* v_cache;
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
  // Split path only (max_parts == 0: one block per item, no workspace). Partial of
  // (row, part, head) at index w = (row * max_parts + part) * q_heads + head:
  float* part_stats;   // [w][2]: max, denominator
  float* part_acc;     // [w][head_dim]
  int32_t max_parts;   // partitions per row the split grid covers (host bound)
  int32_t split_rows;  // query rows the workspace holds (AttentionBatch::num_tokens)
};

// One cache element widened to fp32 (exact). The only place a kernel reads the cache.
__device__ __forceinline__ float LoadKv(const float* p) { return *p; }
__device__ __forceinline__ float LoadKv(const bf16* p) { return internal::Bf16ToF32(*p); }

// A partition's (or a merged run of partitions') softmax state as one thread holds it. max and
// denom are the same in every thread of the block; acc[i] is dim threadIdx.x + i * kThreads.
struct Partial {
  float max;
  float denom;
  float acc[kMaxDimsPerThread];
};

struct MergeFactors {
  float max, denom, run_scale, part_scale;
};

// The scalar half of merging `part` into `run`. Not inlined: both kernels call the same compiled
// code (expf included), so the factors cannot differ between the paths.
__device__ __noinline__ MergeFactors MergeFactorsOf(float run_max, float run_denom, float part_max,
                                                    float part_denom) {
  const float m = fmaxf(run_max, part_max);
  const float run_scale = expf(run_max - m);  // both maxima are finite: partitions are never empty
  const float part_scale = expf(part_max - m);
  return {m, fmaf(run_denom, run_scale, __fmul_rn(part_denom, part_scale)), run_scale, part_scale};
}

// run <- run (+) part, where part covers the positions right after run's. The one merge of both
// paths; called in ascending partition order, starting from run = partition 0.
__device__ __forceinline__ void MergeInto(Partial& run, const Partial& part) {
  const MergeFactors f = MergeFactorsOf(run.max, run.denom, part.max, part.denom);
  run.max = f.max;
  run.denom = f.denom;
#pragma unroll
  for (int i = 0; i < kMaxDimsPerThread; ++i) {
    run.acc[i] = fmaf(run.acc[i], f.run_scale, __fmul_rn(part.acc[i], f.part_scale));
  }
}

// out[d] = acc[d] / denom for this thread's dims.
__device__ __forceinline__ void WriteOutput(const Partial& run, int32_t head_dim, float* out) {
  const float inv = __frcp_rn(run.denom);
#pragma unroll
  for (int i = 0; i < kMaxDimsPerThread; ++i) {
    const int d = threadIdx.x + i * kThreads;
    if (d < head_dim) out[d] = __fmul_rn(run.acc[i], inv);
  }
}

__device__ __forceinline__ int32_t NumPartitions(int32_t context) {
  return (context + kPartition - 1) / kPartition;
}

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

// Attends positions [begin, end) (1 <= end - begin <= kPartition) from a fresh softmax state.
// Block-wide: every thread calls it with the same arguments (it has barriers) and gets the same
// max and denom. q_s holds the query head; weights and scratch are free on entry and on return.
// KvT: the cache's element type (float or bf16), widened by LoadKv; the arithmetic is the same.
template <typename KvT>
__device__ __forceinline__ Partial AttendPartition(const AttentionParams& p, const float* q_s,
                                                   float* weights, float* scratch,
                                                   const int32_t* table, const KvT* k_head,
                                                   const KvT* v_head, int64_t kv_row, int32_t begin,
                                                   int32_t end) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  Partial r{-INFINITY, 0.0f, {}};
  for (int32_t t0 = begin; t0 < end; t0 += kThreads) {
    const int32_t tile = min(kThreads, end - t0);
    // 1. scores of this tile
    for (int32_t j = warp; j < tile; j += kWarps) {
      const int32_t pos = t0 + j;
      const int64_t slot =
          static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
      const KvT* kp = k_head + slot * kv_row;
      float dot = 0.0f;
      for (int d = lane; d < p.head_dim; d += kWarp) dot = fmaf(q_s[d], LoadKv(kp + d), dot);
      dot = internal::WarpSum(dot);
      if (lane == 0) weights[j] = __fmul_rn(dot, p.scale);
    }
    __syncthreads();
    // 2. online softmax update
    const float score = threadIdx.x < tile ? weights[threadIdx.x] : -INFINITY;
    const float new_max = fmaxf(r.max, internal::BlockMax<kThreads>(score, scratch));
    const float e = threadIdx.x < tile ? expf(score - new_max) : 0.0f;
    if (threadIdx.x < tile) weights[threadIdx.x] = e;  // each thread rewrites only its own entry
    const float rescale = expf(r.max - new_max);       // 0 on the first tile (-inf)
    r.denom = fmaf(r.denom, rescale, internal::BlockSum<kThreads>(e, scratch));  // syncs: weights
    r.max = new_max;                                                             // are ready
    // 3. weighted values
#pragma unroll
    for (int i = 0; i < kMaxDimsPerThread; ++i) r.acc[i] = __fmul_rn(r.acc[i], rescale);
    for (int32_t j = 0; j < tile; ++j) {
      const int32_t pos = t0 + j;
      const int64_t slot =
          static_cast<int64_t>(table[pos / p.block_size]) * p.block_size + pos % p.block_size;
      const KvT* vp = v_head + slot * kv_row;
      const float wgt = weights[j];
#pragma unroll
      for (int i = 0; i < kMaxDimsPerThread; ++i) {
        const int d = threadIdx.x + i * kThreads;
        if (d < p.head_dim) r.acc[i] = fmaf(wgt, LoadKv(vp + d), r.acc[i]);
      }
    }
    __syncthreads();  // weights are overwritten by the next tile (or partition)
  }
  return r;
}

// Both paths (p.max_parts == 0: one block per item, merging in registers; > 0: one block per
// (row, partition, head), writing the partial to the workspace). One kernel, so a partition's
// partial comes from the same code on either path. KvT: the cache's element type (float or bf16).
template <typename KvT>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(AttentionParams p) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float weights[kThreads];
  __shared__ float scratch[kWarps];

  const bool split = p.max_parts > 0;
  const int64_t kv_row = static_cast<int64_t>(p.kv_heads) * p.head_dim;
  int64_t rows = p.query_start[p.num_seqs];
  if (split) rows = min(rows, static_cast<int64_t>(p.split_rows));  // the workspace's rows
  const int32_t slots_per_row = split ? p.max_parts : 1;
  const int64_t items = rows * slots_per_row * p.q_heads;

  // item = (row * slots_per_row + slot) * q_heads + head, which is also the partial's workspace
  // index on the split path. Heads vary fastest so neighbouring blocks read the same keys (L2
  // reuse within a GQA group). Everything that decides whether a block works on an item or
  // leaves it is uniform across the block, so every thread reaches every barrier.
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int32_t h = static_cast<int32_t>(item % p.q_heads);
    const int64_t row_slot = item / p.q_heads;
    const int32_t slot = static_cast<int32_t>(row_slot % slots_per_row);
    const int32_t row = static_cast<int32_t>(row_slot / slots_per_row);
    const int32_t context = p.positions[row] + 1;
    // The host bound covers every row of a consistent batch; clamping keeps a bad one in bounds.
    const int32_t num_parts =
        split ? min(NumPartitions(context), p.max_parts) : NumPartitions(context);
    if (slot >= num_parts) continue;  // past this row's context (split path only)
    const int32_t first = split ? slot : 0;
    const int32_t last = split ? slot + 1 : num_parts;

    const int32_t kvh = h / p.group;
    const int32_t seq = SequenceOfRow(p.query_start, p.num_seqs, row);
    const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
    const float* qh = p.q + row * p.q_row_stride + static_cast<int64_t>(h) * p.head_dim;
    const int64_t head_offset = static_cast<int64_t>(kvh) * p.head_dim;
    const KvT* k_head = static_cast<const KvT*>(p.k_cache) + head_offset;
    const KvT* v_head = static_cast<const KvT*>(p.v_cache) + head_offset;

    for (int d = threadIdx.x; d < p.head_dim; d += kThreads) q_s[d] = qh[d];
    __syncthreads();

    Partial run{};
    for (int32_t part = first; part < last; ++part) {
      const int32_t begin = part * kPartition;
      const Partial x = AttendPartition(p, q_s, weights, scratch, table, k_head, v_head, kv_row,
                                        begin, min(context, begin + kPartition));
      if (part == first) {
        run = x;
      } else {
        MergeInto(run, x);
      }
    }

    if (split) {
      if (threadIdx.x == 0) {
        p.part_stats[2 * item] = run.max;
        p.part_stats[2 * item + 1] = run.denom;
      }
      float* dst = p.part_acc + item * p.head_dim;
#pragma unroll
      for (int i = 0; i < kMaxDimsPerThread; ++i) {
        const int d = threadIdx.x + i * kThreads;
        if (d < p.head_dim) dst[d] = run.acc[i];
      }
    } else {
      WriteOutput(run, p.head_dim,
                  p.out + (static_cast<int64_t>(row) * p.q_heads + h) * p.head_dim);
    }
    // q_s is reloaded for the next item: make sure every thread is done with it.
    __syncthreads();
  }
}

// Split path, second step: one block per (row, head), grid = split_rows * q_heads. Merges the
// row's partials in ascending order exactly as the one-block path does, then writes the output.
// No shared memory and no barriers: each thread merges its own dims (max and denom are read by
// all of them).
__global__ void __launch_bounds__(kThreads) MergePartitionsKernel(AttentionParams p) {
  const int64_t rows =
      min(static_cast<int64_t>(p.query_start[p.num_seqs]), static_cast<int64_t>(p.split_rows));
  const int32_t row = static_cast<int32_t>(blockIdx.x / p.q_heads);
  const int32_t h = static_cast<int32_t>(blockIdx.x % p.q_heads);
  if (row >= rows) return;
  const int32_t num_parts = min(NumPartitions(p.positions[row] + 1), p.max_parts);
  Partial run{};
  for (int32_t part = 0; part < num_parts; ++part) {
    const int64_t w = (static_cast<int64_t>(row) * p.max_parts + part) * p.q_heads + h;
    Partial x{p.part_stats[2 * w], p.part_stats[2 * w + 1], {}};
    const float* src = p.part_acc + w * p.head_dim;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      if (d < p.head_dim) x.acc[i] = src[d];
    }
    if (part == 0) {
      run = x;
    } else {
      MergeInto(run, x);
    }
  }
  WriteOutput(run, p.head_dim, p.out + (static_cast<int64_t>(row) * p.q_heads + h) * p.head_dim);
}

// PagedAttentionKernel for the cache's element type (grid blocks of kThreads on stream s).
void LaunchPartitions(KvDtype dtype, unsigned grid, cudaStream_t s, const AttentionParams& p) {
  switch (dtype) {
    case KvDtype::kF32:
      internal::Launch(PagedAttentionKernel<float>, grid, kThreads, s, p);
      break;
    case KvDtype::kBf16:
      internal::Launch(PagedAttentionKernel<bf16>, grid, kThreads, s, p);
      break;
  }
}

// Streaming multiprocessors of the current device, cached per device.
int SmCount() {
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
  return sms;
}

// Partitions per row for the split path, or 0 for one block per item: split only when the host
// knows the rows, (rows x heads) would leave the GPU mostly idle, a row can span more than one
// partition, and the workspace stays bounded.
int32_t SplitPartitions(int32_t q_heads, const PagedKvLayer& cache, const AttentionBatch& batch) {
  if (batch.num_tokens <= 0) return 0;
  const int64_t items = static_cast<int64_t>(batch.num_tokens) * q_heads;
  if (items >= kSplitBelowItemsPerSm * SmCount()) return 0;
  const int64_t max_context = static_cast<int64_t>(batch.max_blocks_per_seq) * cache.block_size;
  const int64_t max_parts = (max_context + kPartition - 1) / kPartition;
  if (max_parts < 2) return 0;
  const int64_t bytes = items * max_parts * (cache.head_dim + 2) * int64_t{sizeof(float)};
  if (bytes > kMaxWorkspaceBytes) return 0;
  return static_cast<int32_t>(max_parts);
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
  if (cache.dtype != KvDtype::kF32 && cache.dtype != KvDtype::kBf16) {
    std::fprintf(stderr, "PagedAttention: unknown KV cache dtype %d\n",
                 static_cast<int>(cache.dtype));
    std::abort();
  }
  const cudaStream_t s = internal::StreamOf(stream);
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
                    scale,
                    nullptr,
                    nullptr,
                    0,
                    0};
  const int32_t max_parts = SplitPartitions(q_heads, cache, batch);
  if (max_parts == 0) {
    // A fixed grid, a few times the device, striding over items.
    const unsigned grid = static_cast<unsigned>(SmCount() * kBlocksPerSm);
    LaunchPartitions(cache.dtype, grid, s, p);
    return;
  }
  // SplitPartitions bounded the workspace, so these products are small.
  const int64_t items = static_cast<int64_t>(batch.num_tokens) * q_heads;
  const int64_t partials = items * max_parts;
  // The partials, in the stream's workspace for split attention.
  internal::StreamWorkspace& ws = internal::ForStream<internal::StreamWorkspace>(s);
  ws.Begin(s);
  float* buffer = static_cast<float*>(
      ws.Buffer(sizeof(float) * static_cast<size_t>(partials * (cache.head_dim + 2)), s));
  p.part_stats = buffer;
  p.part_acc = buffer + 2 * partials;
  p.max_parts = max_parts;
  p.split_rows = batch.num_tokens;
  LaunchPartitions(cache.dtype, static_cast<unsigned>(partials), s, p);
  internal::Launch(MergePartitionsKernel, static_cast<unsigned>(items), kThreads, s, p);
  ws.End(s);
}

}  // namespace caduceus::kernels::cuda
