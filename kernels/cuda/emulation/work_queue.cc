// The emulated device's stream work queue (device_runtime.h: Enqueue, Drain): one FIFO for all
// streams, run in issue order by whichever host thread synchronizes first; and stream capture,
// which diverts a capturing stream's work into a graph instead.
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/cuda/emulation/device_runtime.h"

namespace caduceus::cuda_emulation {
namespace {

struct Capture {
  std::thread::id owner;  // the capturing thread (captures are thread-local, as in CUDA's mode)
  std::vector<std::function<void()>> nodes;
  std::string invalidated;  // why the capture is invalid; empty while it is valid
};

struct WorkQueue {
  std::mutex mu;        // guards ops and captures
  std::mutex drain_mu;  // one drainer at a time: ops run in issue order, never overlapping
  std::deque<std::function<void()>> ops;
  std::map<cudaStream_t, Capture> captures;  // streams being captured
};

WorkQueue& Work() {
  static WorkQueue* queue = new WorkQueue;  // never destroyed (thread-exit destructors drain)
  return *queue;
}

bool IsLegacy(cudaStream_t stream) { return stream == nullptr || stream == cudaStreamLegacy; }

// Caller holds mu. Only the first reason is kept, as CUDA reports the first violation.
// `only_this_thread`: the captures of the calling thread (a synchronizing call is prohibited in
// the capturing thread only); else all (legacy-stream work synchronizes with every stream).
void InvalidateAllLocked(WorkQueue& q, const std::string& why, bool only_this_thread) {
  for (auto& [stream, capture] : q.captures) {
    if (only_this_thread && capture.owner != std::this_thread::get_id()) continue;
    if (capture.invalidated.empty()) capture.invalidated = why;
  }
}

}  // namespace

void Enqueue(cudaStream_t stream, std::function<void()> work) {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  auto it = q.captures.find(stream);
  if (it != q.captures.end()) {
    it->second.nodes.push_back(std::move(work));
    return;
  }
  // The legacy default stream synchronizes with every blocking stream, a capturing one included.
  if (IsLegacy(stream) && !q.captures.empty()) {
    InvalidateAllLocked(q, "work on the legacy default stream during a capture", false);
  }
  q.ops.push_back(std::move(work));
}

void Drain() {
  WorkQueue& q = Work();
  {
    std::lock_guard<std::mutex> lock(q.mu);
    if (!q.captures.empty()) InvalidateAllLocked(q, "a synchronizing call during a capture", true);
  }
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

cudaError_t BeginCapture(cudaStream_t stream) {
  if (IsLegacy(stream)) return cudaErrorStreamCaptureUnsupported;
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  auto [it, inserted] = q.captures.try_emplace(stream);
  if (!inserted) return cudaErrorIllegalState;
  it->second.owner = std::this_thread::get_id();
  return cudaSuccess;
}

cudaError_t EndCapture(cudaStream_t stream, std::vector<std::function<void()>>* nodes,
                       std::string* why) {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  auto it = q.captures.find(stream);
  if (it == q.captures.end()) return cudaErrorIllegalState;
  Capture capture = std::move(it->second);
  q.captures.erase(it);
  if (!capture.invalidated.empty()) {
    *why = capture.invalidated;
    return cudaErrorStreamCaptureInvalidated;
  }
  *nodes = std::move(capture.nodes);
  return cudaSuccess;
}

bool IsCapturing(cudaStream_t stream) {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  return q.captures.count(stream) > 0;
}

bool InvalidateCallerCaptures(const std::string& why) {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  bool capturing = false;
  for (const auto& [stream, capture] : q.captures) {
    capturing = capturing || capture.owner == std::this_thread::get_id();
  }
  if (capturing) InvalidateAllLocked(q, why, /*only_this_thread=*/true);
  return capturing;
}

void InvalidateCapture(cudaStream_t stream, const std::string& why) {
  WorkQueue& q = Work();
  std::lock_guard<std::mutex> lock(q.mu);
  auto it = q.captures.find(stream);
  if (it != q.captures.end() && it->second.invalidated.empty()) it->second.invalidated = why;
}

}  // namespace caduceus::cuda_emulation
