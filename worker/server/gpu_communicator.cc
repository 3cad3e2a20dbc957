#include "worker/server/gpu_communicator.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "worker/backend/kernel_table.h"

namespace caduceus::worker {

absl::StatusOr<std::unique_ptr<parallel::Communicator>> MakeGpuCommunicator(
    parallel::Communicator& bootstrap, int device, absl::Duration timeout) {
  auto fn = backend::NcclModuleSymbol("caduceus_cuda_make_communicator");
  if (!fn.ok()) {
    return absl::Status(fn.status().code(), absl::StrCat("NCCL communicator for cuda:", device,
                                                         ": ", fn.status().message()));
  }
  using Make = int (*)(parallel::Communicator*, int, int64_t, parallel::Communicator**, int*,
                       char*, size_t);
  parallel::Communicator* made = nullptr;
  int code = 0;
  char error[512] = {0};
  if (!reinterpret_cast<Make>(*fn)(&bootstrap, device, absl::ToInt64Milliseconds(timeout), &made,
                                   &code, error, sizeof(error))) {
    return absl::Status(static_cast<absl::StatusCode>(code), error);
  }
  return std::unique_ptr<parallel::Communicator>(made);
}

}  // namespace caduceus::worker
