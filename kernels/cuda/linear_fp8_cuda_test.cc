// LinearFp8 (weight-only FP8, linear_fp8.cu) against its CPU twin on both paths: the skinny kernel
// (m <= 8, vector and scalar weight reads) and the GEMM over weights widened to bf16 chunk by chunk
// (one-pass below 256 rows, two-pass from there; one chunk or several). Part of kernels_cuda_test
// (and of its emulated build); without a CUDA device every test is skipped.
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "common/fp8.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_test_util.h"
#include "kernels/cuda/linear_fp8.h"

namespace caduceus::kernels {
namespace {

using namespace cuda_test;  // NOLINT: the shared test vocabulary
using kernels::testing::RandomFp8;
using kernels::testing::RandomScales;

struct Shape {
  int m, k, n;
};

std::string Name(const Shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
}

// The E4M3 weights as bf16 (exact), for cuda::Linear over the same values.
std::vector<bf16> Widen(const std::vector<uint8_t>& w) {
  std::vector<bf16> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) out[i] = FloatToBf16(Fp8E4M3ToFloat(w[i]));
  return out;
}

// |got - want| <= 3e-5 · sum_p |x·w·scale| per element: the GEMM path's split activations carry
// ~16 bits (2^-17 relative), and both paths sum in another order than the CPU.
void ExpectNearCpu(const std::vector<float>& got, const std::vector<float>& want,
                   const std::vector<float>& x, const uint8_t* w, const std::vector<float>& scale,
                   const Shape& s, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (int i = 0; i < s.m; ++i) {
    for (int j = 0; j < s.n; ++j) {
      double mag = 0;
      for (int p = 0; p < s.k; ++p) {
        mag += std::fabs(double(x[size_t(i) * s.k + p]) * Fp8E4M3ToFloat(w[size_t(j) * s.k + p]));
      }
      mag *= scale[j];
      ASSERT_NEAR(got[size_t(i) * s.n + j], want[size_t(i) * s.n + j], 3e-5 * mag + 1e-12)
          << what << " at " << i << "," << j;
    }
  }
}

TEST_F(CudaKernelsTest, LinearFp8MatchesCpuAndIsDeterministic) {
  // m <= 8: the skinny kernel (vector reads when k % 8 == 0, else scalar); 9..255: one GEMM of
  // the stacked halves; 256: two GEMMs accumulating into y. Odd k and n throughout.
  for (const Shape s : {Shape{1, 33, 37}, Shape{1, 256, 37}, Shape{3, 100, 5}, Shape{8, 256, 33},
                        Shape{8, 33, 7}, Shape{9, 33, 37}, Shape{9, 256, 17}, Shape{40, 100, 21},
                        Shape{40, 256, 37}, Shape{256, 33, 7}}) {
    const std::string what = Name(s);
    const auto x = RandomFloats(size_t(s.m) * s.k, 51);
    const auto w = RandomFp8(size_t(s.n) * s.k, 52);  // every finite code, subnormals included
    const auto scale = RandomScales(s.n, 53);
    std::vector<float> want(size_t(s.m) * s.n);
    cpu::LinearFp8(x.data(), s.m, s.k, w.data(), scale.data(), s.n, want.data());
    DeviceArray<float> d_x(x), d_scale(scale), d_y(want.size());
    DeviceArray<uint8_t> d_w(w);
    cuda::LinearFp8(d_x.get(), s.m, s.k, d_w.get(), d_scale.get(), s.n, d_y.get());
    const auto got = d_y.Read();
    ExpectNearCpu(got, want, x, w.data(), scale, s, what);
    if (HasFatalFailure()) return;
    cuda::LinearFp8(d_x.get(), s.m, s.k, d_w.get(), d_scale.get(), s.n, d_y.get());
    ExpectBitEqual(d_y.Read(), got, "rerun " + what);
    if (HasFatalFailure()) return;
  }
}

TEST_F(CudaKernelsTest, LinearFp8GemmPathWidensTheWeightsChunkByChunk) {
  // Chunk bounds far below the production 16M weights, so that n = 37 rows take several chunks
  // (16 + 16 + 5 rows, 32 + 5) or one: the chunks' GEMMs write their columns of one output.
  // Aligned weights (4-byte widening loads, k = 33 leaving a tail) and weights one byte off
  // (byte by byte), on the one-pass (9, 40 rows) and two-pass (256 rows) GEMMs.
  const int n = 37;
  for (const int m : {9, 40, 256}) {
    for (const int k : {33, 100}) {
      for (const int offset : {0, 1}) {
        const Shape s{m, k, n};
        const auto x = RandomFloats(size_t(m) * k, 61);
        const auto w_all = RandomFp8(size_t(n) * k + offset, 62);
        const auto scale = RandomScales(n, 63);
        const uint8_t* w = w_all.data() + offset;
        std::vector<float> want(size_t(m) * n);
        cpu::LinearFp8(x.data(), m, k, w, scale.data(), n, want.data());
        DeviceArray<float> d_x(x), d_scale(scale), d_y(want.size());
        DeviceArray<uint8_t> d_w(w_all);
        for (const int64_t bound : {int64_t{0}, int64_t{20} * k, int64_t{32} * k,
                                    cuda::internal::kLinearFp8ChunkElements}) {
          const std::string what = Name(s) + " offset " + std::to_string(offset) + " bound " +
                                   std::to_string(bound);
          cuda::internal::LinearFp8Chunked(d_x.get(), m, k, d_w.get() + offset, d_scale.get(), n,
                                           d_y.get(), bound, Stream{});
          ExpectNearCpu(d_y.Read(), want, x, w, scale, s, what);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST_F(CudaKernelsTest, LinearFp8DecodesEveryCodeExactly) {
  // Weight row j holds the codes 8j .. 8j + 7 (all 256 over 32 rows; the NaN codes 0x7F/0xFF,
  // unspecified, replaced by zeros), and x row r is one-hot at r % 8, so y[r, j] is one code's
  // value times a power-of-two scale: exact on every path (the split of 0 and 1 has lo = 0). Every
  // byte position of the skinny kernel's 8-byte and the widening kernel's 4-byte loads, and their
  // byte-by-byte fallbacks (weights one byte off alignment).
  const int k = 8, n = 32;
  std::vector<uint8_t> codes(size_t(n) * k + 1);
  for (size_t i = 0; i < codes.size(); ++i) {
    const uint8_t b = static_cast<uint8_t>(i % 256);
    codes[i] = (b & 0x7F) == 0x7F ? 0 : b;
  }
  std::vector<float> scale(n);
  for (int j = 0; j < n; ++j) scale[j] = std::ldexp(1.0f, j % 3 - 1);
  DeviceArray<float> d_scale(scale);
  for (const int m : {8, 9, 256}) {
    std::vector<float> x(size_t(m) * k, 0.0f);
    for (int r = 0; r < m; ++r) x[size_t(r) * k + r % k] = 1.0f;
    DeviceArray<float> d_x(x), d_y(size_t(m) * n);
    for (const int offset : {0, 1}) {
      std::vector<uint8_t> w(codes.size());
      for (size_t i = 0; i + offset < w.size(); ++i) w[i + offset] = codes[i];  // codes at w + offset
      DeviceArray<uint8_t> d_w(w);
      cuda::LinearFp8(d_x.get(), m, k, d_w.get() + offset, d_scale.get(), n, d_y.get());
      const auto y = d_y.Read();
      for (int r = 0; r < m; ++r) {
        for (int j = 0; j < n; ++j) {
          const uint8_t code = codes[size_t(j) * k + r % k];
          ASSERT_EQ(y[size_t(r) * n + j], Fp8E4M3ToFloat(code) * scale[j])
              << "m " << m << " offset " << offset << " code 0x" << std::hex << int(code);
        }
      }
    }
  }
}

TEST_F(CudaKernelsTest, LinearFp8SkinnyRowsAreBatchInvariantAndEqualScaledLinear) {
  // Up to 8 rows a row's bits depend on its own activations only (the same alone as among 8), and
  // they are fl(Linear over the weights widened to bf16, times the scale): the same kernel, order
  // and fp32 sums. Vector reads (k % 8 == 0, aligned), scalar (odd k), and weights one byte off
  // alignment (scalar; Linear's widened copy is one element off, scalar too).
  const int n = 37;
  for (const int k : {256, 33}) {
    for (const int offset : {0, 1}) {
      const std::string what = "k " + std::to_string(k) + " offset " + std::to_string(offset);
      const auto x = RandomFloats(size_t(8) * k, 71);
      const auto w_all = RandomFp8(size_t(n) * k + offset, 72);
      const auto scale = RandomScales(n, 73);
      DeviceArray<float> d_x(x), d_scale(scale), d_y8(size_t(8) * n), d_linear(size_t(8) * n);
      DeviceArray<uint8_t> d_w(w_all);
      DeviceArray<bf16> d_widened(Widen(w_all));
      cuda::LinearFp8(d_x.get(), 8, k, d_w.get() + offset, d_scale.get(), n, d_y8.get());
      cuda::Linear(d_x.get(), 8, k, d_widened.get() + offset, n, d_linear.get());
      const auto y8 = d_y8.Read();
      auto scaled = d_linear.Read();
      for (int r = 0; r < 8; ++r) {
        for (int j = 0; j < n; ++j) scaled[size_t(r) * n + j] *= scale[j];
      }
      ExpectBitEqual(y8, scaled, "scaled Linear " + what);
      for (int m = 1; m < 8; ++m) {
        DeviceArray<float> d_y(size_t(m) * n);
        cuda::LinearFp8(d_x.get(), m, k, d_w.get() + offset, d_scale.get(), n, d_y.get());
        ExpectBitEqual(d_y.Read(), std::vector<float>(y8.begin(), y8.begin() + size_t(m) * n),
                       what + " m " + std::to_string(m));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_F(CudaKernelsTest, LinearFp8SharesLinearsWorkspaceAndKeepsTheCaptureRules) {
  // The GEMM path's workspace is the stream's Linear workspace: sized once, a rerun allocates
  // nothing, nor does a bf16 Linear that fits; a smaller call captures into a graph that replays
  // the eager bits; a call that would have to grow it spoils its capture instead (nothing
  // allocated), and runs eagerly afterwards with the right numbers. ReleaseStream frees it.
  const int k = 256, n = 37, warm = 40, small = 9, large = 200;
  const auto x = RandomFloats(size_t(large) * k, 81);
  const auto w = RandomFp8(size_t(n) * k, 82);
  const auto scale = RandomScales(n, 83);
  DeviceArray<float> d_x(x), d_scale(scale), d_y(size_t(large) * n), d_eager(size_t(small) * n),
      d_graph(size_t(small) * n);
  DeviceArray<uint8_t> d_w(w);
  DeviceArray<bf16> d_widened(Widen(w));
  cudaStream_t s;
  ASSERT_CUDA_OK(cudaStreamCreate(&s));
  cuda::LinearFp8(d_x.get(), warm, k, d_w.get(), d_scale.get(), n, d_y.get(), Stream{s});
  ASSERT_CUDA_OK(cudaStreamSynchronize(s));
  const uint64_t warmed = cuda::WorkspaceGeneration();
  cuda::LinearFp8(d_x.get(), warm, k, d_w.get(), d_scale.get(), n, d_y.get(), Stream{s});
  cuda::Linear(d_x.get(), warm, k, d_widened.get(), n, d_y.get(), Stream{s});
  cuda::LinearFp8(d_x.get(), small, k, d_w.get(), d_scale.get(), n, d_eager.get(), Stream{s});
  ASSERT_CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_EQ(cuda::WorkspaceGeneration(), warmed) << "a warmed-up workspace grew";

  // Captured at 9 rows (fits): the replay gives the eager bits.
  cudaGraph_t graph = nullptr;
  ASSERT_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cuda::BeginThreadCapture();
  cuda::LinearFp8(d_x.get(), small, k, d_w.get(), d_scale.get(), n, d_graph.get(), Stream{s});
  EXPECT_EQ(cuda::EndThreadCapture(), "");
  ASSERT_CUDA_OK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  ASSERT_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  ASSERT_CUDA_OK(cudaGraphLaunch(exec, s));
  ASSERT_CUDA_OK(cudaStreamSynchronize(s));
  ExpectBitEqual(d_graph.Read(), d_eager.Read(), "graph replay");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  // Captured at 200 rows (must grow): spoilt, nothing allocated.
  ASSERT_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cuda::BeginThreadCapture();
  cuda::LinearFp8(d_x.get(), large, k, d_w.get(), d_scale.get(), n, d_y.get(), Stream{s});
  const std::string spoilt = cuda::EndThreadCapture();
  graph = nullptr;
  if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();
  EXPECT_NE(spoilt.find("has to grow"), std::string::npos) << spoilt;
  EXPECT_EQ(cuda::WorkspaceGeneration(), warmed) << "the workspace changed inside the capture";

  cuda::LinearFp8(d_x.get(), large, k, d_w.get(), d_scale.get(), n, d_y.get(), Stream{s});
  ASSERT_CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_GT(cuda::WorkspaceGeneration(), warmed) << "the eager call did not grow the workspace";
  std::vector<float> want(size_t(large) * n);
  cpu::LinearFp8(x.data(), large, k, w.data(), scale.data(), n, want.data());
  ExpectNearCpu(d_y.Read(), want, x, w.data(), scale, Shape{large, k, n},
                "eager after the spoilt capture");
  const uint64_t grown = cuda::WorkspaceGeneration();
  cuda::ReleaseStream(Stream{s});
  EXPECT_GT(cuda::WorkspaceGeneration(), grown) << "ReleaseStream freed nothing";
  ASSERT_CUDA_OK(cudaStreamDestroy(s));
}

}  // namespace
}  // namespace caduceus::kernels
