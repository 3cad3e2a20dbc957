// PagedAttention (CUDA) against its CPU twin: GQA ratios, head dims, block sizes, fp32 and bf16
// caches, shuffled block tables with holes, mixed prefill/decode batches, split-K vs one block per
// item bit for bit, and batch invariance. Part of kernels_cuda_test (with kernels_cuda_test.cc).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_test_util.h"

namespace caduceus::kernels {
namespace {

using namespace cuda_test;  // NOLINT: the shared test vocabulary

// Sequences of a mixed batch: context length after this step and query rows in this step
// (rows = context: full prefill; rows = 1: decode; otherwise a chunked-prefill tail).
struct SeqSpec {
  int context, rows;
};

struct AttentionCase {
  int q_heads, kv_heads, head_dim, block_size;
};

class PagedAttentionTest
    : public CudaKernelsTest,
      public ::testing::WithParamInterface<std::tuple<AttentionCase, KvDtype>> {};

TEST_P(PagedAttentionTest, MatchesCpuAndIsBatchInvariant) {
  const AttentionCase c = std::get<0>(GetParam());
  // The cache's element type: the CPU twin computes `want` from the same (bf16-rounded) cache, and
  // both widen it exactly, so the tolerance is the fp32 one.
  const KvDtype dtype = std::get<1>(GetParam());
  // The CUDA kernel restarts its online softmax every kPartition positions (attention.cu) and, when
  // the host passes num_tokens and few rows would underfill the GPU, gives each partition its own
  // block and merges the partials in a second kernel. The last sequences are long-context decodes
  // around the partition boundaries; with num_tokens = 1 a row alone takes that split path.
  constexpr int kPartition = 512;
  const std::vector<SeqSpec> seqs = {{1, 1},
                                     {17, 17},
                                     {300, 1},
                                     {1000, 37},
                                     {129, 5},
                                     {128, 2},
                                     {kPartition - 1, 1},
                                     {kPartition, 1},
                                     {kPartition + 1, 1},
                                     {3 * kPartition + 17, 1},
                                     {5000, 1}};
  const int num_seqs = static_cast<int>(seqs.size());
  int max_blocks = 0, used_blocks = 0;
  for (const auto& s : seqs) {
    const int b = (s.context + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, b);
    used_blocks += b;
  }
  const int max_blocks_per_seq = max_blocks + 2;  // trailing unused entries (-1)
  // Physical blocks: twice what is needed, handed out in a shuffled order, so tables are out of
  // order and the cache has holes (left NaN).
  HostCache cache(2 * used_blocks, c.block_size, c.kv_heads, c.head_dim, dtype);
  std::vector<int32_t> physical(cache.num_blocks);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), std::mt19937(16));
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks_per_seq, -1);
  std::vector<int32_t> query_start = {0}, positions;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t kv_row = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int p = 0; p < seqs[s].context; ++p) {
      if (p % c.block_size == 0)
        tables[size_t(s) * max_blocks_per_seq + p / c.block_size] = physical[next++];
      const int64_t slot =
          int64_t{tables[size_t(s) * max_blocks_per_seq + p / c.block_size]} * c.block_size +
          p % c.block_size;
      for (int64_t j = 0; j < kv_row; ++j) {
        const float k = normal(rng);
        const float v = normal(rng);
        cache.Set(slot * kv_row + j, k, v);
      }
    }
    for (int r = 0; r < seqs[s].rows; ++r) positions.push_back(seqs[s].context - seqs[s].rows + r);
    query_start.push_back(static_cast<int32_t>(positions.size()));
  }
  const int num_tokens = static_cast<int>(positions.size());
  const size_t q_row = static_cast<size_t>(c.q_heads) * c.head_dim;
  // Larger q makes the softmax peaky, which exercises the running-max rescaling.
  const auto q = RandomFloats(num_tokens * q_row, 18, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // The batched call reads q at a wider stride (the fused q|k|v rows), the rows alone dense.
  const size_t q_stride = q_row + 2 * static_cast<size_t>(kv_row);
  std::vector<float> q_rows(num_tokens * q_stride, std::nanf(""));
  for (int r = 0; r < num_tokens; ++r) {
    std::copy_n(q.begin() + r * q_row, q_row, q_rows.begin() + r * q_stride);
  }
  std::vector<float> want(num_tokens * q_row);
  cpu::PagedAttention(q_rows.data(), q_stride, c.q_heads, cache.Layer(cache.k(), cache.v()),
                      AttentionBatch{num_seqs, query_start.data(), positions.data(), tables.data(),
                                     max_blocks_per_seq, num_tokens},
                      scale, want.data());

  DeviceArray<float> d_q(q_rows), d_out(want.size());
  DeviceArray<uint8_t> d_ck(cache.KBytes()), d_cv(cache.VBytes());
  DeviceArray<int32_t> d_start(query_start), d_pos(positions), d_tables(tables);
  const PagedKvLayer layer = cache.Layer(d_ck.get(), d_cv.get());
  // (a) The whole batch, its row count known (it splits only where rows x heads is small next to
  // the SM count, e.g. with 2 heads on an H100/H200).
  cuda::PagedAttention(d_q.get(), q_stride, c.q_heads, layer,
                       AttentionBatch{num_seqs, d_start.get(), d_pos.get(), d_tables.get(),
                                      max_blocks_per_seq, num_tokens},
                       scale, d_out.get());
  const auto got = d_out.Read();
  ExpectClose(got, want, 2e-5, 1e-4, "batched");
  auto row_of = [&](const std::vector<float>& all, size_t i) {
    return std::vector<float>(all.begin() + i * q_row, all.begin() + (i + 1) * q_row);
  };

  // Each query row alone (a decode step of its sequence) must give the same bits as in the batch,
  // (b) with num_tokens = 1 (split: the table is wide enough for several partitions, so even a
  // one-partition row goes through the workspace and the merge kernel) and (c) with
  // num_tokens = 0 (never split).
  for (int s = 0; s < num_seqs; ++s) {
    for (int r = query_start[s]; r < query_start[s + 1]; ++r) {
      DeviceArray<int32_t> one_start(std::vector<int32_t>{0, 1});
      DeviceArray<int32_t> one_pos(std::vector<int32_t>{positions[r]});
      DeviceArray<float> one_q(row_of(q, r));
      for (const int32_t known : {1, 0}) {
        DeviceArray<float> one_out(q_row);
        cuda::PagedAttention(
            one_q.get(), q_row, c.q_heads, layer,
            AttentionBatch{1, one_start.get(), one_pos.get(),
                           d_tables.get() + size_t(s) * max_blocks_per_seq, max_blocks_per_seq,
                           known},
            scale, one_out.get());
        ExpectBitEqual(one_out.Read(), row_of(got, r),
                       "row " + std::to_string(r) + " alone, num_tokens " + std::to_string(known));
        if (HasFatalFailure()) return;
      }
    }
  }

  // (d) The single-row decodes together (7 rows), their count known: a batch of several rows that
  // splits on a GPU with more than 3.5 x q_heads SMs (an H100/H200 for every shape here).
  std::vector<int32_t> dec_start = {0}, dec_pos, dec_tables, dec_rows;
  for (int s = 0; s < num_seqs; ++s) {
    if (seqs[s].rows != 1) continue;
    const int r = query_start[s];
    dec_rows.push_back(r);
    dec_pos.push_back(positions[r]);
    dec_start.push_back(static_cast<int32_t>(dec_pos.size()));
    dec_tables.insert(dec_tables.end(), tables.begin() + size_t(s) * max_blocks_per_seq,
                      tables.begin() + size_t(s + 1) * max_blocks_per_seq);
  }
  const int num_dec = static_cast<int>(dec_rows.size());
  std::vector<float> dec_q(num_dec * q_row);
  for (int i = 0; i < num_dec; ++i) {
    std::copy_n(q.begin() + dec_rows[i] * q_row, q_row, dec_q.begin() + i * q_row);
  }
  DeviceArray<int32_t> d_dec_start(dec_start), d_dec_pos(dec_pos), d_dec_tables(dec_tables);
  DeviceArray<float> d_dec_q(dec_q), d_dec_out(dec_q.size());
  const AttentionBatch dec_batch{num_dec, d_dec_start.get(), d_dec_pos.get(), d_dec_tables.get(),
                                 max_blocks_per_seq, num_dec};
  cuda::PagedAttention(d_dec_q.get(), q_row, c.q_heads, layer, dec_batch, scale, d_dec_out.get());
  const auto dec_got = d_dec_out.Read();
  for (int i = 0; i < num_dec; ++i) {
    ExpectBitEqual(row_of(dec_got, i), row_of(got, dec_rows[i]),
                   "decode batch row " + std::to_string(dec_rows[i]));
    if (HasFatalFailure()) return;
  }

  // The same decode batch alternately on two created streams (a split workspace each) and on the
  // legacy and per-thread default streams, which share the thread's: those calls must not race.
  cudaStream_t streams[4] = {nullptr, nullptr, nullptr, cudaStreamPerThread};
  ASSERT_CUDA_OK(cudaStreamCreate(&streams[0]));
  ASSERT_CUDA_OK(cudaStreamCreate(&streams[1]));
  DeviceArray<float> d_dec_out1(dec_q.size()), d_dec_out2(dec_q.size()), d_dec_out3(dec_q.size());
  DeviceArray<float>* outs[4] = {&d_dec_out, &d_dec_out1, &d_dec_out2, &d_dec_out3};
  for (int rep = 0; rep < 3; ++rep) {
    for (int i = 0; i < 4; ++i) {
      cuda::PagedAttention(d_dec_q.get(), q_row, c.q_heads, layer, dec_batch, scale,
                           outs[i]->get(), Stream{streams[i]});
    }
  }
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  for (int i = 0; i < 4; ++i) {
    ExpectBitEqual(outs[i]->Read(), dec_got, "decode batch, stream " + std::to_string(i));
  }
  for (int i = 0; i < 2; ++i) {
    cuda::ReleaseStream(Stream{streams[i]});
    cudaStreamDestroy(streams[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionTest,
    ::testing::Combine(
        ::testing::Values(AttentionCase{4, 4, 64, 16},    // MHA (group 1)
                          AttentionCase{8, 2, 128, 16},   // group 4
                          AttentionCase{32, 4, 128, 16},  // group 8 (Llama-3-8B-like, fewer heads)
                          AttentionCase{8, 1, 80, 5},     // odd block size, head_dim not 2^k
                          AttentionCase{2, 2, 256, 32}),  // two dims per thread
        ::testing::Values(KvDtype::kF32, KvDtype::kBf16)),
    [](const ::testing::TestParamInfo<std::tuple<AttentionCase, KvDtype>>& info) {
      const AttentionCase& c = std::get<0>(info.param);
      // Appends, not "lit" + std::string: GCC 12 at -O3 reports a false -Wrestrict on that
      // operator+ (and this file builds without absl on the GPU machine).
      std::string name = "q";
      name += std::to_string(c.q_heads);
      name += "kv";
      name += std::to_string(c.kv_heads);
      name += "d";
      name += std::to_string(c.head_dim);
      name += "bs";
      name += std::to_string(c.block_size);
      name += "_";
      name += DtypeName(std::get<1>(info.param));  // e.g. q4kv4d64bs16_bf16
      return name;
    });

}  // namespace
}  // namespace caduceus::kernels
