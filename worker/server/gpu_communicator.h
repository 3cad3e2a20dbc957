// The data-plane communicator of a GPU tensor-parallel group (NCCL), bootstrapped through the
// group's Gloo communicator: the leader creates the NCCL unique id and broadcasts it over Gloo.
// Made by the CUDA backend module (worker/backend/cuda_communicator.cc), so the worker executable
// links no CUDA library; UNIMPLEMENTED where there is no module.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/communicator.h"

namespace caduceus::worker {

absl::StatusOr<std::unique_ptr<parallel::Communicator>> MakeGpuCommunicator(
    parallel::Communicator& bootstrap, int device, absl::Duration timeout);

}  // namespace caduceus::worker
