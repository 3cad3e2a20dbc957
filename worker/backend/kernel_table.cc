#include "worker/backend/kernel_table.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_kernels.h"

namespace caduceus::backend {

absl::StatusOr<KernelTable> MakeKernelTable(const std::string& device) {
  if (device == "cpu") {
    namespace k = kernels::cpu;
    return KernelTable{absl::StrCat("cpu-", k::ActiveIsa()),
                       &k::EmbeddingGather, &k::RmsNorm, &k::AddRmsNorm, &k::Linear, &k::Rope,
                       &k::SiluMul, &k::KvCacheWrite, &k::PagedAttention};
  }
  if (absl::StartsWith(device, "cuda")) {
    return absl::UnimplementedError(absl::StrCat(
        "device '", device, "': this build has no CUDA backend (configure with CADUCEUS_CUDA=ON)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", device, "'; expected cpu or cuda[:K]"));
}

}  // namespace caduceus::backend
