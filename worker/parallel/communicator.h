// Collective operations of one tensor-parallel group, over device buffers of the group's device
// kind. The model code calls only this interface; GlooCommunicator (CPU tensors, TCP) and
// NcclCommunicator (GPU tensors) implement it, and a group of size 1 needs no communicator at
// all (the model skips collectives when it has none).
//
// Every call is collective: all ranks call it in the same order with the same sizes. Errors
// (a peer died, a timeout expired) come back as UNAVAILABLE / DEADLINE_EXCEEDED, never a hang,
// from the call itself or, for a device communicator that defers completion, from Flush.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace caduceus::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: data[i] = sum over ranks of data[i].
  virtual absl::Status AllReduceSum(float* data, size_t count) = 0;
  // out holds size() * count floats: rank r's `in` lands at out + r * count.
  virtual absl::Status AllGather(const float* in, size_t count, float* out) = 0;
  // Rank `root`'s bytes are copied into every rank's `data`.
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;

  // A device communicator may return from a collective once it is enqueued, in stream order
  // with the model's kernels (so later kernels see its result), and report the failure of any
  // such collective here: Flush waits, with the communicator's deadline, until everything issued
  // so far has completed. Callers flush before the host reads a result. Host communicators
  // complete every call before returning; for them Flush does nothing.
  virtual absl::Status Flush() { return absl::OkStatus(); }
};

}  // namespace caduceus::parallel
