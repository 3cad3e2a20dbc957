// Every CUDA kernel but attention against its CPU twin (kernels/cpu) on random inputs of several
// shapes; attention is in attention_cuda_test.cc (the same binary, kernels_cuda_test). Without a
// CUDA device every test is skipped (and CTest reports the binary as skipped).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/staged_upload.h"

namespace caduceus::kernels {
namespace {

using namespace cuda_test;  // NOLINT: the shared test vocabulary

TEST_F(CudaKernelsTest, EmbeddingGatherMatchesCpu) {
  for (const int hidden : {1, 33, 4096}) {
    const int64_t row_begin = 10, rows = 20;  // this rank's vocab shard [10, 30)
    const auto table = RandomBf16(rows * hidden, 1);
    const std::vector<int32_t> ids = {10, 29, 0, 30, 15, 9, 100, 22, 22};  // in and out of shard
    const int n = static_cast<int>(ids.size());
    std::vector<float> want(static_cast<size_t>(n) * hidden);
    cpu::EmbeddingGather(table.data(), row_begin, rows, hidden, ids.data(), n, want.data());
    DeviceArray<bf16> d_table(table);
    DeviceArray<int32_t> d_ids(ids);
    DeviceArray<float> d_out(std::vector<float>(want.size(), std::nanf("")));
    cuda::EmbeddingGather(d_table.get(), row_begin, rows, hidden, d_ids.get(), n, d_out.get());
    ExpectBitEqual(d_out.Read(), want, "hidden " + std::to_string(hidden));  // exact widening
  }
}

TEST_F(CudaKernelsTest, RmsNormAndAddRmsNormMatchCpu) {
  for (const int n : {1, 3, 17}) {
    for (const int hidden : {1, 7, 129, 4096}) {
      const std::string what = std::to_string(n) + "x" + std::to_string(hidden);
      const size_t size = static_cast<size_t>(n) * hidden;
      const auto x = RandomFloats(size, 2, 3.0f);
      const auto residual = RandomFloats(size, 3);
      const auto weight = RandomBf16(hidden, 4);
      const float eps = 1e-5f;

      std::vector<float> want(size);
      cpu::RmsNorm(x.data(), weight.data(), n, hidden, eps, want.data());
      DeviceArray<float> d_x(x), d_out(size);
      DeviceArray<bf16> d_w(weight);
      cuda::RmsNorm(d_x.get(), d_w.get(), n, hidden, eps, d_out.get());
      ExpectClose(d_out.Read(), want, 1e-6, 2e-6, "RmsNorm " + what);

      std::vector<float> want_res = residual;
      cpu::AddRmsNorm(want_res.data(), x.data(), weight.data(), n, hidden, eps, want.data());
      DeviceArray<float> d_res(residual);
      cuda::AddRmsNorm(d_res.get(), d_x.get(), d_w.get(), n, hidden, eps, d_out.get());
      ExpectBitEqual(d_res.Read(), want_res, "AddRmsNorm residual " + what);  // one fp32 add
      ExpectClose(d_out.Read(), want, 1e-6, 2e-6, "AddRmsNorm " + what);
    }
  }
}

TEST_F(CudaKernelsTest, LinearMatchesCpuAndIsDeterministic) {
  struct Shape {
    int m, k, n;
  };
  // m <= 8 takes the skinny kernel (vector loads when k % 8 == 0, else scalar), larger m cuBLAS
  // (one GEMM of the stacked halves; from 256 rows two GEMMs accumulating into y).
  for (const Shape s : {Shape{1, 1, 1}, Shape{1, 4096, 513}, Shape{3, 15, 7}, Shape{17, 1000, 33},
                        Shape{64, 4096, 256}, Shape{5, 14336, 65}, Shape{8, 72, 100},
                        Shape{255, 96, 40}, Shape{256, 33, 7}, Shape{301, 128, 48}}) {
    const std::string what =
        std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
    const auto x = RandomFloats(static_cast<size_t>(s.m) * s.k, 5);
    const auto w = RandomBf16(static_cast<size_t>(s.n) * s.k, 6, 0.05f);
    std::vector<float> want(static_cast<size_t>(s.m) * s.n);
    cpu::Linear(x.data(), s.m, s.k, w.data(), s.n, want.data());
    DeviceArray<float> d_x(x), d_y(want.size());
    DeviceArray<bf16> d_w(w);
    cuda::Linear(d_x.get(), s.m, s.k, d_w.get(), s.n, d_y.get());
    const auto got = d_y.Read();
    // The split activations carry ~16 bits, so the error scales with sum |x w| over k.
    for (int i = 0; i < s.m; ++i) {
      for (int j = 0; j < s.n; ++j) {
        double mag = 0;
        for (int kk = 0; kk < s.k; ++kk) {
          mag += std::fabs(double(x[size_t(i) * s.k + kk]) * Bf16ToFloat(w[size_t(j) * s.k + kk]));
        }
        ASSERT_NEAR(got[size_t(i) * s.n + j], want[size_t(i) * s.n + j], 3e-5 * mag + 1e-6)
            << what << " at " << i << "," << j;
      }
    }
    cuda::Linear(d_x.get(), s.m, s.k, d_w.get(), s.n, d_y.get());
    ExpectBitEqual(d_y.Read(), got, "rerun " + what);
  }
}

TEST_F(CudaKernelsTest, LinearArgmaxIsTheArgmaxOfLinearAndAgreesWithCpu) {
  struct Shape {
    int m, k, n;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{1, 4096, 513}, Shape{3, 15, 7}, Shape{33, 256, 2051},
                        Shape{64, 4096, 16032}}) {
    const std::string what =
        std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
    auto x = RandomFloats(static_cast<size_t>(s.m) * s.k, 21);
    auto w = RandomBf16(static_cast<size_t>(s.n) * s.k, 22, 0.05f);
    if (s.m >= 3 && s.n >= 7) {
      // Row 1: two equal largest logits (columns 2 and 6; 2 must win). Row 2: all NaN.
      for (int kk = 0; kk < s.k; ++kk) {
        x[static_cast<size_t>(1) * s.k + kk] = 1.0f;
        w[static_cast<size_t>(2) * s.k + kk] = FloatToBf16(0.5f);
        w[static_cast<size_t>(6) * s.k + kk] = FloatToBf16(0.5f);
      }
      x[static_cast<size_t>(2) * s.k] = std::numeric_limits<float>::quiet_NaN();
    }
    DeviceArray<float> d_x(x), d_y(static_cast<size_t>(s.m) * s.n), d_value(s.m);
    DeviceArray<bf16> d_w(w);
    DeviceArray<int32_t> d_index(s.m);
    cuda::Linear(d_x.get(), s.m, s.k, d_w.get(), s.n, d_y.get());
    cuda::LinearArgmax(d_x.get(), s.m, s.k, d_w.get(), s.n, d_index.get(), d_value.get());
    const auto y = d_y.Read();
    const auto index = d_index.Read();
    const auto value = d_value.Read();
    std::vector<int32_t> cpu_index(s.m);
    std::vector<float> cpu_value(s.m);
    cpu::LinearArgmax(x.data(), s.m, s.k, w.data(), s.n, cpu_index.data(), cpu_value.data());
    for (int i = 0; i < s.m; ++i) {
      // Against the device's own logits: exact (the same partial sums, the sampler's rule).
      int32_t want = -1;
      float want_value = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < s.n; ++j) {
        const float v = y[static_cast<size_t>(i) * s.n + j];
        if (!std::isnan(v) && std::min(v, std::numeric_limits<float>::max()) > want_value) {
          want_value = std::min(v, std::numeric_limits<float>::max());
          want = j;
        }
      }
      ASSERT_EQ(index[i], want) << what << " row " << i;
      ASSERT_EQ(value[i], want_value) << what << " row " << i;
      // Against the CPU twin: the same token unless two logits lie within the GEMM tolerance.
      if (cpu_index[i] != index[i] && cpu_index[i] >= 0) {
        const float other = y[static_cast<size_t>(i) * s.n + cpu_index[i]];
        EXPECT_NEAR(other, value[i], 1e-3f * (1.0f + std::fabs(value[i]))) << what << " row " << i;
      }
    }
    if (s.m >= 3 && s.n >= 7) {
      EXPECT_EQ(index[1], 2) << what;
      EXPECT_EQ(index[2], -1) << what;
    }
  }
}

