// The CPU device of caduceus-bench-kernels: host memory, kernels::cpu, wall-clock marks (the CPU
// kernels run synchronously, so a timestamp taken after a call is taken after its work).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/bench/bench_device.h"
#include "kernels/cpu/cpu_kernels.h"

namespace caduceus::kernels::bench {
namespace {

int64_t SysconfBytes(int name) {
  const long pages = sysconf(name);
  const long page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

class CpuDevice : public Device {
 public:
  CpuDevice() {
    ops_ = KernelOps{&cpu::EmbeddingGather, &cpu::RmsNorm,      &cpu::AddRmsNorm,
                     &cpu::Linear,          &cpu::Rope,         &cpu::SiluMul,
                     &cpu::KvCacheWrite,    &cpu::PagedAttention, &cpu::LinearFp8};
    info_.kind = "cpu";
    info_.name = std::string("cpu (") + cpu::ActiveIsa() + ")";
    info_.memory_bytes = SysconfBytes(_SC_PHYS_PAGES);
#ifdef _SC_LEVEL3_CACHE_SIZE
    info_.cache_bytes = sysconf(_SC_LEVEL3_CACHE_SIZE) > 0 ? sysconf(_SC_LEVEL3_CACHE_SIZE) : 0;
#endif
    if (info_.cache_bytes == 0) info_.cache_bytes = int64_t{32} << 20;
    info_.strings.emplace_back("isa", cpu::ActiveIsa());
    info_.numbers.emplace_back("cores", static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)));
  }

  const DeviceInfo& info() const override { return info_; }
  const KernelOps& ops() const override { return ops_; }
  Stream stream() const override { return {}; }
  int linear_flop_multiplier() const override { return 1; }

  // Large buffers in transparent huge pages, as the worker's weight arena holds the weights
  // (worker/model/weight_arena.h). With 4 KiB pages, working sets of a few hundred MB ran up to
  // 30x slower, erratically, on the CI VM (2026-12-01): the figures would be the VM's paging.
  void* Alloc(size_t bytes) override {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    if (rounded < kHugeFrom) return std::aligned_alloc(64, rounded);
    void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    madvise(p, rounded, MADV_HUGEPAGE);
    mapped_[p] = rounded;
    return p;
  }
  void Free(void* p) override {
    auto it = mapped_.find(p);
    if (it == mapped_.end()) {
      std::free(p);
      return;
    }
    munmap(p, it->second);
    mapped_.erase(it);
  }
  int64_t FreeBytes() const override { return SysconfBytes(_SC_AVPHYS_PAGES); }

  void FillBf16(bf16* p, size_t n, uint64_t seed, float lo, float hi) override {
    for (size_t i = 0; i < n; ++i) p[i] = FloatToBf16(lo + (hi - lo) * HashUniform(seed, i));
  }
  void FillF32(float* p, size_t n, uint64_t seed, float lo, float hi) override {
    for (size_t i = 0; i < n; ++i) p[i] = lo + (hi - lo) * HashUniform(seed, i);
  }
  void Upload(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void Synchronize() override {}

  int Mark() override {
    marks_.push_back(std::chrono::steady_clock::now());
    return static_cast<int>(marks_.size()) - 1;
  }
  double Seconds(int a, int b) override {
    return std::chrono::duration<double>(marks_[b] - marks_[a]).count();
  }
  void ResetMarks() override { marks_.clear(); }

  Work MakeCopy(size_t bytes) override {
    auto buffers = std::make_shared<Buffers>(this, bytes, 2);
    return [buffers, bytes](int64_t) {
      std::memcpy(buffers->at(1), buffers->at(0), bytes);
    };
  }

  Work MakeStreamRead(size_t bytes) override {
    auto buffers = std::make_shared<Buffers>(this, bytes, 1);
    auto sink = std::make_shared<uint64_t>(0);
    return [buffers, sink, bytes](int64_t) {
      const auto* p = static_cast<const uint64_t*>(buffers->at(0));
      const int64_t n = static_cast<int64_t>(bytes / sizeof(uint64_t));
      uint64_t acc = 0;
#pragma omp parallel for reduction(^ : acc) schedule(static)
      for (int64_t i = 0; i < n; ++i) acc ^= p[i];
      *sink ^= acc;
    };
  }

  // kernels::cpu::Linear (fp32 activations x bf16 weights): the CPU has no faster bf16 GEMM that
  // the kernels could use, so this is the peak prefill is compared with.
  Work MakeGemm(int size, std::string* impl) override {
    *impl = std::string("kernels::cpu::Linear fp32 x bf16 (") + cpu::ActiveIsa() + ")";
    const size_t n = static_cast<size_t>(size) * size;
    auto x = std::make_shared<Buffers>(this, n * sizeof(float), 2);  // x, y
    auto w = std::make_shared<Buffers>(this, n * sizeof(bf16), 1);
    FillF32(static_cast<float*>(x->at(0)), n, 11, -1.0f, 1.0f);
    FillBf16(static_cast<bf16*>(w->at(0)), n, 12, -0.05f, 0.05f);
    return [x, w, size](int64_t) {
      cpu::Linear(static_cast<const float*>(x->at(0)), size, size,
                  static_cast<const bf16*>(w->at(0)), size, static_cast<float*>(x->at(1)));
    };
  }

 private:
  // `count` buffers of `bytes`, filled (first touch outside the timed loop).
  class Buffers {
   public:
    Buffers(CpuDevice* device, size_t bytes, int count) : device_(device) {
      for (int i = 0; i < count; ++i) {
        void* p = device->Alloc(bytes);
        if (p == nullptr) std::abort();
        std::memset(p, 1 + i, bytes);
        ptrs_.push_back(p);
      }
    }
    ~Buffers() {
      for (void* p : ptrs_) device_->Free(p);
    }
    void* at(int i) const { return ptrs_[i]; }

   private:
    CpuDevice* device_;
    std::vector<void*> ptrs_;
  };

  DeviceInfo info_;
  KernelOps ops_{};
  std::vector<std::chrono::steady_clock::time_point> marks_;
  static constexpr size_t kHugeFrom = size_t{2} << 20;
  std::unordered_map<void*, size_t> mapped_;  // huge-page buffers and their mapped sizes
};

}  // namespace

std::unique_ptr<Device> MakeCpuDevice() { return std::make_unique<CpuDevice>(); }

#ifndef CADUCEUS_BENCH_WITH_CUDA
std::unique_ptr<Device> MakeCudaDevice(int, std::string* error) {
  *error = "this binary was built without CUDA (CADUCEUS_CUDA=OFF or no nvcc); use --device cpu";
  return nullptr;
}
#endif

}  // namespace caduceus::kernels::bench
