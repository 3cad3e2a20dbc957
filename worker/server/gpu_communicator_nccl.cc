#include "worker/parallel/nccl_communicator.h"
#include "worker/server/gpu_communicator.h"

namespace caduceus::worker {

absl::StatusOr<std::unique_ptr<parallel::Communicator>> MakeGpuCommunicator(
    parallel::Communicator& bootstrap, int device, absl::Duration timeout) {
  parallel::NcclOptions options;
  options.device = device;
  options.timeout = timeout;
  // The model's kernels and NCCL share the legacy default stream: collectives only need to be
  // enqueued; the model flushes once before it reads a step's results on the host.
  options.deferred_completion = true;
  auto nccl = parallel::NcclCommunicator::Create(bootstrap, options);
  if (!nccl.ok()) return nccl.status();
  return std::unique_ptr<parallel::Communicator>(std::move(*nccl));
}

}  // namespace caduceus::worker
