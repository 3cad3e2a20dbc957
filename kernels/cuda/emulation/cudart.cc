// The subset of the CUDA runtime API that kernels/cuda, its tests and the worker's CUDA backend
// call, on host memory: one emulated device whose allocations are registered (so copies and
// kernel arguments are checked against them) and poisoned (0xff bytes: NaN floats, -1 ints, so
// reading memory nothing wrote shows up). Streams and events exist and are checked; stream work
// is queued and runs when the host synchronizes (device_runtime.h, Enqueue), or is recorded while
// its stream is captured (graphs.cc).
// Capacity: CADUCEUS_CUDA_EMULATION_BYTES (default 1 GiB); SM count:
// CADUCEUS_CUDA_EMULATION_SMS (default 132, an H100 SXM, so size-dependent choices such as
// split-K attention go the way they would there).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "kernels/cuda/emulation/device_runtime.h"

namespace caduceus::cuda_emulation {
namespace {

constexpr size_t kAlignment = 256;  // cudaMalloc's guarantee

struct Device {
  std::mutex mu;
  std::map<uintptr_t, size_t> allocations;  // begin -> bytes
  std::map<uintptr_t, size_t> pinned;       // page-locked host buffers: begin -> bytes
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  size_t used = 0;
  size_t capacity = 0;
  int sms = 0;
};

size_t EnvSize(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return static_cast<size_t>(std::strtoull(v, nullptr, 10));
}

Device& Dev() {
  static Device* device = [] {
    auto* d = new Device;  // never destroyed: thread-exit destructors free memory late
    d->capacity = EnvSize("CADUCEUS_CUDA_EMULATION_BYTES", size_t{1} << 30);
    d->sms = static_cast<int>(EnvSize("CADUCEUS_CUDA_EMULATION_SMS", 132));
    return d;
  }();
  return *device;
}

thread_local cudaError_t last_error = cudaSuccess;

// Caller holds d.mu.
bool InPinned(const Device& d, uintptr_t begin, size_t bytes) {
  auto it = d.pinned.upper_bound(begin);
  if (it == d.pinned.begin()) return false;
  --it;
  return begin >= it->first && bytes <= it->second && begin - it->first <= it->second - bytes;
}
thread_local int current_device = 0;

// Caller holds d.mu.
bool InAllocation(const Device& d, uintptr_t begin, size_t bytes) {
  auto it = d.allocations.upper_bound(begin);
  if (it == d.allocations.begin()) return false;
  --it;
  return begin >= it->first && bytes <= it->second && begin - it->first <= it->second - bytes;
}

bool StreamOk(const Device& d, cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread ||
         d.streams.count(s) > 0;
}

cudaError_t Fail(cudaError_t error, const std::string& why) {
  std::fprintf(stderr, "CUDA emulation: %s\n", why.c_str());
  return SetLastError(error);
}

std::string Hex(const void* p) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%p", p);
  return buffer;
}

cudaError_t Allocate(void** out, size_t bytes) {
  if (out == nullptr) return SetLastError(cudaErrorInvalidValue);
  Device& d = Dev();
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (d.used + rounded > d.capacity) return SetLastError(cudaErrorMemoryAllocation);
    d.used += rounded;
  }
  // Exactly `bytes` from the host allocator: under AddressSanitizer a kernel that reads or
  // writes past its buffer is then reported where it happens (compute-sanitizer's memcheck).
  void* p = nullptr;
  if (posix_memalign(&p, kAlignment, std::max<size_t>(bytes, 1)) != 0) {
    std::lock_guard<std::mutex> lock(d.mu);
    d.used -= rounded;
    return SetLastError(cudaErrorMemoryAllocation);
  }
  std::memset(p, 0xff, std::max<size_t>(bytes, 1));
  std::lock_guard<std::mutex> lock(d.mu);
  // Registered with the requested size: a kernel or copy past it is out of bounds even where
  // the rounding would have left room.
  d.allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  *out = p;
  return cudaSuccess;
}

