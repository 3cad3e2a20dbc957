// Every CUDA kernel against its CPU twin (kernels/cpu) on random inputs of several shapes.
// Without a CUDA device every test is skipped (and CTest reports the binary as skipped).
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
#include "kernels/testing/random_tensors.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace caduceus::kernels {
namespace {

#define ASSERT_CUDA_OK(expr)                                                   \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

// Owning device array, filled from / read back into host vectors (synchronously).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : size_(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, std::max<size_t>(1, size_) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), size_ * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  explicit DeviceArray(size_t size) : DeviceArray(std::vector<T>(size)) {}
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }

  T* get() const { return ptr_; }
  std::vector<T> Read() const {
    std::vector<T> host(size_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, size_ * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t size_;
};

using kernels::testing::RandomBf16;
using kernels::testing::RandomFloats;

// |got - want| <= abs_tol + rel_tol * |want| element-wise; reports the first mismatch only.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double abs_tol,
                 double rel_tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = abs_tol + rel_tol * std::fabs(want[i]);
    ASSERT_NEAR(got[i], want[i], tol) << what << " at " << i;
  }
}

void ExpectBitEqual(const std::vector<float>& got, const std::vector<float>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
        << what << " at " << i << ": " << got[i] << " vs " << want[i];
  }
}

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) GTEST_SKIP() << "no CUDA device";
  }
};

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
  // m <= 8 takes the skinny kernel (vector loads when k % 8 == 0, else scalar), larger m cuBLAS.
  for (const Shape s : {Shape{1, 1, 1}, Shape{1, 4096, 513}, Shape{3, 15, 7}, Shape{17, 1000, 33},
                        Shape{64, 4096, 256}, Shape{5, 14336, 65}, Shape{8, 72, 100}}) {
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
  // The per-thread workspace is shared by calls on different streams: they must not race.
  const int m = 9, k = 2048, n = 1024;
  const auto x = RandomFloats(static_cast<size_t>(m) * k, 7);
  const auto w = RandomBf16(static_cast<size_t>(n) * k, 8, 0.05f);
  DeviceArray<float> d_x(x), d_y0(static_cast<size_t>(m) * n), d_y1(static_cast<size_t>(m) * n);
  DeviceArray<bf16> d_w(w);
  cudaStream_t s0, s1;
  ASSERT_CUDA_OK(cudaStreamCreate(&s0));
  ASSERT_CUDA_OK(cudaStreamCreate(&s1));
  for (int rep = 0; rep < 4; ++rep) {
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y0.get(), Stream{s0});
    cuda::Linear(d_x.get(), m, k, d_w.get(), n, d_y1.get(), Stream{s1});
  }
  ExpectBitEqual(d_y1.Read(), d_y0.Read(), "two streams");
  cudaStreamDestroy(s0);
  cudaStreamDestroy(s1);
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

const char* DtypeName(KvDtype dtype) { return dtype == KvDtype::kBf16 ? "bf16" : "f32"; }

// Bit patterns of one element each (f32: 4 bytes, bf16: 2); reports the first mismatch only.
void ExpectCacheBitEqual(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                         KvDtype dtype, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const size_t elem = static_cast<size_t>(KvDtypeBytes(dtype));
  for (size_t i = 0; i < got.size(); i += elem) {
    uint32_t g = 0, w = 0;
    std::memcpy(&g, &got[i], elem);
    std::memcpy(&w, &want[i], elem);
    ASSERT_EQ(g, w) << what << " (" << DtypeName(dtype) << ") at element " << i / elem
                    << ": bits 0x" << std::hex << g << " vs 0x" << w << std::dec;
  }
}

// A layer cache of `dtype` with NaN everywhere (f32 quiet NaN; bf16 0x7FC0, a quiet NaN also once
// widened), so any read of a slot nobody wrote poisons the result. The elements live in k32/v32
// (f32) or k16/v16 (bf16); the other pair stays empty.
struct HostCache {
  int num_blocks, block_size, kv_heads, head_dim;
  KvDtype dtype;
  std::vector<float> k32, v32;
  std::vector<bf16> k16, v16;
  HostCache(int blocks, int bs, int kvh, int hd, KvDtype dt)
      : num_blocks(blocks), block_size(bs), kv_heads(kvh), head_dim(hd), dtype(dt) {
    const size_t n = static_cast<size_t>(blocks) * bs * kvh * hd;
    if (dtype == KvDtype::kBf16) {
      k16.assign(n, bf16{0x7FC0});
      v16 = k16;
    } else {
      k32.assign(n, std::nanf(""));
      v32 = k32;
    }
  }
  // Stores element i as KvCacheWrite would (bf16: rounded to nearest even).
  void Set(int64_t i, float k, float v) {
    if (dtype == KvDtype::kBf16) {
      k16[i] = FloatToBf16(k);
      v16[i] = FloatToBf16(v);
    } else {
      k32[i] = k;
      v32[i] = v;
    }
  }
  void* k() { return dtype == KvDtype::kBf16 ? static_cast<void*>(k16.data()) : k32.data(); }
  void* v() { return dtype == KvDtype::kBf16 ? static_cast<void*>(v16.data()) : v32.data(); }
  // The raw elements, for the device copy and bit comparisons.
  std::vector<uint8_t> KBytes() const { return Bytes(k32, k16); }
  std::vector<uint8_t> VBytes() const { return Bytes(v32, v16); }
  PagedKvLayer Layer(void* k_ptr, void* v_ptr) const {
    return PagedKvLayer{k_ptr, v_ptr, num_blocks, block_size, kv_heads, head_dim, dtype};
  }

 private:
  std::vector<uint8_t> Bytes(const std::vector<float>& f, const std::vector<bf16>& b) const {
    const void* src = dtype == KvDtype::kBf16 ? static_cast<const void*>(b.data()) : f.data();
    const size_t bytes =
        dtype == KvDtype::kBf16 ? b.size() * sizeof(bf16) : f.size() * sizeof(float);
    std::vector<uint8_t> out(bytes);
    if (bytes > 0) std::memcpy(out.data(), src, bytes);
    return out;
  }
};

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

  // The same decode batch alternately on two streams: the split path's per-thread workspace is
  // shared by both, and the calls must not race on it.
  cudaStream_t streams[2];
  ASSERT_CUDA_OK(cudaStreamCreate(&streams[0]));
  ASSERT_CUDA_OK(cudaStreamCreate(&streams[1]));
  DeviceArray<float> d_dec_out1(dec_q.size());
  for (int rep = 0; rep < 3; ++rep) {
    for (int i = 0; i < 2; ++i) {
      cuda::PagedAttention(d_dec_q.get(), q_row, c.q_heads, layer, dec_batch, scale,
                           (i == 0 ? d_dec_out : d_dec_out1).get(), Stream{streams[i]});
    }
  }
  ExpectBitEqual(d_dec_out.Read(), dec_got, "decode batch, stream 0");
  ExpectBitEqual(d_dec_out1.Read(), dec_got, "decode batch, stream 1");
  cudaStreamDestroy(streams[0]);
  cudaStreamDestroy(streams[1]);
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
