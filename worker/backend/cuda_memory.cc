// Device memory for the CUDA backend (built only with CADUCEUS_WITH_CUDA). Copies are
// synchronous with respect to the host and run on the legacy default stream; the model's kernels
// run on a blocking stream (GraphOps::create_stream), which the legacy stream orders with, so a
// copy after them waits for them, and a copy before them completes first.
//
// Large host-to-device copies (the weights at load time) go through a pinned, double-buffered
// staging buffer (kernels/cuda/staged_upload.h).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/staged_upload.h"
#include "worker/backend/device_memory.h"

namespace caduceus::backend {

namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::abort();  // a failed copy leaves the model in an undefined state
  }
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
  if (bytes >= kernels::cuda::kStagedUploadMinBytes) {
    kernels::cuda::StagedUpload(dst, src, bytes, device);
    return;
  }
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
void ToHost(void* dst, const void* src, size_t bytes, int device) {
  Check(cudaSetDevice(device), "cudaSetDevice");
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}
void ToHost2D(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
              size_t rows, int device) {
  if (rows == 0 || width == 0) return;
  Check(cudaSetDevice(device), "cudaSetDevice");
  Check(cudaMemcpy2D(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDeviceToHost),
        "cudaMemcpy2D D2H");
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
                   &FreeBytes, &TotalBytes, &ToHost2D};
}

}  // namespace caduceus::backend
