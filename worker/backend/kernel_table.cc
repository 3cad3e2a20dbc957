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

namespace {

// One module file, loaded once and kept for the life of the process (kernel pointers and objects
// it made live as long as the process).
absl::StatusOr<void*> OpenModule(const std::string& file) {
  // CADUCEUS_CUDA_MODULE_DIR: where to look first, e.g. a build for another CUDA release, or the
  // CUDA emulation's build that CI runs the CUDA path on (docs/cuda.md).
  const char* dir = std::getenv("CADUCEUS_CUDA_MODULE_DIR");
  const std::string first = (dir != nullptr && *dir != '\0' ? std::string(dir) : ExecutableDir()) +
                            "/" + file;
  void* h = dlopen(first.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);  // LD_LIBRARY_PATH
  if (h == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat("cannot load the CUDA backend module ", file, " (", dlerror(),
                     "); it is built with CADUCEUS_CUDA=ON next to the executables"));
  }
  return h;
}

absl::StatusOr<void*> Symbol(const absl::StatusOr<void*>& module, const char* file,
                             const char* name) {
  if (!module.ok()) return module.status();
  void* symbol = dlsym(*module, name);
  if (symbol == nullptr) return absl::InternalError(absl::StrCat(file, " has no ", name));
  return symbol;
}

}  // namespace

absl::StatusOr<void*> CudaModuleSymbol(const char* name) {
  static constexpr char kFile[] = "libcaduceus_backend_cuda.so";
  static const absl::StatusOr<void*> module = OpenModule(kFile);
  return Symbol(module, kFile, name);
}

absl::StatusOr<void*> NcclModuleSymbol(const char* name) {
  static constexpr char kFile[] = "libcaduceus_backend_nccl.so";
  static const absl::StatusOr<void*> module = OpenModule(kFile);
  return Symbol(module, kFile, name);
}

absl::StatusOr<KernelTable> MakeKernelTable(const std::string& device) {
  if (device == "cpu") {
    namespace k = kernels::cpu;
    return KernelTable{absl::StrCat("cpu-", k::ActiveIsa()),
                       &k::EmbeddingGather, &k::RmsNorm, &k::AddRmsNorm, &k::Linear,
                       &k::LinearFp8, &k::LinearArgmax, &k::Rope, &k::SiluMul, &k::KvCacheWrite, &k::PagedAttention,
                       HostMemoryOps(), GraphOps{}};
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
