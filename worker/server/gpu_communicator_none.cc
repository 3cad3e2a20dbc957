#include "worker/server/gpu_communicator.h"

namespace caduceus::worker {

absl::StatusOr<std::unique_ptr<parallel::Communicator>> MakeGpuCommunicator(
    parallel::Communicator&, int, absl::Duration) {
  return absl::UnimplementedError(
      "this build has no NCCL (configure with CADUCEUS_CUDA=ON where NCCL is installed)");
}

}  // namespace caduceus::worker