TEST_F(CudaKernelsTest, SkinnyLinearRowsAreBatchInvariant) {
  // Up to 8 rows (every decode step of up to 8 sequences) a row's output bits depend on its own
  // activations only: the same alone as among 8. Vector path (k % 8 == 0, aligned), scalar path
  // (odd k), and weights one element off 16-byte alignment (scalar path, vs the CPU).
  const int n = 300;
  for (const int k : {4096, 1001, 64}) {
    for (const int offset : {0, 1}) {
      const std::string what = "k " + std::to_string(k) + " offset " + std::to_string(offset);
      const auto x = RandomFloats(static_cast<size_t>(8) * k, 31);
      const auto w_all = RandomBf16(static_cast<size_t>(n) * k + offset, 32, 0.05f);
      DeviceArray<float> d_x(x), d_y8(static_cast<size_t>(8) * n);
      DeviceArray<bf16> d_w(w_all);
      const bf16* w = d_w.get() + offset;
      cuda::Linear(d_x.get(), 8, k, w, n, d_y8.get());
      const auto y8 = d_y8.Read();
      std::vector<float> want(static_cast<size_t>(8) * n);
      cpu::Linear(x.data(), 8, k, w_all.data() + offset, n, want.data());
      ExpectClose(y8, want, 1e-5, 1e-4, what);
      for (int m = 1; m < 8; ++m) {
        DeviceArray<float> d_y(static_cast<size_t>(m) * n);
        cuda::Linear(d_x.get(), m, k, w, n, d_y.get());
        ExpectBitEqual(d_y.Read(), std::vector<float>(y8.begin(), y8.begin() + size_t(m) * n),
                       what + " m " + std::to_string(m));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_F(CudaKernelsTest, LinearOnNonDefaultStreams) {
  // Created streams have a workspace each; the default streams (legacy and per-thread) share the
  // calling thread's, so calls alternating between them must not race.
  const int m = 9, k = 2048, n = 1024;
  const auto x = RandomFloats(static_cast<size_t>(m) * k, 7);
  const auto w = RandomBf16(static_cast<size_t>(n) * k, 8, 0.05f);
  DeviceArray<float> d_x(x), d_y0(static_cast<size_t>(m) * n), d_y1(static_cast<size_t>(m) * n),
      d_y2(static_cast<size_t>(m) * n), d_y3(static_cast<size_t>(m) * n);
  DeviceArray<bf16> d_w(w);
  cudaStream_t s0, s1;
  ASSERT_CUDA_OK(cudaStreamCreate(&s0));
  ASSERT_CUDA_OK(cudaStreamCreate(&s1));
  for (int rep = 0; rep < 4; ++rep) {
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y0.get(), Stream{s0});
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y1.get(), Stream{s1});
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y2.get(), Stream{nullptr});
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y3.get(), Stream{cudaStreamPerThread});
  }
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  ExpectBitEqual(d_y1.Read(), d_y0.Read(), "two streams");
  ExpectBitEqual(d_y2.Read(), d_y0.Read(), "legacy stream");
  ExpectBitEqual(d_y3.Read(), d_y0.Read(), "per-thread stream");
  cuda::ReleaseStream(Stream{s0});
  cuda::ReleaseStream(Stream{s1});
  cudaStreamDestroy(s0);
  cudaStreamDestroy(s1);
}

