// Device memory for the CUDA backend (built only with CADUCEUS_WITH_CUDA). Copies are
// synchronous with respect to the host: the model enqueues its kernels on the legacy default
// stream, so a copy after them waits for them, and a copy before them completes first.
//
// Large host-to-device copies (the weights at load time) go through a pinned staging buffer in
// two halves: the host fills one half from the source (for weights: the memory-mapped
// safetensors, so this memcpy is where the file is read) while the DMA engine drains the other.
// A pageable cudaMemcpy would do the disk read, a bounce copy and the DMA one after the other;
// overlapped, loading runs at the slower of disk and PCIe bandwidth. The staging stream is a
// blocking stream: it orders itself with the legacy default stream like a plain cudaMemcpy.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "worker/backend/device_memory.h"

namespace caduceus::backend {

namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::abort();  // a failed copy leaves the model in an undefined state
  }
}

// Below this a plain cudaMemcpy wins (no staging round trip to amortize).
constexpr size_t kStagedCopyMin = size_t{8} << 20;
// Each half of the staging buffer.
constexpr size_t kStagingHalf = size_t{32} << 20;
constexpr int kMaxDevices = 64;

// One per device, created on first use, kept for the life of the process (64 MiB pinned).
struct Staging {
  std::mutex mu;
  bool ready = false;
  char* half[2] = {nullptr, nullptr};
  cudaEvent_t drained[2] = {nullptr, nullptr};  // the copy out of half[i] has finished
  cudaStream_t stream = nullptr;
};

Staging& StagingFor(int device) {
  static Staging staging[kMaxDevices];
  return staging[device];
}

void StagedToDevice(char* dst, const char* src, size_t bytes, int device) {
  Staging& s = StagingFor(device);
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.ready) {
    for (int i = 0; i < 2; ++i) {
      Check(cudaHostAlloc(reinterpret_cast<void**>(&s.half[i]), kStagingHalf,
                          cudaHostAllocDefault),
            "cudaHostAlloc (staging)");
      Check(cudaEventCreateWithFlags(&s.drained[i], cudaEventDisableTiming), "cudaEventCreate");
    }
    Check(cudaStreamCreate(&s.stream), "cudaStreamCreate (staging)");
    s.ready = true;
  }
  bool pending[2] = {false, false};
  for (size_t done = 0, chunk = 0; done < bytes; done += kStagingHalf, ++chunk) {
    const int i = static_cast<int>(chunk % 2);
    const size_t len = std::min(kStagingHalf, bytes - done);
    // Wait only for this half's previous copy; the other half keeps the DMA engine busy.
    if (pending[i]) Check(cudaEventSynchronize(s.drained[i]), "cudaEventSynchronize (staging)");
    std::memcpy(s.half[i], src + done, len);
    Check(cudaMemcpyAsync(dst + done, s.half[i], len, cudaMemcpyHostToDevice, s.stream),
          "cudaMemcpyAsync H2D (staging)");
    Check(cudaEventRecord(s.drained[i], s.stream), "cudaEventRecord (staging)");
    pending[i] = true;
  }
  Check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize (staging)");
}

void* CudaAlloc(size_t bytes, int device) {
  Check(cudaSetDevice(device), "cudaSetDevice");
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so the caller can report it
    return nullptr;
  }
  return p;
}
void CudaFree(void* p, int device) {
  cudaSetDevice(device);
  cudaFree(p);
}
void ToDevice(void* dst, const void* src, size_t bytes, int device) {
  Check(cudaSetDevice(device), "cudaSetDevice");
  if (bytes >= kStagedCopyMin && device >= 0 && device < kMaxDevices) {
    StagedToDevice(static_cast<char*>(dst), static_cast<const char*>(src), bytes, device);
    return;
  }
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
void ToHost(void* dst, const void* src, size_t bytes, int device) {
  Check(cudaSetDevice(device), "cudaSetDevice");
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}
void DeviceCopy(void* dst, const void* src, size_t bytes, int device) {
  Check(cudaSetDevice(device), "cudaSetDevice");
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy D2D");
}
void MemInfo(int device, size_t* free_b, size_t* total) {
  Check(cudaSetDevice(device), "cudaSetDevice");
  Check(cudaMemGetInfo(free_b, total), "cudaMemGetInfo");
}
int64_t FreeBytes(int device) {
  size_t free_b = 0, total = 0;
  MemInfo(device, &free_b, &total);
  return static_cast<int64_t>(free_b);
}
int64_t TotalBytes(int device) {
  size_t free_b = 0, total = 0;
  MemInfo(device, &free_b, &total);
  return static_cast<int64_t>(total);
}

}  // namespace

MemoryOps CudaMemoryOps(int device) {
  return MemoryOps{false, device, &CudaAlloc, &CudaFree, &ToDevice, &ToHost, &DeviceCopy,
                   &FreeBytes, &TotalBytes};
}

}  // namespace caduceus::backend
