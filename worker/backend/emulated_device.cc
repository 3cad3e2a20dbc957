#include "worker/backend/emulated_device.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cpu/cpu_kernels.h"

namespace caduceus::backend {

namespace {

namespace cpu = kernels::cpu;
using kernels::AttentionBatch;
using kernels::PagedKvLayer;
using kernels::Stream;

class Registry {
 public:
  static Registry& Get() {
    static Registry* registry = new Registry();  // outlives every static DeviceArray
    return *registry;
  }

  void* Allocate(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (allocated_ + static_cast<int64_t>(bytes) > capacity_) return nullptr;
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (p == nullptr) return nullptr;
    std::memset(p, 0xFF, bytes);  // NaN / -1: unwritten memory shows up in results
    blocks_[static_cast<const char*>(p)] = bytes;
    allocated_ += static_cast<int64_t>(bytes);
    peak_ = std::max(peak_, allocated_);
    return p;
  }

  void Free(void* p) {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(static_cast<const char*>(p));
    if (it == blocks_.end()) Die("free of a pointer that is not an emulated device allocation", "");
    allocated_ -= static_cast<int64_t>(it->second);
    blocks_.erase(it);
    std::free(p);
  }

  // Whether [p, p + bytes) lies inside one allocation.
  bool Contains(const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.upper_bound(c);
    if (it == blocks_.begin()) return false;
    --it;
    return c >= it->first && c + bytes <= it->first + it->second;
  }

  int64_t capacity() const { return capacity_; }
  int64_t allocated() {
    std::lock_guard<std::mutex> lock(mu_);
    return allocated_;
  }
  int64_t peak() {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }

  [[noreturn]] static void Die(const char* what, const char* detail) {
    std::fprintf(stderr, "emulated device: %s%s\n", what, detail);
    std::abort();  // what a GPU would do with a host pointer, minus the guesswork
  }

