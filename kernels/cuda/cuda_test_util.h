// Shared by the CUDA kernel tests (kernels_cuda_test.cc, attention_cuda_test.cc: one binary):
// device arrays, comparisons, the fixture that skips without a device, and a NaN-poisoned host KV
// cache in either element type.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "kernels/testing/random_tensors.h"

namespace caduceus::kernels::cuda_test {

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
inline void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double abs_tol,
                 double rel_tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = abs_tol + rel_tol * std::fabs(want[i]);
    ASSERT_NEAR(got[i], want[i], tol) << what << " at " << i;
  }
}

inline void ExpectBitEqual(const std::vector<float>& got, const std::vector<float>& want,
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

inline const char* DtypeName(KvDtype dtype) { return dtype == KvDtype::kBf16 ? "bf16" : "f32"; }

// Bit patterns of one element each (f32: 4 bytes, bf16: 2); reports the first mismatch only.
inline void ExpectCacheBitEqual(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
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

}  // namespace caduceus::kernels::cuda_test