TEST_F(CudaKernelsTest, WorkspaceFollowsTheStreamAcrossThreads) {
  // The worker warms its model up on one thread and steps it on another, on the model's stream:
  // the step thread must find that stream's workspaces (cuBLAS context, split buffers) already
  // sized, so its calls allocate nothing (no new generation) and a graph captured there never
  // has to grow one. ReleaseStream frees them.
  const int m = 9, k = 512, n = 256;
  const auto x = RandomFloats(static_cast<size_t>(m) * k, 17);
  const auto w = RandomBf16(static_cast<size_t>(n) * k, 18, 0.05f);
  DeviceArray<float> d_x(x), d_y0(static_cast<size_t>(m) * n), d_y1(static_cast<size_t>(m) * n);
  DeviceArray<bf16> d_w(w);
  cudaStream_t s;
  ASSERT_CUDA_OK(cudaStreamCreate(&s));
  std::thread([&] {
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y0.get(), Stream{s});
    cudaStreamSynchronize(s);
  }).join();
  const uint64_t warmed = cuda::WorkspaceGeneration();
  std::thread([&] {
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y1.get(), Stream{s});
    cudaStreamSynchronize(s);
  }).join();
  EXPECT_EQ(cuda::WorkspaceGeneration(), warmed) << "the second thread grew a workspace of its own";
  ExpectBitEqual(d_y1.Read(), d_y0.Read(), "second thread");
  cuda::ReleaseStream(Stream{s});
  EXPECT_GT(cuda::WorkspaceGeneration(), warmed) << "ReleaseStream freed nothing";
  ASSERT_CUDA_OK(cudaStreamDestroy(s));
}

