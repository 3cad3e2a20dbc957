// The CUDA emulation itself: kernels written here in CUDA syntax (compiled through
// cuda_emulation.h) check that barriers and shuffles behave as on a GPU, that misuse is fatal with
// a message that names the line, and that the emulated runtime refuses what a GPU would.
#include <cuda_runtime.h>

#include <functional>
#include <thread>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/emulation/cuda_emulation.h"

namespace caduceus::cuda_emulation {
namespace {

constexpr int kThreads = 128;

// Block sum: warp butterflies, then warp 0 combines the per-warp sums after a barrier.
__global__ void BlockSumKernel(const int* in, int* out) {
  __shared__ int warp_sums[kThreads / 32];
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    out[blockIdx.x] = total;
  }
}

// Reads another warp's shared slot without the barrier in between: a data race on a GPU.
// `salt` differs per launch, so a slot left from an earlier launch is not the right value.
__global__ void MissingBarrierKernel(int salt, int* out) {
  __shared__ int slots[kThreads];
  slots[threadIdx.x] = static_cast<int>(threadIdx.x) + salt;
  int one = 0;
  for (int i = 0; i < 3; ++i) one = __shfl_xor_sync(0xffffffffu, 1, 1);  // work, no barrier
  out[threadIdx.x] = slots[(threadIdx.x + 64) % kThreads] - salt + one - 1;
}

__global__ void DivergentBarrierKernel(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void ShuffleAfterExitKernel(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

__global__ void WriteKernel(int* out) { out[threadIdx.x] = 7; }

__global__ void AddKernel(int* data, int value) { data[threadIdx.x] += value; }

template <typename T>
T* DeviceCopy(const std::vector<T>& host) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> HostCopy(const T* p, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

TEST(CudaEmulationTest, ShufflesAndBarriersComputeABlockSum) {
  const int blocks = 3;
  std::vector<int> in(blocks * kThreads);
  std::iota(in.begin(), in.end(), 0);
  int* d_in = DeviceCopy(in);
  int* d_out = DeviceCopy(std::vector<int>(blocks, -1));
  LaunchKernel(BlockSumKernel, dim3(blocks), dim3(kThreads), nullptr, d_in, d_out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const auto out = HostCopy(d_out, blocks);
  for (int b = 0; b < blocks; ++b) {
    const int first = b * kThreads, last = first + kThreads - 1;
    EXPECT_EQ(out[b], (first + last) * kThreads / 2) << "block " << b;
  }
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST(CudaEmulationTest, AMissingBarrierReadsStaleSharedMemory) {
  int* d_out = DeviceCopy(std::vector<int>(kThreads, 0));
  std::vector<int> race_free(kThreads);
  for (int t = 0; t < kThreads; ++t) race_free[t] = (t + 64) % kThreads;
  int salt = 1000;
  for (const ThreadOrder order : {ThreadOrder::kForward, ThreadOrder::kReverse}) {
    const ThreadOrder before = GetThreadOrder();
    SetThreadOrder(order);
    LaunchKernel(MissingBarrierKernel, dim3(1), dim3(kThreads), nullptr, salt, d_out);
    SetThreadOrder(before);
    salt += 1000;
    // Warps 0 and 1 (forward) or 2 and 3 (reverse) read slots whose warp has not run yet.
    const auto got = HostCopy(d_out, kThreads);
    EXPECT_NE(got, race_free) << "order " << static_cast<int>(order);
  }
  cudaFree(d_out);
}

TEST(CudaEmulationDeathTest, ABarrierSomeThreadsSkipIsFatal) {
  int* d_out = DeviceCopy(std::vector<int>(kThreads, 0));
  // The grid runs when the host synchronizes.
  EXPECT_DEATH(
      {
        LaunchKernel(DivergentBarrierKernel, dim3(1), dim3(kThreads), nullptr, d_out);
        cudaDeviceSynchronize();
      },
      "__syncthreads at .*emulation_test.cc:[0-9]+ is not reached by every thread");
  cudaFree(d_out);
}

TEST(CudaEmulationDeathTest, AShuffleWithAnExitedLaneIsFatal) {
  int* d_out = DeviceCopy(std::vector<int>(32, 0));
  EXPECT_DEATH(
      {
        LaunchKernel(ShuffleAfterExitKernel, dim3(1), dim3(32), nullptr, d_out);
        cudaDeviceSynchronize();
      },
      "lane 5 is exited");
  cudaFree(d_out);
}

TEST(CudaEmulationDeathTest, AHostPointerArgumentIsFatal) {
  std::vector<int> host(32);
  EXPECT_DEATH(LaunchKernel(WriteKernel, dim3(1), dim3(32), nullptr, host.data()),
               "kernel argument 0 .* is not device memory");
}

TEST(CudaEmulationTest, StreamWorkRunsWhenTheHostSynchronizes) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  int* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), 32 * sizeof(int), 0), cudaSuccess);
  pinned[0] = -5;
  LaunchKernel(WriteKernel, dim3(1), dim3(32), nullptr, d);
  ASSERT_EQ(cudaMemcpyAsync(pinned, d, 32 * sizeof(int), cudaMemcpyDeviceToHost, nullptr),
            cudaSuccess);
  // Nothing has run: a host that reads now (no synchronization) reads what was there before.
  EXPECT_EQ(pinned[0], -5);
  EXPECT_EQ(cudaStreamQuery(nullptr), cudaErrorNotReady);  // and the query lets it run
  EXPECT_EQ(cudaStreamQuery(nullptr), cudaSuccess);
  EXPECT_EQ(pinned[0], 7);
  cudaFreeHost(pinned);
  cudaFree(d);
}

TEST(CudaEmulationTest, Memcpy2DCopiesEachRowIntoItsPitch) {
  // 3 rows of 4 ints, device pitch 5 ints: the rows land at host pitch 6, the gaps untouched.
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 15 * sizeof(int)), cudaSuccess);
  std::vector<int> src(15);
  for (int i = 0; i < 15; ++i) src[i] = i;
  ASSERT_EQ(cudaMemcpy(d, src.data(), src.size() * sizeof(int), cudaMemcpyHostToDevice),
            cudaSuccess);
  std::vector<int> dst(18, -7);
  ASSERT_EQ(cudaMemcpy2D(dst.data(), 6 * sizeof(int), d, 5 * sizeof(int), 4 * sizeof(int), 3,
                         cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(dst, (std::vector<int>{0, 1, 2, 3, -7, -7, 5, 6, 7, 8, -7, -7, 10, 11, 12, 13, -7, -7}));
  // A pitch below the width, and a last row that runs past the allocation.
  EXPECT_EQ(cudaMemcpy2D(dst.data(), 3 * sizeof(int), d, 5 * sizeof(int), 4 * sizeof(int), 3,
                         cudaMemcpyDeviceToHost),
            cudaErrorInvalidPitchValue);
  EXPECT_EQ(cudaMemcpy2D(dst.data(), 6 * sizeof(int), d, 6 * sizeof(int), 4 * sizeof(int), 3,
                         cudaMemcpyDeviceToHost),
            cudaErrorInvalidValue);
  cudaGetLastError();
  cudaFree(d);
}

TEST(CudaEmulationTest, TheRuntimeRefusesWhatAGpuWould) {
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 64 * sizeof(int)), cudaSuccess);
  std::vector<int> host(65);
  // Past the allocation's end, and the wrong direction.
  EXPECT_EQ(cudaMemcpy(d, host.data(), 65 * sizeof(int), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), host.data() + 1, 4, cudaMemcpyDeviceToHost),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(host.data()), cudaErrorInvalidValue);
  cudaGetLastError();
  // A block of 2048 threads: the launch fails, nothing runs, cudaGetLastError reports it once.
  LaunchKernel(WriteKernel, dim3(1), dim3(2048), nullptr, d);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // Fresh allocations are poisoned (0xff bytes: -1 ints, NaN floats), not zero.
  EXPECT_EQ(HostCopy(d, 1)[0], -1);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  cudaFree(d);
}