// Frees an allocation now; cudaFree drains the queue first, cudaFreeAsync queues this.
cudaError_t Release(void* p) {
  if (p == nullptr) return cudaSuccess;
  Device& d = Dev();
  {
    std::lock_guard<std::mutex> lock(d.mu);
    auto it = d.allocations.find(reinterpret_cast<uintptr_t>(p));
    if (it == d.allocations.end()) {
      return Fail(cudaErrorInvalidValue, "cudaFree of " + Hex(p) + ", not a device allocation");
    }
    d.used -= (std::max<size_t>(it->second, 1) + kAlignment - 1) / kAlignment * kAlignment;
    d.allocations.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

// Stream work: queued behind what is already queued (`queue`), or run now once everything queued
// has run (a synchronous call).
void Submit(bool queue, cudaStream_t stream, std::function<void()> work) {
  if (queue) {
    Enqueue(stream, std::move(work));
    return;
  }
  Drain();
  work();
}

// `async`: cudaMemcpyAsync. It is queued when every host side is page-locked (or there is none);
// with pageable host memory CUDA itself copies synchronously, and so does this.
cudaError_t Copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream,
                 bool async) {
  if (count == 0) return cudaSuccess;
  Device& d = Dev();
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (!StreamOk(d, stream)) return SetLastError(cudaErrorInvalidResourceHandle);
    const auto dst_at = reinterpret_cast<uintptr_t>(dst);
    const auto src_at = reinterpret_cast<uintptr_t>(src);
    const bool dst_device = InAllocation(d, dst_at, count);
    const bool src_device = InAllocation(d, src_at, count);
    bool ok = true;
    switch (kind) {
      case cudaMemcpyHostToDevice:
        ok = dst_device;
        break;
      case cudaMemcpyDeviceToHost:
        ok = src_device;
        break;
      case cudaMemcpyDeviceToDevice:
        ok = dst_device && src_device;
        break;
      case cudaMemcpyHostToHost:
        ok = true;
        break;
      case cudaMemcpyDefault:
        ok = true;
        break;
      default:
        ok = false;
    }
    if (!ok) {
      return Fail(cudaErrorInvalidValue,
                  "cudaMemcpy kind " + std::to_string(static_cast<int>(kind)) + " of " +
                      std::to_string(count) + " bytes from " + Hex(src) + " to " + Hex(dst) +
                      ": the device side is not inside one device allocation");
    }
    queued = async && (dst_device || InPinned(d, dst_at, count)) &&
             (src_device || InPinned(d, src_at, count));
  }
  Submit(queued, stream, [dst, src, count] { std::memmove(dst, src, count); });
  return cudaSuccess;
}

cudaError_t Fill(void* dst, int value, size_t count, cudaStream_t stream, bool async) {
  if (count == 0) return cudaSuccess;
  Device& d = Dev();
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (!StreamOk(d, stream)) return SetLastError(cudaErrorInvalidResourceHandle);
    if (!InAllocation(d, reinterpret_cast<uintptr_t>(dst), count)) {
      return Fail(cudaErrorInvalidValue, "cudaMemset of " + std::to_string(count) + " bytes at " +
                                             Hex(dst) + ": not inside one device allocation");
    }
  }
  Submit(async, stream, [dst, value, count] { std::memset(dst, value, count); });
  return cudaSuccess;
}

// A stream or event handle: the storage also holds an event's last record time.
struct HandleStorage {
  std::chrono::steady_clock::time_point recorded{};
  bool captured = false;  // an event last recorded into a capture: the host cannot wait for it
};

template <typename Handle>
cudaError_t CreateHandle(Handle* out, std::set<Handle>& registry) {
  if (out == nullptr) return SetLastError(cudaErrorInvalidValue);
  Handle h = reinterpret_cast<Handle>(new HandleStorage);
  std::lock_guard<std::mutex> lock(Dev().mu);
  registry.insert(h);
  *out = h;
  return cudaSuccess;
}

