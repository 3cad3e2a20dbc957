#include "kernels/cuda/staged_upload.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "kernels/cuda/cuda_common.cuh"

namespace caduceus::kernels::cuda {
namespace {

constexpr size_t kHalf = size_t{32} << 20;
constexpr int kMaxDevices = 64;

struct Staging {
  std::mutex mu;
  bool ready = false;
  char* half[2] = {nullptr, nullptr};
  cudaEvent_t drained[2] = {nullptr, nullptr};  // the copy out of half[i] has finished
  cudaStream_t stream = nullptr;
};

}  // namespace

void StagedUpload(void* dst, const void* src, size_t bytes, int device) {
  if (bytes == 0) return;
  if (device < 0 || device >= kMaxDevices) {
    internal::Fail("StagedUpload", "device ordinal out of range", __FILE__, __LINE__);
  }
  static Staging staging[kMaxDevices];  // kept for the life of the process
  Staging& s = staging[device];
  std::lock_guard<std::mutex> lock(s.mu);
  CADUCEUS_CUDA_CHECK(cudaSetDevice(device));
  if (!s.ready) {
    for (int i = 0; i < 2; ++i) {
      CADUCEUS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&s.half[i]), kHalf,
                                        cudaHostAllocDefault));
      CADUCEUS_CUDA_CHECK(cudaEventCreateWithFlags(&s.drained[i], cudaEventDisableTiming));
    }
    CADUCEUS_CUDA_CHECK(cudaStreamCreate(&s.stream));
    s.ready = true;
  }
  char* out = static_cast<char*>(dst);
  const char* in = static_cast<const char*>(src);
  bool pending[2] = {false, false};
  for (size_t done = 0, chunk = 0; done < bytes; done += kHalf, ++chunk) {
    const int i = static_cast<int>(chunk % 2);
    const size_t len = std::min(kHalf, bytes - done);
    // Wait only for this half's previous copy; the other half keeps the DMA engine busy.
    if (pending[i]) CADUCEUS_CUDA_CHECK(cudaEventSynchronize(s.drained[i]));
    std::memcpy(s.half[i], in + done, len);
    CADUCEUS_CUDA_CHECK(
        cudaMemcpyAsync(out + done, s.half[i], len, cudaMemcpyHostToDevice, s.stream));
    CADUCEUS_CUDA_CHECK(cudaEventRecord(s.drained[i], s.stream));
    pending[i] = true;
  }
  CADUCEUS_CUDA_CHECK(cudaStreamSynchronize(s.stream));
}

}  // namespace caduceus::kernels::cuda
