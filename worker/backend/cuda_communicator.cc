// The NCCL communicator, made inside a module (libcaduceus_backend_nccl.so), so that the worker
// executable links no CUDA or NCCL library: a CPU worker never loads them, one worker build serves
// both, and a TP=1 GPU worker does not need NCCL installed. worker/server/gpu_communicator.cc
// calls it through backend::NcclModuleSymbol.
#include <cstdint>
#include <cstdio>
#include <memory>

#include "absl/time/time.h"
#include "worker/parallel/communicator.h"
#include "worker/parallel/nccl_communicator.h"

// Returns 1 and the communicator in *out (the caller owns it), or 0 with the absl status code in
// *code and its message in `error`.
extern "C" __attribute__((visibility("default"))) int caduceus_cuda_make_communicator(
    caduceus::parallel::Communicator* bootstrap, int device, int64_t timeout_ms,
    caduceus::parallel::Communicator** out, int* code, char* error, size_t error_size) {
  caduceus::parallel::NcclOptions options;
  options.device = device;
  options.timeout = absl::Milliseconds(timeout_ms);
  // The model's kernels and NCCL share the legacy default stream: collectives only need to be
  // enqueued; the model flushes once before it reads a step's results on the host.
  options.deferred_completion = true;
  auto nccl = caduceus::parallel::NcclCommunicator::Create(*bootstrap, options);
  if (!nccl.ok()) {
    *code = static_cast<int>(nccl.status().code());
    std::snprintf(error, error_size, "%s", std::string(nccl.status().message()).c_str());
    return 0;
  }
  *out = nccl->release();
  return 1;
}
