// Communicator over NCCL, for GPU tensors (one GPU per rank). Built only with CUDA
// (CADUCEUS_WITH_CUDA); compiled but not run on machines without a GPU.
//
// Bootstrap: NCCL needs a 128-byte unique id from rank 0 on every rank. It travels through a
// Broadcast of an already connected CPU communicator of the same group (a GlooCommunicator), so
// NCCL needs no store of its own.
//
// Never hang: the NCCL communicator is created non-blocking, and every wait for its stream has a
// deadline while polling NCCL's asynchronous error. On timeout or a NCCL error the communicator
// is aborted (which releases peers' pending kernels on this side), marked unusable, and the call
// returns DEADLINE_EXCEEDED / UNAVAILABLE naming the operation and the rank.
//
// Completion: by default each collective completes before it returns (the data is ready on
// `stream`'s device). With `deferred_completion` a collective returns once NCCL has enqueued it;
// work later on the same stream (the model's kernels on the legacy default stream) is ordered
// after it, and Flush() waits for the stream with the deadline. A decode step then syncs the host
// once (before its logits or tokens are copied back) instead of after each of the 2 all-reduces
// of every layer (160 host round trips per step for a 70B model).
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/communicator.h"

struct CUstream_st;  // = cudaStream_t, without pulling CUDA headers into every includer
struct ncclComm;     // = ncclComm_t

namespace caduceus::parallel {

struct NcclOptions {
  int device = 0;                  // CUDA device of this rank
  CUstream_st* stream = nullptr;   // stream the collectives run on (nullptr = legacy default)
  absl::Duration timeout = absl::Seconds(30);       // per collective
  absl::Duration init_timeout = absl::Seconds(120);  // communicator setup
  bool deferred_completion = false;  // collectives return once enqueued; Flush() waits
};

class NcclCommunicator : public Communicator {
 public:
  // `bootstrap` must be a working communicator of the same group (same rank and size).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(Communicator& bootstrap,
                                                                  const NcclOptions& options);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool usable() const { return error_.ok(); }

  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllGather(const float* in, size_t count, float* out) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  absl::Status Flush() override;

 private:
  NcclCommunicator(int rank, int size, const NcclOptions& options)
      : rank_(rank), size_(size), options_(options) {}
  // Issues `launch` (which returns an ncclResult_t as int), waits until NCCL has enqueued it and,
  // unless completion is deferred, until it has completed.
  template <typename Launch>
  absl::Status Run(const char* op, Launch&& launch);
  // Waits until the communicator is no longer in progress (the enqueue of a non-blocking call);
  // aborts on failure or at the deadline.
  absl::Status Enqueued(const char* op, int launch_result);
  // Waits for the stream and the communicator's async state; aborts on failure.
  absl::Status Complete(const char* op);
  absl::Status Fail(absl::Status status);
  absl::Status Unusable(const char* op) const;

  const int rank_;
  const int size_;
  const NcclOptions options_;
  ncclComm* comm_ = nullptr;
  absl::Status error_;
};

}  // namespace caduceus::parallel
