// A device scratch buffer for the kernel calls on one stream (ForStream below). Linear (split
// activations and partial outputs) and split-K attention (partial softmax results) both need one;
// this is the one implementation.
//
// Begin(stream) orders this call after the previous one when that used another stream (an event
// wait; only the shared default streams' workspaces see several streams), Buffer grows the memory
// stream-ordered (cudaFreeAsync of the old buffer cannot overtake its last user, which is ordered
// before `stream`'s next work), End(stream) records the call's end. A buffer stays valid until a
// later call on the same stream grows it: a CUDA graph that captured a call keeps its pointer, so
// graphs need the workspace sized beforehand (the worker's warm-up step runs the largest step
// first, and a shape runs eagerly once before it is captured), and every growth or release of any
// workspace bumps WorkspaceGenerationCounter(), which graph owners compare before a replay
// (cuda_kernels.h, WorkspaceGeneration). Inside a capture a workspace cannot grow (CUDA refuses
// cudaFreeAsync of memory the graph did not allocate): the capture is spoilt instead
// (SpoilThreadCapture) and its owner reruns the work eagerly.
//
// Under stream capture (CUDA graphs) the calls still work, for one stream: Begin's cross-stream
// wait becomes an external-event node, and End records nothing (an event recorded into a capture
// could not be waited for by the host afterwards: cudaErrorCapturedEvent). A graph must be
// launched on the stream the workspace's eager calls use.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_common.cuh"

namespace caduceus::kernels::cuda::internal {

// One counter for every workspace of the process (a function-local static of an inline function:
// one instance per shared object).
inline std::atomic<uint64_t>& WorkspaceGenerationCounter() {
  static std::atomic<uint64_t> generation{0};
  return generation;
}

// Whether `stream` is being captured. The legacy stream answers cudaErrorStreamCaptureImplicit
// while a blocking stream captures: work on it would join that capture, so treat it as capturing.
inline bool IsCapturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t e = cudaStreamIsCapturing(stream, &status);
  if (e == cudaErrorStreamCaptureImplicit) {
    cudaGetLastError();
    return true;
  }
  CADUCEUS_CUDA_CHECK(e);
  return status != cudaStreamCaptureStatusNone;
}