TEST(CudaEmulationTest, ACapturedGraphRunsEachTimeItIsLaunched) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  LaunchKernel(AddKernel, dim3(1), dim3(32), s, d, 5);
  LaunchKernel(AddKernel, dim3(1), dim3(32), s, d, 1);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  size_t nodes = 0;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 2u);
  // Capturing recorded the launches; it ran nothing.
  EXPECT_EQ(HostCopy(d, 32)[0], 0);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(HostCopy(d, 32), std::vector<int>(32, 12));
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaErrorInvalidValue);
  cudaGetLastError();
  cudaStreamDestroy(s);
  cudaFree(d);
}

// What CUDA forbids while a blocking stream captures: a synchronizing call, work on the legacy
// default stream (both would synchronize with the capture), stream-ordered allocation (a graph
// memory node, not emulated). Each invalidates the capture, and its end says so.
TEST(CudaEmulationTest, WhatWouldSynchronizeWithACaptureInvalidatesIt) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  const std::vector<std::function<void()>> violations = {
      [&] { HostCopy(d, 32); },
      [&] { LaunchKernel(AddKernel, dim3(1), dim3(32), nullptr, d, 1); },
      [&] {
        void* p = nullptr;
        cudaMallocAsync(&p, 64, s);
      },
  };
  for (size_t i = 0; i < violations.size(); ++i) {
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    LaunchKernel(AddKernel, dim3(1), dim3(32), s, d, 100);
    violations[i]();
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated) << i;
    EXPECT_EQ(graph, nullptr);
    cudaGetLastError();
  }
  // The captured launches never ran; the legacy-stream one did.
  EXPECT_EQ(HostCopy(d, 32)[0], 1);
  // The legacy default stream cannot be captured.
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeThreadLocal),
            cudaErrorStreamCaptureUnsupported);
  cudaGetLastError();
  cudaStreamDestroy(s);
  cudaFree(d);
}