 private:
  Registry() {
    const char* env = std::getenv("CADUCEUS_EMULATED_DEVICE_BYTES");
    if (env != nullptr && std::atoll(env) > 0) capacity_ = std::atoll(env);
  }
  std::mutex mu_;
  std::map<const char*, size_t> blocks_;
  int64_t capacity_ = int64_t{4} << 30;
  int64_t allocated_ = 0;
  int64_t peak_ = 0;
};

// Aborts unless `p` (when not null) points at `bytes` of emulated device memory.
void OnDevice(const void* p, size_t bytes, const char* what) {
  if (p != nullptr && !Registry::Get().Contains(p, bytes)) {
    Registry::Die("not device memory: ", what);
  }
}
void OnHost(const void* p, size_t bytes, const char* what) {
  if (bytes > 0 && Registry::Get().Contains(p, 1)) Registry::Die("not host memory: ", what);
}

void* Alloc(size_t bytes, int) { return Registry::Get().Allocate(bytes); }
void Free(void* p, int) { Registry::Get().Free(p); }
void ToDevice(void* dst, const void* src, size_t bytes, int) {
  OnDevice(dst, bytes, "to_device destination");
  OnHost(src, bytes, "to_device source");
  std::memcpy(dst, src, bytes);
}
thread_local int64_t bytes_to_host = 0;

void ToHost(void* dst, const void* src, size_t bytes, int) {
  bytes_to_host += static_cast<int64_t>(bytes);
  OnDevice(src, bytes, "to_host source");
  OnHost(dst, bytes, "to_host destination");
  std::memcpy(dst, src, bytes);
}
void ToHost2D(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
              size_t rows, int) {
  if (rows == 0 || width == 0) return;
  bytes_to_host += static_cast<int64_t>(rows * width);
  if (dst_pitch < width || src_pitch < width) Registry::Die("to_host_2d pitch below the width", "");
  OnDevice(src, src_pitch * (rows - 1) + width, "to_host_2d source");
  OnHost(dst, dst_pitch * (rows - 1) + width, "to_host_2d destination");
  HostMemoryOps().to_host_2d(dst, dst_pitch, src, src_pitch, width, rows, -1);
}
void DeviceCopy(void* dst, const void* src, size_t bytes, int) {
  OnDevice(dst, bytes, "device_copy destination");
  OnDevice(src, bytes, "device_copy source");
  std::memcpy(dst, src, bytes);
}
int64_t FreeBytes(int) { return Registry::Get().capacity() - Registry::Get().allocated(); }
int64_t TotalBytes(int) { return Registry::Get().capacity(); }

// The kernels: every pointer argument must be device memory (extents checked where the
// signature gives them), then the CPU kernel runs.
constexpr size_t F = sizeof(float), I = sizeof(int32_t), B = sizeof(bf16);

void EmbeddingGather(const bf16* table, int64_t row_begin, int64_t rows, int32_t hidden,
                     const int32_t* ids, int32_t n, float* out, Stream s) {
  OnDevice(table, rows * hidden * B, "EmbeddingGather table");
  OnDevice(ids, n * I, "EmbeddingGather ids");
  OnDevice(out, size_t(n) * hidden * F, "EmbeddingGather out");
  cpu::EmbeddingGather(table, row_begin, rows, hidden, ids, n, out, s);
}
void RmsNorm(const float* x, const bf16* w, int32_t n, int32_t hidden, float eps, float* out,
             Stream s) {
  OnDevice(x, size_t(n) * hidden * F, "RmsNorm x");
  OnDevice(w, hidden * B, "RmsNorm weight");
  OnDevice(out, size_t(n) * hidden * F, "RmsNorm out");
  cpu::RmsNorm(x, w, n, hidden, eps, out, s);
}
void AddRmsNorm(float* residual, const float* x, const bf16* w, int32_t n, int32_t hidden,
                float eps, float* out, Stream s) {
  OnDevice(residual, size_t(n) * hidden * F, "AddRmsNorm residual");
  OnDevice(x, size_t(n) * hidden * F, "AddRmsNorm x");
  OnDevice(w, hidden * B, "AddRmsNorm weight");
  OnDevice(out, size_t(n) * hidden * F, "AddRmsNorm out");
  cpu::AddRmsNorm(residual, x, w, n, hidden, eps, out, s);
}
void Linear(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y, Stream s) {
  OnDevice(x, size_t(m) * k * F, "Linear x");
  OnDevice(w, size_t(n) * k * B, "Linear w");
  OnDevice(y, size_t(m) * n * F, "Linear y");
  cpu::Linear(x, m, k, w, n, y, s);
}
void LinearFp8(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
               int32_t n, float* y, Stream s) {
  OnDevice(x, size_t(m) * k * F, "LinearFp8 x");
  OnDevice(w, size_t(n) * k, "LinearFp8 w");
  OnDevice(scale, n * F, "LinearFp8 scale");
  OnDevice(y, size_t(m) * n * F, "LinearFp8 y");
  cpu::LinearFp8(x, m, k, w, scale, n, y, s);
}
void LinearArgmax(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, int32_t* index,
                  float* value, Stream s) {
  OnDevice(x, size_t(m) * k * F, "LinearArgmax x");
  OnDevice(w, size_t(n) * k * B, "LinearArgmax w");
  OnDevice(index, m * I, "LinearArgmax index");
  OnDevice(value, m * F, "LinearArgmax value");
  cpu::LinearArgmax(x, m, k, w, n, index, value, s);
}
void Rope(float* x, int64_t row_stride, const int32_t* positions, int32_t n, int32_t heads,
          int32_t head_dim, const float* inv_freq, Stream s) {
  OnDevice(x, n > 0 ? ((n - 1) * row_stride + heads * head_dim) * F : 0, "Rope x");
  OnDevice(positions, n * I, "Rope positions");
  OnDevice(inv_freq, head_dim / 2 * F, "Rope inv_freq");
  cpu::Rope(x, row_stride, positions, n, heads, head_dim, inv_freq, s);
}
void SiluMul(const float* gate_up, int32_t n, int32_t d, float* out, Stream s) {
  OnDevice(gate_up, size_t(n) * 2 * d * F, "SiluMul gate_up");
  OnDevice(out, size_t(n) * d * F, "SiluMul out");
  cpu::SiluMul(gate_up, n, d, out, s);
}
void KvCacheWrite(const float* k, const float* v, int64_t row_stride, const int32_t* slots,
                  int32_t n, PagedKvLayer cache, Stream s) {
  const size_t row = size_t(cache.kv_heads) * cache.head_dim;
  const size_t extent = n > 0 ? ((n - 1) * row_stride + row) * F : 0;
  OnDevice(k, extent, "KvCacheWrite k");
  OnDevice(v, extent, "KvCacheWrite v");
  OnDevice(slots, n * I, "KvCacheWrite slot_mapping");
  const size_t cache_bytes =
      size_t(cache.num_blocks) * cache.block_size * row * kernels::KvDtypeBytes(cache.dtype);
  OnDevice(cache.k, cache_bytes, "KvCacheWrite cache.k");
  OnDevice(cache.v, cache_bytes, "KvCacheWrite cache.v");
  cpu::KvCacheWrite(k, v, row_stride, slots, n, cache, s);
}
void PagedAttention(const float* q, int64_t q_row_stride, int32_t q_heads, PagedKvLayer cache,
                    const AttentionBatch& batch, float scale, float* out, Stream s) {
  OnDevice(batch.query_start, (batch.num_seqs + 1) * I, "PagedAttention query_start");
  OnDevice(batch.block_tables, size_t(batch.num_seqs) * batch.max_blocks_per_seq * I,
           "PagedAttention block_tables");
  // Only now may the host read query_start (it is host-addressable here, unlike on a GPU).
  const int32_t rows = batch.query_start[batch.num_seqs];
  OnDevice(batch.positions, rows * I, "PagedAttention positions");
  OnDevice(q, rows > 0 ? ((rows - 1) * q_row_stride + q_heads * cache.head_dim) * F : 0,
           "PagedAttention q");
  OnDevice(out, size_t(rows) * q_heads * cache.head_dim * F, "PagedAttention out");
  const size_t cache_bytes = size_t(cache.num_blocks) * cache.block_size * cache.kv_heads *
                             cache.head_dim * kernels::KvDtypeBytes(cache.dtype);
  OnDevice(cache.k, cache_bytes, "PagedAttention cache.k");
  OnDevice(cache.v, cache_bytes, "PagedAttention cache.v");
  cpu::PagedAttention(q, q_row_stride, q_heads, cache, batch, scale, out, s);
}

}  // namespace

KernelTable EmulatedDeviceTable() {
  return KernelTable{kEmulatedDevice, &EmbeddingGather, &RmsNorm, &AddRmsNorm, &Linear,
                     &LinearFp8, &LinearArgmax, &Rope, &SiluMul, &KvCacheWrite, &PagedAttention,
                     MemoryOps{false, 0, &Alloc, &Free, &ToDevice, &ToHost, &DeviceCopy,
                               &FreeBytes, &TotalBytes, &ToHost2D},
                     GraphOps{}};
}

int64_t EmulatedDeviceAllocatedBytes() { return Registry::Get().allocated(); }
int64_t EmulatedDevicePeakBytes() { return Registry::Get().peak(); }
int64_t EmulatedDeviceBytesToHostOnThisThread() { return bytes_to_host; }

}  // namespace caduceus::backend