class StreamWorkspace {
 public:
  explicit StreamWorkspace(int device) : device_(device) {
    CADUCEUS_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  StreamWorkspace(const StreamWorkspace&) = delete;
  StreamWorkspace& operator=(const StreamWorkspace&) = delete;

  // Runs at thread exit, when the process may already be tearing CUDA down: errors are ignored.
  ~StreamWorkspace() {
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return;
    if (cudaSetDevice(device_) != cudaSuccess) return;
    WorkspaceGenerationCounter().fetch_add(1);
    cudaEventSynchronize(done_);
    cudaFree(buffer_);
    cudaEventDestroy(done_);
    cudaSetDevice(previous);
  }

  void Begin(cudaStream_t stream) {
    if (used_ && stream != last_stream_) {
      CADUCEUS_CUDA_CHECK(cudaStreamWaitEvent(
          stream, done_, IsCapturing(stream) ? cudaEventWaitExternal : cudaEventWaitDefault));
    }
    last_stream_ = stream;
    used_ = true;
  }
  // At least `bytes`, for work enqueued on `stream` until End(stream). Grows geometrically.
  void* Buffer(size_t bytes, cudaStream_t stream) {
    if (bytes > capacity_ && IsCapturing(stream)) {
      // Growing means freeing the old buffer, which CUDA refuses inside a capture (only a
      // graph's own allocations can be freed there). The graph could not be replayed anyway:
      // spoil it (the owner reruns the work eagerly, and the buffer grows then), record nothing.
      SpoilThreadCapture("a kernel workspace has to grow (" + std::to_string(capacity_) + " -> " +
                         std::to_string(bytes) + " bytes) inside a graph capture");
      return buffer_;
    }
    if (bytes > capacity_) {
      const size_t grown = capacity_ * 2 > bytes ? capacity_ * 2 : bytes;
      if (buffer_ != nullptr) CADUCEUS_CUDA_CHECK(cudaFreeAsync(buffer_, stream));
      CADUCEUS_CUDA_CHECK(cudaMallocAsync(&buffer_, grown, stream));
      capacity_ = grown;
      WorkspaceGenerationCounter().fetch_add(1);
    }
    return buffer_;
  }
  void End(cudaStream_t stream) {
    if (!IsCapturing(stream)) CADUCEUS_CUDA_CHECK(cudaEventRecord(done_, stream));
  }
  // Waits for the last call's work (before its owner releases what that work used).
  void Synchronize() { cudaEventSynchronize(done_); }
  // Bytes the buffer holds: less than a Buffer call asked for when it refused to grow inside a
  // capture, a call that must then enqueue nothing past them.
  size_t capacity() const { return capacity_; }

 private:
  int device_;
  void* buffer_ = nullptr;
  size_t capacity_ = 0;
  cudaEvent_t done_ = nullptr;
  cudaStream_t last_stream_ = nullptr;
  bool used_ = false;
};

// One T per (host thread, current device), constructed from the device ordinal on first use and
// destroyed at thread exit: concurrent host threads never share a workspace (or a cuBLAS handle).
template <typename T>
T& PerThreadForCurrentDevice() {
  thread_local std::map<int, T> per_device;
  int device = 0;
  CADUCEUS_CUDA_CHECK(cudaGetDevice(&device));
  auto it = per_device.find(device);
  if (it == per_device.end()) it = per_device.try_emplace(device, device).first;
  return it->second;
}

// The default streams, which every host thread may use at once.
inline bool IsSharedDefaultStream(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

template <typename T>
struct StreamRegistry {
  std::mutex mu;
  std::map<cudaStream_t, std::unique_ptr<T>> items;
};
// Never destroyed: at process exit CUDA may already be torn down (the driver frees the memory).
template <typename T>
StreamRegistry<T>& RegistryOf() {
  static auto* registry = new StreamRegistry<T>;
  return *registry;
}

// The T of the kernel calls on `stream`: one per created stream, made on the first call on it
// (for the current device, which must be the stream's) and kept until ReleaseForStream(stream).
// Keyed by the stream, not by the calling thread, because a worker warms its model up on one
// thread and steps it on another: keyed by thread, the warm-up sized buffers that the steps never
// used (gigabytes for 8192-token steps, allocated a second time after the KV cache had taken the
// device), and the step thread's first capture of a shape could need to grow its workspace inside
// the capture. Calls on one stream come from one thread at a time (the stream's owner). The
// default streams are shared by every thread: their T stays per (host thread, device).
template <typename T>
T& ForStream(cudaStream_t stream) {
  if (IsSharedDefaultStream(stream)) return PerThreadForCurrentDevice<T>();
  StreamRegistry<T>& registry = RegistryOf<T>();
  std::lock_guard<std::mutex> lock(registry.mu);
  std::unique_ptr<T>& slot = registry.items[stream];
  if (slot == nullptr) {
    int device = 0;
    CADUCEUS_CUDA_CHECK(cudaGetDevice(&device));
    slot = std::make_unique<T>(device);
  }
  return *slot;
}

// Destroys the T of `stream` (after its last call's work), before the stream is destroyed.
template <typename T>
void ReleaseForStream(cudaStream_t stream) {
  std::unique_ptr<T> released;
  {
    StreamRegistry<T>& registry = RegistryOf<T>();
    std::lock_guard<std::mutex> lock(registry.mu);
    auto it = registry.items.find(stream);
    if (it == registry.items.end()) return;
    released = std::move(it->second);
    registry.items.erase(it);
  }
}

}  // namespace caduceus::kernels::cuda::internal
