#include "worker/backend/kernel_table.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "kernels/cpu/cpu_kernels.h"
#include "worker/backend/emulated_device.h"
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

namespace caduceus::backend {

namespace {

// The directory of the running executable (where the build and the images put the module).
std::string ExecutableDir() {
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  std::string p(path, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

absl::StatusOr<KernelTable> LoadCudaTable(int ordinal) {
  auto fn = CudaModuleSymbol("caduceus_cuda_kernel_table");
  if (!fn.ok()) {
    return absl::Status(fn.status().code(),
                        absl::StrCat("cuda:", ordinal, ": ", fn.status().message()));
  }
  using Fn = int (*)(int, KernelTable*, char*, size_t);
  KernelTable table;
  char error[256] = {0};
  if (!reinterpret_cast<Fn>(*fn)(ordinal, &table, error, sizeof(error))) {
    return absl::UnavailableError(error);
  }
  return table;
}

}  // namespace

absl::StatusOr<void*> CudaModuleSymbol(const char* name) {
  // Loaded once, kept for the life of the process (kernel pointers and objects made by it live
  // as long as the process).
  static const absl::StatusOr<void*> handle = []() -> absl::StatusOr<void*> {
    std::string module = "libcaduceus_backend_cuda.so";
    void* h = nullptr;
    // CADUCEUS_CUDA_MODULE names the module file instead: a build for another CUDA release, or
    // the CUDA emulation's build that CI runs the CUDA path on (docs/cuda.md).
    if (const char* path = std::getenv("CADUCEUS_CUDA_MODULE"); path != nullptr && *path != '\0') {
      module = path;
      h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    } else {
      h = dlopen((ExecutableDir() + "/" + module).c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) h = dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL);  // LD_LIBRARY_PATH
    }
    if (h == nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "cannot load the CUDA backend ", module, " (", dlerror(),
          "); it is built with CADUCEUS_CUDA=ON next to the executables"));
    }
    return h;
  }();
  if (!handle.ok()) return handle.status();
  void* symbol = dlsym(*handle, name);
  if (symbol == nullptr) {
    return absl::InternalError(absl::StrCat("the CUDA backend module has no ", name));
  }
  return symbol;
}

absl::StatusOr<KernelTable> MakeKernelTable(const std::string& device) {
  if (device == "cpu") {
    namespace k = kernels::cpu;
    return KernelTable{absl::StrCat("cpu-", k::ActiveIsa()),
                       &k::EmbeddingGather, &k::RmsNorm, &k::AddRmsNorm, &k::Linear,
                       &k::LinearArgmax, &k::Rope, &k::SiluMul, &k::KvCacheWrite, &k::PagedAttention, HostMemoryOps()};
  }
  if (device == kEmulatedDevice) return EmulatedDeviceTable();
  if (absl::StartsWith(device, "cuda")) {
    int ordinal = 0;
    if (device.size() > 4 && (device[4] != ':' || !absl::SimpleAtoi(device.substr(5), &ordinal) ||
                              ordinal < 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("device '", device, "': expected cuda or cuda:K with K >= 0"));
    }
    return LoadCudaTable(ordinal);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", device, "'; expected cpu or cuda[:K] (or ",
                   kEmulatedDevice, " for tests)"));
}

}  // namespace caduceus::backend
