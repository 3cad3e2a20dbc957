// A Communicator that forwards to another one and adds up the wall time spent in collectives,
// so that a step can report how much of it was communication (worker metrics and StepTimings).
#pragma once

#include <chrono>

#include "worker/parallel/communicator.h"

namespace caduceus::parallel {

class TimedCommunicator : public Communicator {
 public:
  explicit TimedCommunicator(Communicator* inner) : inner_(inner) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(float* data, size_t count) override {
    return Timed([&] { return inner_->AllReduceSum(data, count); });
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    return Timed([&] { return inner_->AllGather(in, count, out); });
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return Timed([&] { return inner_->Broadcast(data, bytes, root); });
  }
  // Not timed: with deferred completion (NCCL in the worker) the wait covers the compute still in
  // flight too, which is not communication. Collective seconds are then the enqueue time only.
  absl::Status Flush() override { return inner_->Flush(); }

  // Seconds spent in collectives since the last call (and resets the counter).
  double TakeSeconds() {
    const double s = seconds_;
    seconds_ = 0;
    return s;
  }

 private:
  template <typename Fn>
  absl::Status Timed(Fn&& fn) {
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = fn();
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return status;
  }

  Communicator* inner_;
  double seconds_ = 0;
};

}  // namespace caduceus::parallel
