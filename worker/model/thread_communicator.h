// parallel::Communicator for a tensor-parallel group whose ranks are threads of one process.
// Tests use it to run TP=2/4 groups of LlamaModel in one process; it is a complete
// implementation (not a mock): shared buffers, a generation barrier, and sums taken in rank
// order 0 + 1 + ... + (size-1) for every element, so every rank gets the same bits whatever the
// thread timing.
//
// Like every Communicator, calls are collective. A rank that does not arrive within `timeout`
// makes the waiting ranks return DEADLINE_EXCEEDED, and the group is then broken: every later
// call returns UNAVAILABLE (no hang when a peer thread dies or skips a call).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "worker/parallel/communicator.h"

namespace caduceus::model {

class ThreadCommunicatorGroup;

class ThreadCommunicator : public parallel::Communicator {
 public:
  int rank() const override { return rank_; }
  int size() const override;
  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllGather(const float* in, size_t count, float* out) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;

 private:
  friend class ThreadCommunicatorGroup;
  ThreadCommunicator(ThreadCommunicatorGroup* group, int rank) : group_(group), rank_(rank) {}
  ThreadCommunicatorGroup* group_;
  int rank_;
  std::vector<float> sum_;  // this rank's reduction result before it overwrites its buffer
};

// Owns the shared state and the `size` communicators; must outlive their use.
class ThreadCommunicatorGroup {
 public:
  explicit ThreadCommunicatorGroup(int size,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(120));
  ThreadCommunicatorGroup(const ThreadCommunicatorGroup&) = delete;
  ThreadCommunicatorGroup& operator=(const ThreadCommunicatorGroup&) = delete;

  int size() const { return size_; }
  ThreadCommunicator* rank(int r) { return comms_[r].get(); }

 private:
  friend class ThreadCommunicator;
  enum class Op : uint8_t { kAllReduce, kAllGather, kBroadcast };
  // What one rank brought to the current collective.
  struct Slot {
    Op op = Op::kAllReduce;
    const void* src = nullptr;
    size_t count = 0;  // elements or bytes
    int root = 0;
  };
  // Publishes rank r's slot, waits for all ranks and checks they called the same collective.
  absl::Status Enter(int r, const Slot& slot);
  absl::Status Barrier();

  const int size_;
  const std::chrono::milliseconds timeout_;
  std::vector<std::unique_ptr<ThreadCommunicator>> comms_;
  std::vector<Slot> slots_;  // slots_[r] is written only by rank r, read by all after a barrier

  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
};

}  // namespace caduceus::model