// What CUDA refuses outright in a capture: cudaMalloc and cudaFree in the capturing thread, and
// cudaFreeAsync of memory the graph did not allocate. The call fails and the capture is spoilt;
// another thread may still allocate (thread-local capture mode).
TEST(CudaEmulationTest, AllocationCallsACaptureRefusesFail) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  int* other = DeviceCopy(std::vector<int>(32, 0));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  const std::vector<std::function<cudaError_t()>> refused = {
      [&] {
        void* p = nullptr;
        return cudaMalloc(&p, 64);
      },
      [&] { return cudaFree(other); },
      [&] { return cudaFreeAsync(other, s); },
  };
  const cudaError_t expected[] = {cudaErrorStreamCaptureUnsupported,
                                  cudaErrorStreamCaptureUnsupported, cudaErrorInvalidValue};
  for (size_t i = 0; i < refused.size(); ++i) {
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    LaunchKernel(AddKernel, dim3(1), dim3(32), s, d, 100);
    EXPECT_EQ(refused[i](), expected[i]) << i;
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated) << i;
    cudaGetLastError();
  }
  // Another thread's allocation does not touch this thread's capture.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  std::thread([] {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, 64), cudaSuccess);
    EXPECT_EQ(cudaFree(p), cudaSuccess);
  }).join();
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  EXPECT_EQ(HostCopy(d, 32)[0], 0);  // nothing captured ran
  cudaStreamDestroy(s);
  cudaFree(other);
  cudaFree(d);
}

TEST(CudaEmulationTest, AnEventRecordedInACaptureCannotBeWaitedFor) {
  cudaStream_t s = nullptr, other = nullptr;
  cudaEvent_t e = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(s, e, 0), cudaSuccess);  // inside the capture: a join
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(e), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaStreamWaitEvent(other, e, 0), cudaErrorCapturedEvent);
  // Recorded again outside a capture, it is an ordinary event.
  ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(e), cudaSuccess);
  cudaGetLastError();
  cudaGraphDestroy(graph);
  cudaEventDestroy(e);
  cudaStreamDestroy(other);
  cudaStreamDestroy(s);
}

// A graph keeps the pointers it captured: replaying it after their memory was freed is what
// breaks graphs in production, and the emulation stops there.
TEST(CudaEmulationDeathTest, AGraphReplayIntoFreedMemoryIsFatal) {
  int* d = DeviceCopy(std::vector<int>(32, 0));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  LaunchKernel(AddKernel, dim3(1), dim3(32), s, d, 1);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_DEATH(
      {
        cudaGraphLaunch(exec, s);
        cudaStreamSynchronize(s);
      },
      "kernel argument 0 .* is not device memory");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace caduceus::cuda_emulation
