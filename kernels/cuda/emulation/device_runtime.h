// What the emulated CUDA runtime (cudart.cc) offers the emulated launch (cuda_emulation.h) and
// the emulated cuBLAS (cublas.cc): the registry of emulated device memory and launch checks.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace caduceus::cuda_emulation {

// True when [p, p + bytes) lies inside one live emulated device allocation.
bool IsDeviceRange(const void* p, size_t bytes);

// Aborts, naming the argument, when a kernel argument is a pointer into anything but emulated
// device memory (on a GPU that is an illegal address, or silently wrong data with UVA).
void CheckDevicePointer(const void* p, int argument_index);

// The runtime's launch checks (grid and block limits, a live stream). On failure records the
// error for cudaGetLastError and returns false.
bool CheckLaunch(dim3 grid, dim3 block, cudaStream_t stream);

// Stream work (kernels, async copies and memsets, cuBLAS calls, event records) is queued, in
// issue order, and runs only when the host synchronizes: cudaStreamSynchronize,
// cudaDeviceSynchronize, cudaEventSynchronize/Query, cudaStreamQuery, a synchronous copy or free,
// an async copy to or from pageable host memory (synchronous in CUDA too), or a NCCL collective.
// So host code that reads a result, or reuses a pinned buffer, without waiting for the stream
// sees what a GPU would let it see: stale data. One FIFO for all streams is one legal GPU order.
// Work for a stream that is being captured is recorded into its graph instead (BeginCapture).
void Enqueue(cudaStream_t stream, std::function<void()> work);
// Runs everything queued (the host-side wait of a synchronizing call). It also invalidates the
// calling thread's captures, as CUDA does for a synchronizing call in a capturing thread.
void Drain();
// Whether anything is queued (cudaStreamQuery's "not ready").
bool HasQueuedWork();

// Stream capture (CUDA graphs). Between BeginCapture and EndCapture, work Enqueued on `stream` is
// recorded as the graph's nodes, in issue order, and does not run. Work on the legacy default
// stream meanwhile invalidates every capture (CUDA's implicit synchronization with a capturing
// blocking stream), and a synchronizing call the captures of its thread; EndCapture then fails
// with cudaErrorStreamCaptureInvalidated and says why.
cudaError_t BeginCapture(cudaStream_t stream);
cudaError_t EndCapture(cudaStream_t stream, std::vector<std::function<void()>>* nodes,
                       std::string* why);
bool IsCapturing(cudaStream_t stream);
void InvalidateCapture(cudaStream_t stream, const std::string& why);
// Whether the calling thread is capturing a stream; if so, invalidates its captures with `why`.
// For the calls CUDA refuses in a capturing thread (cudaStreamCaptureModeThreadLocal: cudaMalloc,
// cudaFree), which then fail themselves.
bool InvalidateCallerCaptures(const std::string& why);
// cudaSuccess for a live stream handle (or the default stream), else the recorded error.
cudaError_t CheckStreamHandle(cudaStream_t stream);

// Records `error` as the calling thread's last error (cudaGetLastError) and returns it.
cudaError_t SetLastError(cudaError_t error);

}  // namespace caduceus::cuda_emulation