TEST_F(CudaKernelsTest, AWorkspaceThatMustGrowInACaptureSpoilsItInsteadOfAborting) {
  // CUDA refuses to free non-graph memory inside a capture, so a Linear whose workspace must grow
  // cannot be captured: the capture is reported spoilt (EndThreadCapture), nothing aborts, and
  // the same call run eagerly afterwards grows the workspace and gives the right numbers.
  const int k = 256, n = 128, small = 9, large = 40;
  const auto x = RandomFloats(static_cast<size_t>(large) * k, 41);
  const auto w = RandomBf16(static_cast<size_t>(n) * k, 42, 0.05f);
  DeviceArray<float> d_x(x), d_y(static_cast<size_t>(large) * n);
  DeviceArray<bf16> d_w(w);
  cudaStream_t s;
  ASSERT_CUDA_OK(cudaStreamCreate(&s));
  cuda::Linear(d_x.get(), small, k, d_w.get(), n, d_y.get(), Stream{s});  // sizes it for 9 rows
  ASSERT_CUDA_OK(cudaStreamSynchronize(s));
  const uint64_t generation = cuda::WorkspaceGeneration();
  ASSERT_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cuda::BeginThreadCapture();
  cuda::Linear(d_x.get(), large, k, d_w.get(), n, d_y.get(), Stream{s});
  const std::string spoilt = cuda::EndThreadCapture();
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();
  EXPECT_NE(spoilt.find("has to grow"), std::string::npos) << spoilt;
  EXPECT_EQ(cuda::WorkspaceGeneration(), generation) << "the workspace changed inside the capture";
  EXPECT_EQ(cuda::EndThreadCapture(), "") << "the failure outlived its capture";
  cuda::Linear(d_x.get(), large, k, d_w.get(), n, d_y.get(), Stream{s});
  std::vector<float> want(static_cast<size_t>(large) * n);
  cpu::Linear(x.data(), large, k, w.data(), n, want.data());
  ASSERT_CUDA_OK(cudaStreamSynchronize(s));
  ExpectClose(d_y.Read(), want, 1e-5, 1e-4, "eager after the spoilt capture");
  cuda::ReleaseStream(Stream{s});
  ASSERT_CUDA_OK(cudaStreamDestroy(s));
}

