#include "worker/parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace caduceus::parallel {
namespace {

// Polling interval while waiting for NCCL: short enough for decode-step latency, long enough not
// to burn a core per rank (yield instead of sleep below 100 us would spin).
constexpr absl::Duration kPoll = absl::Microseconds(20);

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    Communicator& bootstrap, const NcclOptions& options) {
  const int rank = bootstrap.rank();
  const int size = bootstrap.size();
  if (cudaSetDevice(options.device) != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("nccl init on rank ", rank, ": cannot use CUDA device ", options.device, ": ",
                     cudaGetErrorString(cudaGetLastError())));
  }
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  // Rank 0 broadcasts even when it failed (an all-zero id), so peers fail now instead of
  // waiting for the bootstrap timeout.
  ncclResult_t id_result = rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
  if (id_result != ncclSuccess) std::memset(&id, 0, sizeof(id));
  RETURN_IF_ERROR(bootstrap.Broadcast(&id, sizeof(id), /*root=*/0));
  static const ncclUniqueId kZero{};
  if (id_result != ncclSuccess || std::memcmp(&id, &kZero, sizeof(id)) == 0) {
    return absl::UnavailableError(absl::StrCat(
        "nccl init on rank ", rank, ": rank 0 could not create a unique id",
        id_result != ncclSuccess ? absl::StrCat(" (", ncclGetErrorString(id_result), ")") : ""));
  }

  std::unique_ptr<NcclCommunicator> comm(new NcclCommunicator(rank, size, options));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  // Non-blocking: the init (which waits for every peer) can be abandoned at our deadline instead
  // of blocking this thread forever on a peer that never arrives.
  config.blocking = 0;
  ncclComm_t handle = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&handle, size, id, rank, &config);
  comm->comm_ = handle;
  const absl::Time deadline = absl::Now() + options.init_timeout;
  while (r == ncclInProgress) {
    if (absl::Now() > deadline) {
      return comm->Fail(absl::DeadlineExceededError(
          absl::StrCat("nccl init on rank ", rank, " timed out after ",
                       absl::FormatDuration(options.init_timeout))));
    }
    absl::SleepFor(absl::Milliseconds(1));
    if (ncclCommGetAsyncError(handle, &r) != ncclSuccess) break;
  }
  if (r != ncclSuccess) {
    return comm->Fail(absl::UnavailableError(
        absl::StrCat("nccl init on rank ", rank, ": ", ncclGetErrorString(r))));
  }
  LogInfo(absl::StrCat("nccl communicator up: rank ", rank, "/", size, ", device ",
                       options.device));
  return comm;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  // A healthy communicator is finalized (flushes outstanding work); a failed one only aborted.
  if (error_.ok()) {
    ncclResult_t r = ncclCommFinalize(comm_);
    const absl::Time deadline = absl::Now() + options_.timeout;
    while (r == ncclInProgress && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
      ncclCommGetAsyncError(comm_, &r);
    }
    if (r == ncclSuccess) {
      ncclCommDestroy(comm_);
      return;
    }
  }
  ncclCommAbort(comm_);
}

absl::Status NcclCommunicator::Fail(absl::Status status) {
  if (error_.ok()) error_ = status;
  LogError(status.ToString());
  if (comm_ != nullptr) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  return status;
}

absl::Status NcclCommunicator::Enqueued(const char* op, int launch_result) {
  ncclResult_t r = static_cast<ncclResult_t>(launch_result);
  auto where = [&] { return absl::StrCat("nccl ", op, " on rank ", rank_); };
  if (r != ncclSuccess && r != ncclInProgress) {
    return Fail(absl::UnavailableError(absl::StrCat(where(), ": ", ncclGetErrorString(r))));
  }
  // A non-blocking communicator may still be enqueueing; no other NCCL call may be issued on it
  // until that is done.
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (r == ncclInProgress) {
    if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) r = ncclInternalError;
    if (r != ncclSuccess && r != ncclInProgress) {
      return Fail(absl::UnavailableError(absl::StrCat(where(), ": ", ncclGetErrorString(r))));
    }
    if (r == ncclInProgress && absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          where(), ": not enqueued after ", absl::FormatDuration(options_.timeout))));
    }
    if (r == ncclInProgress) absl::SleepFor(kPoll);
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Complete(const char* op) {
  auto where = [&] { return absl::StrCat("nccl ", op, " on rank ", rank_); };
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      return Fail(absl::UnavailableError(absl::StrCat(where(), ": ", ncclGetErrorString(async))));
    }
    if (async == ncclSuccess) {
      const cudaError_t q = cudaStreamQuery(options_.stream);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        return Fail(absl::UnavailableError(absl::StrCat(where(), ": ", cudaGetErrorString(q))));
      }
    }
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          where(), ": timed out after ", absl::FormatDuration(options_.timeout))));
    }
    absl::SleepFor(kPoll);
  }
}

absl::Status NcclCommunicator::Unusable(const char* op) const {
  return absl::UnavailableError(absl::StrCat(op, " on rank ", rank_,
                                             ": communicator unusable after an earlier error: ",
                                             error_.message()));
}

template <typename Launch>
absl::Status NcclCommunicator::Run(const char* op, Launch&& launch) {
  if (!error_.ok()) return Unusable(op);
  RETURN_IF_ERROR(Enqueued(op, static_cast<int>(launch())));
  if (options_.deferred_completion) return absl::OkStatus();
  return Complete(op);
}

absl::Status NcclCommunicator::Flush() {
  if (!error_.ok()) return Unusable("flush");
  return Complete("flush (collectives of this step)");
}

absl::Status NcclCommunicator::AllReduceSum(float* data, size_t count) {
  if (count == 0) return Run("allreduce", [] { return ncclSuccess; });
  return Run("allreduce", [&] {
    return ncclAllReduce(data, data, count, ncclFloat, ncclSum, comm_, options_.stream);
  });
}

absl::Status NcclCommunicator::AllGather(const float* in, size_t count, float* out) {
  if (count == 0) return Run("allgather", [] { return ncclSuccess; });
  return Run("allgather", [&] {
    return ncclAllGather(in, out, count, ncclFloat, comm_, options_.stream);
  });
}

absl::Status NcclCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " outside group of ", size_));
  }
  if (bytes == 0) return Run("broadcast", [] { return ncclSuccess; });
  return Run("broadcast", [&] {
    return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, options_.stream);
  });
}

}  // namespace caduceus::parallel
