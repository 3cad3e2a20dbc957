// The CUDA device of caduceus-bench-kernels: cudaMalloc'd memory, kernels::cuda enqueued on one
// non-blocking stream, cudaEvent marks, the reference copy / streaming-read / cuBLAS GEMM
// measurements and CUDA-graph capture of a whole step.
//
// Kernels are launched through kernels/cuda's internal::Launch, so this file also builds on the
// CUDA emulation (kernels/cuda/emulation), where CI runs the benchmark's CUDA mode at tiny sizes.
//
// Errors: a failed allocation returns nullptr (the caller falls back or reports); any other CUDA or
// cuBLAS error aborts with file/line, like kernels/cuda does (a sticky device error leaves nothing
// worth measuring).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/bench/bench_device.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/staged_upload.h"

#define BENCH_CUDA_CHECK(expr)                                                                \
  do {                                                                                        \
    const cudaError_t bench_err_ = (expr);                                                    \
    if (bench_err_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d: CUDA failure in %s: %s\n", __FILE__, __LINE__, #expr,      \
                   cudaGetErrorString(bench_err_));                                           \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

#define BENCH_CUBLAS_CHECK(expr)                                                              \
  do {                                                                                        \
    const cublasStatus_t bench_st_ = (expr);                                                  \
    if (bench_st_ != CUBLAS_STATUS_SUCCESS) {                                                 \
      std::fprintf(stderr, "%s:%d: cuBLAS failure in %s: %s\n", __FILE__, __LINE__, #expr,    \
                   cublasGetStatusString(bench_st_));                                         \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace caduceus::kernels::bench {
namespace {

constexpr int kThreads = 256;

unsigned GridFor(size_t items, int sms) {
  size_t blocks = (items + kThreads - 1) / kThreads;
  const size_t cap = static_cast<size_t>(sms) * 8;  // 8 x 256 threads = a full SM
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

// Unfused multiply and add, as the CPU fill computes it, so both devices draw the same numbers.
__device__ __forceinline__ float Uniform(uint64_t seed, size_t i, float lo, float span) {
  return __fadd_rn(lo, __fmul_rn(span, HashUniform(seed, i)));
}

__global__ void FillBf16Kernel(uint16_t* p, size_t n, uint64_t seed, float lo, float span) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = __bfloat16_as_ushort(__float2bfloat16_rn(Uniform(seed, i, lo, span)));
  }
}

__global__ void FillF32Kernel(float* p, size_t n, uint64_t seed, float lo, float span) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = Uniform(seed, i, lo, span);
  }
}

// Reads every 16-byte word once (streaming loads, 4 in flight per thread) and folds them into a
// value the compiler cannot predict; stores it only on an (almost) impossible match, so the kernel
// writes nothing but cannot drop the loads.
__global__ void StreamReadKernel(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  unsigned acc = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i);
    const uint4 b = __ldcs(p + i + stride);
    const uint4 c = __ldcs(p + i + 2 * stride);
    const uint4 d = __ldcs(p + i + 3 * stride);
    acc ^= (a.x ^ a.y ^ a.z ^ a.w) ^ (b.x ^ b.y ^ b.z ^ b.w) ^ (c.x ^ c.y ^ c.z ^ c.w) ^
           (d.x ^ d.y ^ d.z ^ d.w);
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

class CudaDevice : public Device {
 public:
  explicit CudaDevice(int ordinal) : ordinal_(ordinal) {
    BENCH_CUDA_CHECK(cudaSetDevice(ordinal));
    BENCH_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    cudaDeviceProp prop{};
    BENCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
    sms_ = prop.multiProcessorCount;
    ops_ = KernelOps{&cuda::EmbeddingGather, &cuda::RmsNorm,      &cuda::AddRmsNorm,
                     &cuda::Linear,          &cuda::Rope,         &cuda::SiluMul,
                     &cuda::KvCacheWrite,    &cuda::PagedAttention, &cuda::LinearFp8};
    info_.kind = "cuda";
    info_.name = prop.name;
    info_.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    info_.cache_bytes = prop.l2CacheSize;
    info_.strings.emplace_back("compute_capability",
                               std::to_string(prop.major) + "." + std::to_string(prop.minor));
    info_.numbers.emplace_back("ordinal", ordinal);
    info_.numbers.emplace_back("sm_count", prop.multiProcessorCount);
    info_.numbers.emplace_back("l2_bytes", prop.l2CacheSize);
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    info_.numbers.emplace_back("cuda_runtime_version", runtime);
    info_.numbers.emplace_back("cuda_driver_version", driver);
    int mem_khz = 0, bus_bits = 0, sm_khz = 0;
    // Attributes a driver may not report; 0 then, and the derived figure is left out.
    if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, ordinal) != cudaSuccess) {
      mem_khz = 0;
    }
    if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, ordinal) !=
        cudaSuccess) {
      bus_bits = 0;
    }
    if (cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, ordinal) != cudaSuccess) sm_khz = 0;
    cudaGetLastError();
    info_.numbers.emplace_back("memory_bus_bits", bus_bits);
    info_.numbers.emplace_back("memory_clock_khz", mem_khz);
    info_.numbers.emplace_back("sm_clock_khz", sm_khz);
    if (mem_khz > 0 && bus_bits > 0) {
      // Double data rate: two transfers per clock.
      info_.numbers.emplace_back("theoretical_bandwidth_bytes_per_s",
                                 2.0 * mem_khz * 1e3 * bus_bits / 8.0);
    }
  }

  ~CudaDevice() override {
    cudaStreamSynchronize(stream_);
    DropCaptured();
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (cublas_workspace_ != nullptr) cudaFree(cublas_workspace_);
    if (sink_ != nullptr) cudaFree(sink_);
    cudaStreamDestroy(stream_);
  }

  const DeviceInfo& info() const override { return info_; }
  const KernelOps& ops() const override { return ops_; }
  Stream stream() const override { return Stream{stream_}; }
  int linear_flop_multiplier() const override { return 2; }

  void* Alloc(size_t bytes) override {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes == 0 ? 1 : bytes) != cudaSuccess) {
      cudaGetLastError();  // out of memory is not sticky: clear it
      return nullptr;
    }
    return p;
  }
  void Free(void* p) override {
    if (p != nullptr) BENCH_CUDA_CHECK(cudaFree(p));
  }
  int64_t FreeBytes() const override {
    size_t free_bytes = 0, total = 0;
    BENCH_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    return static_cast<int64_t>(free_bytes);
  }

  void FillBf16(bf16* p, size_t n, uint64_t seed, float lo, float hi) override {
    if (n == 0) return;
    cuda::internal::Launch(FillBf16Kernel, GridFor(n, sms_), kThreads, stream_,
                           reinterpret_cast<uint16_t*>(p), n, seed, lo, hi - lo);
  }
  void FillF32(float* p, size_t n, uint64_t seed, float lo, float hi) override {
    if (n == 0) return;
    cuda::internal::Launch(FillF32Kernel, GridFor(n, sms_), kThreads, stream_, p, n, seed, lo,
                           hi - lo);
  }
  void Upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    BENCH_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    BENCH_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void UploadStaged(void* dst, const void* src, size_t bytes) override {
    BENCH_CUDA_CHECK(cudaStreamSynchronize(stream_));
    kernels::cuda::StagedUpload(dst, src, bytes, ordinal_);
  }
  void Synchronize() override { BENCH_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  int Mark() override {
    if (next_mark_ == static_cast<int>(events_.size())) {
      cudaEvent_t e = nullptr;
      BENCH_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    BENCH_CUDA_CHECK(cudaEventRecord(events_[next_mark_], stream_));
    return next_mark_++;
  }
  double Seconds(int a, int b) override {
    float ms = 0.0f;
    BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[a], events_[b]));
    return ms * 1e-3;
  }
  void ResetMarks() override { next_mark_ = 0; }

  Work MakeCopy(size_t bytes) override {
    auto buffers = std::make_shared<Buffers>(this, bytes, 2);
    const cudaStream_t s = stream_;
    return [buffers, bytes, s](int64_t) {
      BENCH_CUDA_CHECK(
          cudaMemcpyAsync(buffers->at(1), buffers->at(0), bytes, cudaMemcpyDeviceToDevice, s));
    };
  }

  Work MakeStreamRead(size_t bytes) override {
    auto buffers = std::make_shared<Buffers>(this, bytes, 1);
    if (sink_ == nullptr) BENCH_CUDA_CHECK(cudaMalloc(&sink_, sizeof(unsigned)));
    const size_t words = bytes / sizeof(uint4);
    const unsigned grid = GridFor(words, sms_);
    const cudaStream_t s = stream_;
    unsigned* sink = sink_;
    return [buffers, words, grid, s, sink](int64_t) {
      cuda::internal::Launch(StreamReadKernel, grid, kThreads, s,
                             static_cast<const uint4*>(buffers->at(0)), words, sink);
    };
  }

  // cublasGemmEx, bf16 inputs and output, fp32 compute, the TN layout Linear uses (weights
  // [out, in] row-major = column-major [in, out], transposed). Default algorithm (tensor cores).
  Work MakeGemm(int size, std::string* impl) override {
    *impl = "cublasGemmEx bf16 x bf16 -> bf16, CUBLAS_COMPUTE_32F, TN";
    EnsureCublas();
    const size_t n = static_cast<size_t>(size) * size;
    auto buffers = std::make_shared<Buffers>(this, n * sizeof(__nv_bfloat16), 3);  // A, B, C
    FillBf16(static_cast<bf16*>(buffers->at(0)), n, 21, -0.05f, 0.05f);
    FillBf16(static_cast<bf16*>(buffers->at(1)), n, 22, -1.0f, 1.0f);
    Synchronize();
    cublasHandle_t h = cublas_;  // bound to stream_ (EnsureCublas)
    return [buffers, h, size](int64_t) {
      const float alpha = 1.0f, beta = 0.0f;
      BENCH_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, size, size, size, &alpha,
                                      buffers->at(0), CUDA_R_16BF, size, buffers->at(1),
                                      CUDA_R_16BF, size, &beta, buffers->at(2), CUDA_R_16BF, size,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    };
  }

  bool BeginCapture() override {
    DropCaptured();
    // Thread-local mode: only this thread's unsafe calls (cudaMalloc, ...) invalidate the capture.
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return true;
  }
  bool EndCapture(std::string* error) override {
    cudaError_t err = cudaStreamEndCapture(stream_, &graph_);
    if (err == cudaSuccess) err = cudaGraphInstantiate(&exec_, graph_, 0);
    if (err != cudaSuccess) {
      *error = cudaGetErrorString(err);
      cudaGetLastError();
      DropCaptured();
      return false;
    }
    size_t nodes = 0;
    if (cudaGraphGetNodes(graph_, nullptr, &nodes) == cudaSuccess) captured_nodes_ = nodes;
    return true;
  }
  size_t captured_nodes() const override { return captured_nodes_; }
  void LaunchCaptured() override { BENCH_CUDA_CHECK(cudaGraphLaunch(exec_, stream_)); }
  void DropCaptured() override {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
    exec_ = nullptr;
    graph_ = nullptr;
    captured_nodes_ = 0;
  }

 private:
  int ordinal_;
  class Buffers {
   public:
    Buffers(CudaDevice* device, size_t bytes, int count) : device_(device) {
      for (int i = 0; i < count; ++i) {
        void* p = device->Alloc(bytes);
        if (p == nullptr) {
          std::fprintf(stderr, "cuda device: cannot allocate %zu bytes\n", bytes);
          std::abort();
        }
        BENCH_CUDA_CHECK(cudaMemsetAsync(p, 1 + i, bytes, device->stream_));
        ptrs_.push_back(p);
      }
      device->Synchronize();
    }
    ~Buffers() {
      for (void* p : ptrs_) cudaFree(p);
    }
    void* at(int i) const { return ptrs_[i]; }

   private:
    CudaDevice* device_;
    std::vector<void*> ptrs_;
  };

  void EnsureCublas() {
    if (cublas_ != nullptr) return;
    BENCH_CUBLAS_CHECK(cublasCreate(&cublas_));
    constexpr size_t kWorkspace = size_t{32} << 20;
    BENCH_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kWorkspace));
    // Stream first: cublasSetStream puts the handle back on cuBLAS's default workspace pool.
    BENCH_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    BENCH_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kWorkspace));
  }

  int sms_ = 1;
  cudaStream_t stream_ = nullptr;
  DeviceInfo info_;
  KernelOps ops_{};
  std::vector<cudaEvent_t> events_;
  int next_mark_ = 0;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  unsigned* sink_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  size_t captured_nodes_ = 0;
};

}  // namespace

std::unique_ptr<Device> MakeCudaDevice(int ordinal, std::string* error) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    *error = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    cudaGetLastError();
    return nullptr;
  }
  if (ordinal < 0 || ordinal >= count) {
    *error = "CUDA device " + std::to_string(ordinal) + " does not exist (" +
             std::to_string(count) + " visible)";
    return nullptr;
  }
  return std::make_unique<CudaDevice>(ordinal);
}

}  // namespace caduceus::kernels::bench
