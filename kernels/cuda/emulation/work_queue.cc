// The emulated device's stream work queue (device_runtime.h: Enqueue, Drain): one FIFO for all
// streams, run in issue order by whichever host thread synchronizes first.
#include <deque>
#include <functional>
#include <mutex>

#include "kernels/cuda/emulation/device_runtime.h"

namespace caduceus::cuda_emulation {
namespace {

struct WorkQueue {
  std::mutex mu;        // guards ops
  std::mutex drain_mu;  // one drainer at a time: ops run in issue order, never overlapping
  std::deque<std::function<void()>> ops;
};

WorkQueue& Work() {
  static WorkQueue* queue = new WorkQueue;  // never destroyed (thread-exit destructors drain)
  return *queue;
}

}  // namespace

void Enqueue(std::function<void()> work) {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  q.ops.push_back(std::move(work));
}

void Drain() {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> draining(q.drain_mu);
  for (;;) {
    std::function<void()> op;
    {
      std::lock_guard<std::mutex> lock(q.mu);
      if (q.ops.empty()) return;
      op = std::move(q.ops.front());
      q.ops.pop_front();
    }
    op();
  }
}

bool HasQueuedWork() {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  return !q.ops.empty();
}

}  // namespace caduceus::cuda_emulation