TEST_F(CudaKernelsTest, RopeMatchesCpu) {
  struct Shape {
    int n, q_heads, kv_heads, head_dim;
  };
  for (const Shape s :
       {Shape{1, 1, 1, 2}, Shape{5, 4, 4, 64}, Shape{7, 32, 8, 128}, Shape{3, 8, 1, 80}}) {
    const std::string what = std::to_string(s.n) + "/" + std::to_string(s.q_heads) + "/" +
                             std::to_string(s.kv_heads) + "/" + std::to_string(s.head_dim);
    // Fused q|k|v rows as the model's projection writes them, plus 3 floats of padding: the
    // q and k heads rotate, the v heads and the padding must come back untouched.
    const int64_t stride = int64_t{s.q_heads + 2 * s.kv_heads} * s.head_dim + 3;
    auto x = RandomFloats(static_cast<size_t>(s.n * stride), 9);
    std::vector<float> inv_freq(s.head_dim / 2);
    for (int d = 0; d < s.head_dim / 2; ++d) {
      inv_freq[d] = static_cast<float>(std::pow(500000.0, -2.0 * d / s.head_dim));
    }
    std::mt19937 rng(11);
    std::vector<int32_t> positions(s.n);
    for (auto& p : positions) p = static_cast<int32_t>(rng() % 8192);
    positions[0] = 0;
    DeviceArray<float> d_x(x), d_inv(inv_freq);
    DeviceArray<int32_t> d_pos(positions);
    cpu::Rope(x.data(), stride, positions.data(), s.n, s.q_heads + s.kv_heads, s.head_dim,
              inv_freq.data());
    cuda::Rope(d_x.get(), stride, d_pos.get(), s.n, s.q_heads + s.kv_heads, s.head_dim,
               d_inv.get());
    // sin/cos of angles up to ~8k rad: the two libms may differ by an ulp or two of the angle's
    // result, scaled by |q|.
    ExpectClose(d_x.Read(), x, 5e-6, 2e-6, "qkv " + what);
  }
}

TEST_F(CudaKernelsTest, SiluMulMatchesCpu) {
  for (const int n : {1, 3}) {
    for (const int d : {1, 257, 14336}) {
      const size_t size = static_cast<size_t>(n) * d;
      // Rows of [gate | up]; gates spread wider so that silu's both tails are exercised.
      const auto gate = RandomFloats(size, 12, 4.0f);
      const auto up = RandomFloats(size, 13);
      std::vector<float> gate_up(2 * size);
      for (int i = 0; i < n; ++i) {
        std::copy_n(&gate[size_t(i) * d], d, &gate_up[size_t(i) * 2 * d]);
        std::copy_n(&up[size_t(i) * d], d, &gate_up[size_t(i) * 2 * d + d]);
      }
      std::vector<float> want(size);
      cpu::SiluMul(gate_up.data(), n, d, want.data());
      DeviceArray<float> d_gate_up(gate_up), d_out(size);
      cuda::SiluMul(d_gate_up.get(), n, d, d_out.get());
      ExpectClose(d_out.Read(), want, 1e-7, 2e-6, std::to_string(n) + "x" + std::to_string(d));
    }
  }
}

TEST_F(CudaKernelsTest, StagedUploadCopiesEveryByte) {
  // 2.5 x the two 32 MiB staging halves plus an odd tail: each half is refilled while the other
  // drains, so a refill that did not wait for its half's previous copy would corrupt a chunk.
  const size_t bytes = (size_t{160} << 20) + 12345;
  std::vector<uint8_t> host(bytes);
  std::mt19937 rng(41);
  for (size_t i = 0; i < bytes; i += 4) {
    const uint32_t r = rng();
    std::memcpy(&host[i], &r, std::min<size_t>(4, bytes - i));
  }
  uint8_t* device = nullptr;
  ASSERT_CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&device), bytes));
  int ordinal = 0;
  ASSERT_CUDA_OK(cudaGetDevice(&ordinal));
  cuda::StagedUpload(device, host.data(), bytes, ordinal);
  std::vector<uint8_t> back(bytes);
  ASSERT_CUDA_OK(cudaMemcpy(back.data(), device, bytes, cudaMemcpyDeviceToHost));
  cudaFree(device);
  const auto mismatch = std::mismatch(back.begin(), back.end(), host.begin());
  EXPECT_TRUE(mismatch.first == back.end())
      << "first wrong byte at offset " << (mismatch.first - back.begin()) << " of " << bytes;
}

