// Memory of a backend's device, as plain function pointers next to its kernels (KernelTable), so
// model code allocates and copies without knowing the device. For the CPU the "device" is host
// memory and every copy is a memcpy; model code may skip copies when `host` is true.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace caduceus::backend {

struct MemoryOps {
  bool host = true;  // device pointers are host pointers
  int device = -1;   // CUDA ordinal, -1 for the host
  // nullptr when the memory is not available.
  void* (*alloc)(size_t bytes, int device) = nullptr;
  void (*free)(void* ptr, int device) = nullptr;
  void (*to_device)(void* dst, const void* host_src, size_t bytes, int device) = nullptr;
  void (*to_host)(void* host_dst, const void* src, size_t bytes, int device) = nullptr;
  void (*device_copy)(void* dst, const void* src, size_t bytes, int device) = nullptr;
  // Bytes free on the device, and its capacity (host: 0, meaning "use the memory budget flags").
  int64_t (*free_bytes)(int device) = nullptr;
  int64_t (*total_bytes)(int device) = nullptr;
  // `rows` rows of `width` bytes from device memory with `src_pitch` bytes between row starts to
  // host memory with `dst_pitch` (pitches >= width). One call instead of a copy per row, and it
  // lets the vocab-parallel logits land in row order without a host pass (cudaMemcpy2D).
  void (*to_host_2d)(void* host_dst, size_t dst_pitch, const void* src, size_t src_pitch,
                     size_t width, size_t rows, int device) = nullptr;
};

MemoryOps HostMemoryOps();
// Defined only in CUDA builds (worker/backend/cuda_memory.cc).
MemoryOps CudaMemoryOps(int device);

// A growable buffer of T in a backend's memory. Contents are not preserved when it grows.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(const MemoryOps* ops) : ops_(ops) {}
  DeviceArray(DeviceArray&& o) noexcept { *this = std::move(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(ops_, o.ops_);
    std::swap(data_, o.data_);
    std::swap(capacity_, o.capacity_);
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (data_ != nullptr) ops_->free(data_, ops_->device);
  }

  // Makes room for n elements; false when the device is out of memory.
  bool Reserve(size_t n) {
    if (n <= capacity_) return true;
    if (data_ != nullptr) ops_->free(data_, ops_->device);
    data_ = static_cast<T*>(ops_->alloc(n * sizeof(T), ops_->device));
    capacity_ = data_ != nullptr ? n : 0;
    return data_ != nullptr;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  const MemoryOps* ops_ = nullptr;
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace caduceus::backend
