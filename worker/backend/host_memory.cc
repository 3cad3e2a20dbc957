#include <cstdlib>
#include <cstring>
#include <new>

#include "worker/backend/device_memory.h"

namespace caduceus::backend {

namespace {

void* HostAlloc(size_t bytes, int) {
  // 64-byte alignment for AVX-512 loads; aligned_alloc wants a multiple of the alignment.
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
}
void HostFree(void* p, int) { std::free(p); }
void HostCopy(void* dst, const void* src, size_t bytes, int) { std::memcpy(dst, src, bytes); }
void HostCopy2D(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                size_t rows, int) {
  for (size_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(dst) + r * dst_pitch,
                static_cast<const char*>(src) + r * src_pitch, width);
  }
}
int64_t HostFreeBytes(int) { return 0; }

}  // namespace

MemoryOps HostMemoryOps() {
  return MemoryOps{true, -1, &HostAlloc, &HostFree, &HostCopy, &HostCopy, &HostCopy, &HostFreeBytes,
                   &HostFreeBytes, &HostCopy2D};
}

}  // namespace caduceus::backend