template <typename Handle>
cudaError_t DestroyHandle(Handle h, std::set<Handle>& registry) {
  std::lock_guard<std::mutex> lock(Dev().mu);
  if (registry.erase(h) == 0) return SetLastError(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<HandleStorage*>(h);
  return cudaSuccess;
}

cudaError_t CheckStream(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(Dev().mu);
  return StreamOk(Dev(), s) ? cudaSuccess : SetLastError(cudaErrorInvalidResourceHandle);
}

cudaError_t CheckEvent(cudaEvent_t e) {
  std::lock_guard<std::mutex> lock(Dev().mu);
  return Dev().events.count(e) > 0 ? cudaSuccess : SetLastError(cudaErrorInvalidResourceHandle);
}

// An event the host (or a stream outside the capture) waits for: live, and not last recorded into
// a capture (CUDA: cudaErrorCapturedEvent; the record only happens when the graph runs).
cudaError_t CheckWaitableEvent(cudaEvent_t e) {
  if (CheckEvent(e) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  if (reinterpret_cast<HandleStorage*>(e)->captured) {
    return Fail(cudaErrorCapturedEvent, "waiting for an event last recorded in a stream capture");
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t SetLastError(cudaError_t error) {
  if (error != cudaSuccess) last_error = error;
  return error;
}

cudaError_t CheckStreamHandle(cudaStream_t stream) { return CheckStream(stream); }

bool IsDeviceRange(const void* p, size_t bytes) {
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  return InAllocation(d, reinterpret_cast<uintptr_t>(p), bytes);
}

void CheckDevicePointer(const void* p, int argument_index) {
  if (IsDeviceRange(p, 1)) return;
  std::fprintf(stderr,
               "CUDA emulation: kernel argument %d (%p) is not device memory (not inside any "
               "cudaMalloc allocation)\n",
               argument_index, p);
  std::abort();
}

bool CheckLaunch(dim3 grid, dim3 block, cudaStream_t stream) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535 || threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 ||
      block.z > 64) {
    Fail(cudaErrorInvalidConfiguration,
         "launch with grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
             std::to_string(grid.z) + ") and block (" + std::to_string(block.x) + "," +
             std::to_string(block.y) + "," + std::to_string(block.z) + ")");
    return false;
  }
  return CheckStream(stream) == cudaSuccess;
}

}  // namespace caduceus::cuda_emulation

namespace emu = caduceus::cuda_emulation;

extern "C" {

// CUDA refuses both in a thread that is capturing (thread-local mode: "potentially unsafe API
// calls"), and the capture is then invalidated.
cudaError_t cudaMalloc(void** devPtr, size_t size) {
  if (emu::InvalidateCallerCaptures("cudaMalloc in the capturing thread")) {
    return emu::Fail(cudaErrorStreamCaptureUnsupported, "cudaMalloc in a capturing thread");
  }
  return emu::Allocate(devPtr, size);
}
cudaError_t cudaFree(void* devPtr) {
  if (emu::InvalidateCallerCaptures("cudaFree in the capturing thread")) {
    return emu::Fail(cudaErrorStreamCaptureUnsupported, "cudaFree in a capturing thread");
  }
  emu::Drain();  // cudaFree waits for the device
  return emu::Release(devPtr);
}
cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t hStream) {
  if (emu::CheckStream(hStream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  // CUDA would add an allocation node to the graph; code that captures must allocate beforehand.
  emu::InvalidateCapture(hStream, "cudaMallocAsync during a capture (not emulated)");
  return emu::Allocate(devPtr, size);
}
cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t hStream) {
  if (emu::CheckStream(hStream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  if (devPtr == nullptr) return cudaSuccess;
  if (!emu::IsDeviceRange(devPtr, 1)) {
    return emu::Fail(cudaErrorInvalidValue,
                     "cudaFreeAsync of " + emu::Hex(devPtr) + ", not a device allocation");
  }
  if (emu::IsCapturing(hStream)) {
    // In a capture it would become a free node, which only a graph's own allocation may have
    // (CUDA: "must be passed the address of a graph allocation"); the emulation makes none.
    emu::InvalidateCapture(hStream, "cudaFreeAsync during a capture");
    return emu::Fail(cudaErrorInvalidValue,
                     "cudaFreeAsync of " + emu::Hex(devPtr) +
                         " during a stream capture: not memory the graph allocated");
  }
  emu::Enqueue(hStream, [devPtr] { emu::Release(devPtr); });  // after the work queued before it
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return emu::Copy(dst, src, count, kind, nullptr, /*async=*/false);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return emu::Copy(dst, src, count, kind, stream, /*async=*/true);
}
// Row by row through Copy, so each row's device side must lie inside one allocation.
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind) {
  if (width == 0 || height == 0) return cudaSuccess;
  if (dpitch < width || spitch < width) {
    return emu::Fail(cudaErrorInvalidPitchValue,
                     "cudaMemcpy2D pitch (" + std::to_string(dpitch) + ", " +
                         std::to_string(spitch) + ") below the width " + std::to_string(width));
  }
  for (size_t r = 0; r < height; ++r) {
    const cudaError_t e = emu::Copy(static_cast<char*>(dst) + r * dpitch,
                                    static_cast<const char*>(src) + r * spitch, width, kind,
                                    nullptr, /*async=*/false);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  return emu::Fill(devPtr, value, count, nullptr, /*async=*/false);
}
cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  return emu::Fill(devPtr, value, count, stream, /*async=*/true);
}
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int /*flags*/) {
  if (pHost == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  void* p = std::aligned_alloc(4096, (std::max<size_t>(size, 1) + 4095) / 4096 * 4096);
  if (p == nullptr) return emu::SetLastError(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(emu::Dev().mu);
  emu::Dev().pinned[reinterpret_cast<uintptr_t>(p)] = std::max<size_t>(size, 1);
  *pHost = p;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, 0); }
cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  emu::Drain();  // cudaFreeHost waits for the device
  {
    std::lock_guard<std::mutex> lock(emu::Dev().mu);
    if (emu::Dev().pinned.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) {
      return emu::SetLastError(cudaErrorInvalidValue);
    }
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) {
  return emu::CreateHandle(pStream, emu::Dev().streams);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int /*flags*/) {
  return emu::CreateHandle(pStream, emu::Dev().streams);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  return emu::DestroyHandle(stream, emu::Dev().streams);
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (emu::CheckStream(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  emu::Drain();
  return cudaSuccess;
}
// Not ready while work is queued; the query itself lets it run, so a polling host (the NCCL
// communicator's flush) sees the stream finish on its next query.
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  if (emu::CheckStream(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  const bool pending = emu::HasQueuedWork();
  emu::Drain();
  return pending ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int /*flags*/) {
  if (emu::CheckStream(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  // Inside a capture, waiting for an event recorded in it joins the capture; outside, not.
  return emu::IsCapturing(stream) ? emu::CheckEvent(event) : emu::CheckWaitableEvent(event);
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return emu::CreateHandle(event, emu::Dev().events);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int /*flags*/) {
  return emu::CreateHandle(event, emu::Dev().events);
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (emu::CheckStream(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  if (emu::CheckEvent(event) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  // Stamped when the queue reaches it, i.e. once the work issued before it has run.
  auto* storage = reinterpret_cast<emu::HandleStorage*>(event);
  storage->captured = emu::IsCapturing(stream);
  emu::Enqueue(stream, [storage] { storage->recorded = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  for (cudaEvent_t e : {start, end}) {
    const cudaError_t waitable = emu::CheckWaitableEvent(e);
    if (waitable != cudaSuccess) return waitable;
  }
  emu::Drain();
  const auto a = reinterpret_cast<emu::HandleStorage*>(start)->recorded;
  const auto b = reinterpret_cast<emu::HandleStorage*>(end)->recorded;
  *ms = std::chrono::duration<float, std::milli>(b - a).count();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  const cudaError_t waitable = emu::CheckWaitableEvent(event);
  if (waitable != cudaSuccess) return waitable;
  emu::Drain();
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) { return cudaEventSynchronize(event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  return emu::DestroyHandle(event, emu::Dev().events);
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  *device = emu::current_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return emu::SetLastError(cudaErrorInvalidDevice);
  emu::current_device = device;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (value == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  if (device != 0) return emu::SetLastError(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = emu::Dev().sms;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    default:
      return emu::Fail(
          cudaErrorInvalidValue,
          "device attribute " + std::to_string(static_cast<int>(attr)) + " is not emulated");
  }
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  if (device != 0) return emu::SetLastError(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulation (CPU)");
  prop->totalGlobalMem = emu::Dev().capacity;
  prop->multiProcessorCount = emu::Dev().sms;
  prop->l2CacheSize = 50 << 20;
  prop->major = 9;
  prop->minor = 0;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  emu::Drain();
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (free == nullptr || total == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(emu::Dev().mu);
  *total = emu::Dev().capacity;
  *free = emu::Dev().capacity - emu::Dev().used;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* runtimeVersion) {
  if (runtimeVersion == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  *runtimeVersion = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* driverVersion) {
  return cudaRuntimeGetVersion(driverVersion);
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return emu::last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    default:
      return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotSupported:
      return "operation not supported";
    case cudaErrorNotReady:
      return "device not ready";
    default:
      return "unknown error (CUDA emulation)";
  }
}

}  // extern "C"
