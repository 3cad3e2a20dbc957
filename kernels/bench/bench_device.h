// The device under test of caduceus-bench-kernels: memory, random fills, stream-ordered
// timestamps and the kernel set (kernels::cpu or kernels::cuda). The measurement code
// (bench_main.cc) is written once against this interface, so the CPU "dry run" that CI executes
// walks exactly the same structure as the GPU run.
//
// Plain C++17 with no CUDA types: cuda_device.cu (compiled by nvcc) includes it too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"

namespace caduceus::kernels::bench {

// The shared kernel signatures (kernels/kernel_signatures.inc) as function pointers.
struct KernelOps {
  void (*embedding_gather)(const bf16*, int64_t, int64_t, int32_t, const int32_t*, int32_t, float*,
                           Stream);
  void (*rms_norm)(const float*, const bf16*, int32_t, int32_t, float, float*, Stream);
  void (*add_rms_norm)(float*, const float*, const bf16*, int32_t, int32_t, float, float*, Stream);
  void (*linear)(const float*, int32_t, int32_t, const bf16*, int32_t, float*, Stream);
  void (*rope)(float*, int64_t, const int32_t*, int32_t, int32_t, int32_t, const float*,
               Stream);
  void (*silu_mul)(const float*, int32_t, int32_t, float*, Stream);
  void (*kv_cache_write)(const float*, const float*, int64_t, const int32_t*, int32_t,
                         PagedKvLayer, Stream);
  void (*paged_attention)(const float*, int64_t, int32_t, PagedKvLayer,
                          const AttentionBatch&, float, float*, Stream);
  void (*linear_fp8)(const float*, int32_t, int32_t, const uint8_t*, const float*, int32_t, float*,
                     Stream);
};

struct DeviceInfo {
  std::string kind;  // "cpu" or "cuda"
  std::string name;  // "NVIDIA H200", "cpu (avx512)", ...
  int64_t memory_bytes = 0;
  int64_t cache_bytes = 0;  // last-level cache (L2 on GPUs): working sets below ~2x are "resident"
  // Extra facts reported as-is in the JSON "device" object.
  std::vector<std::pair<std::string, std::string>> strings;
  std::vector<std::pair<std::string, double>> numbers;
};

// A unit of work to time: enqueues one call; `i` selects a rotating copy of its buffers.
using Work = std::function<void(int64_t i)>;

class Device {
 public:
  virtual ~Device() = default;

  virtual const DeviceInfo& info() const = 0;
  virtual const KernelOps& ops() const = 0;
  virtual Stream stream() const = 0;
  // The Linear implementation executes this many times the useful FLOPs (CUDA: 2, the hi/lo
  // bf16 split of the activations; CPU: 1).
  virtual int linear_flop_multiplier() const = 0;

  // Device memory; nullptr when it does not fit (never aborts on out-of-memory).
  virtual void* Alloc(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  // Bytes that can still be allocated (approximate).
  virtual int64_t FreeBytes() const = 0;

  // Uniform values in [lo, hi) from a counter-based hash of (seed, index): the same numbers on
  // every device. Enqueued on the stream.
  virtual void FillBf16(bf16* p, size_t n, uint64_t seed, float lo, float hi) = 0;
  virtual void FillF32(float* p, size_t n, uint64_t seed, float lo, float hi) = 0;
  // Host -> device, complete when it returns.
  virtual void Upload(void* dst, const void* src, size_t bytes) = 0;
  // The same through the worker's loading path (CUDA: the pinned double-buffered staging of
  // kernels/cuda/staged_upload.h; elsewhere a plain Upload).
  virtual void UploadStaged(void* dst, const void* src, size_t bytes) { Upload(dst, src, bytes); }
  virtual void Synchronize() = 0;

  // Stream-ordered timestamps: Mark() enqueues one and returns its id; Seconds(a, b) is valid
  // after Synchronize(). ResetMarks() recycles the ids.
  virtual int Mark() = 0;
  virtual double Seconds(int a, int b) = 0;
  virtual void ResetMarks() = 0;

  // Reference measurements; each returned Work enqueues one operation.
  // Copy of `bytes` between two device buffers (cudaMemcpy D2D / memcpy).
  virtual Work MakeCopy(size_t bytes) = 0;
  // Read-only streaming pass over `bytes`.
  virtual Work MakeStreamRead(size_t bytes) = 0;
  // The fastest bf16 GEMM the device offers, size^3 (2 size^3 FLOPs); describes it in `impl`.
  virtual Work MakeGemm(int size, std::string* impl) = 0;

  // Step capture (CUDA graphs). Devices without it return false from BeginCapture.
  virtual bool BeginCapture() { return false; }
  virtual bool EndCapture(std::string* /*error*/) { return false; }
  virtual size_t captured_nodes() const { return 0; }  // nodes in the captured graph
  virtual void LaunchCaptured() {}
  virtual void DropCaptured() {}
};

std::unique_ptr<Device> MakeCpuDevice();
// nullptr (and *error set) when the binary has no CUDA or the device does not exist.
std::unique_ptr<Device> MakeCudaDevice(int ordinal, std::string* error);

#if defined(__CUDACC__)
#define CADUCEUS_BENCH_HD __host__ __device__
#else
#define CADUCEUS_BENCH_HD
#endif

// SplitMix64 of seed and index -> uniform float in [0, 1). Shared by both devices' fills.
CADUCEUS_BENCH_HD inline float HashUniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace caduceus::kernels::bench