TEST_F(CudaKernelsTest, KvCacheWriteMatchesCpu) {
  for (const KvDtype dtype : {KvDtype::kF32, KvDtype::kBf16}) {
    for (const int kv_heads : {1, 8}) {
      for (const int head_dim : {64, 128}) {
        const std::string what = std::string(DtypeName(dtype)) + " kv_heads " +
                                 std::to_string(kv_heads) + " head_dim " +
                                 std::to_string(head_dim);
        HostCache cache(7, 16, kv_heads, head_dim, dtype);
        const int row = kv_heads * head_dim;
        // Scattered, out-of-order slots across non-adjacent blocks; -1 is a padding token the CUDA
        // kernel skips (the CPU twin gets the list without it).
        const std::vector<int32_t> slots = {5 * 16 + 0, 5 * 16 + 1, 2 * 16 + 15, -1,
                                            0,          6 * 16 + 7, 3};
        std::vector<int32_t> cpu_rows, cpu_slots;
        for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
          if (slots[i] >= 0) {
            cpu_rows.push_back(i);
            cpu_slots.push_back(slots[i]);
          }
        }
        const int n = static_cast<int>(slots.size());
        // Source rows in the fused q|k|v layout: k at offset q_dim, v after it.
        const int q_dim = 4 * row, stride = q_dim + 2 * row;
        auto qkv = RandomFloats(static_cast<size_t>(n) * stride, 14);
        // Rounding corner cases at the start of token 0's k and v rows: ties to even (down and
        // up), subnormals (a tie and the largest), the largest float (rounds to infinity, as
        // round-to-nearest-even does), infinities and signed zero.
        const uint32_t corner_bits[] = {0x3F808000u, 0x3F818000u, 0xBF808001u, 0x00008000u,
                                        0x00018000u, 0x007FFFFFu, 0x7F7FFFFFu, 0xFF7F7FFFu,
                                        0x7F800000u, 0xFF800000u, 0x80000000u, 0x7F7F8000u};
        for (size_t c = 0; c < std::size(corner_bits); ++c) {
          float f;
          std::memcpy(&f, &corner_bits[c], sizeof(f));
          qkv[q_dim + c] = f;
          qkv[q_dim + row + std::size(corner_bits) - 1 - c] = f;
        }
        DeviceArray<float> d_qkv(qkv);
        DeviceArray<uint8_t> d_ck(cache.KBytes()), d_cv(cache.VBytes());
        DeviceArray<int32_t> d_slots(slots);
        // The CPU twin's rows: the same values, padding token left out.
        std::vector<float> cpu_qkv;
        for (const int r : cpu_rows) {
          cpu_qkv.insert(cpu_qkv.end(), qkv.begin() + size_t(r) * stride,
                         qkv.begin() + size_t(r + 1) * stride);
        }
        cpu::KvCacheWrite(cpu_qkv.data() + q_dim, cpu_qkv.data() + q_dim + row, stride,
                          cpu_slots.data(), static_cast<int32_t>(cpu_slots.size()),
                          cache.Layer(cache.k(), cache.v()));
        cuda::KvCacheWrite(d_qkv.get() + q_dim, d_qkv.get() + q_dim + row, stride, d_slots.get(),
                           n, cache.Layer(d_ck.get(), d_cv.get()));
        // NaN slots compare equal bit for bit, so the untouched part is checked as well.
        ExpectCacheBitEqual(d_ck.Read(), cache.KBytes(), dtype, "k " + what);
        ExpectCacheBitEqual(d_cv.Read(), cache.VBytes(), dtype, "v " + what);
        if (HasFatalFailure()) return;
      }
    }
  }
}

}  // namespace
}  // namespace caduceus::kernels
