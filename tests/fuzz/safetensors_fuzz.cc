// Fuzzes the safetensors header validation (SafetensorsFile::Open) with whole files. A file
// that opens must describe only tensors that lie inside it: every tensor's first and last byte
// is read (outside the mapping that faults), and its byte count must match dtype x shape.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "worker/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd, data + written, size - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto file = caduceus::model::SafetensorsFile::Open(path);
  if (file.ok()) {
    volatile uint8_t sink = 0;
    for (const caduceus::model::TensorInfo& t : (*file)->tensors()) {
      const size_t want = static_cast<size_t>(t.NumElements()) * caduceus::model::DTypeSize(t.dtype);
      if (want != t.nbytes) {
        std::fprintf(stderr, "tensor %s: %zu bytes for %zu by its shape\n", t.name.c_str(),
                     t.nbytes, want);
        __builtin_trap();
      }
      if (t.nbytes > 0) sink = sink + t.data[0] + t.data[t.nbytes - 1];
      if ((*file)->Find(t.name) != &t) __builtin_trap();
    }
  }
  close(fd);
  return 0;
}
