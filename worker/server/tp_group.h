// Runs steps on a whole tensor-parallel group. The leader (rank 0) validates each plan, sends it
// to the followers over the control plane, runs its own part of the forward pass and samples;
// followers loop in RunFollower, running the same forward passes.
//
// Failure semantics: a failed control-plane send or collective (a rank died, a timeout expired)
// breaks the group for good (the Gloo mesh is in an unknown state): that step and every later
// one fail with UNAVAILABLE, health() reports the cause, and the process owner decides to exit
// (caduceus-worker does, so that Kubernetes restarts the group). A bad plan is refused with
// INVALID_ARGUMENT before any rank sees it, and the group keeps serving.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "caduceus/worker/v1/worker.pb.h"
#include "worker/model/kv_cache.h"
#include "worker/model/llama_model.h"
#include "worker/parallel/timed_communicator.h"
#include "worker/server/control_plane.h"
#include "worker/server/sequence_table.h"
#include "worker/server/worker_metrics.h"

namespace caduceus::worker {

struct GroupParts {
  model::LlamaModel* model = nullptr;
  model::KvCache* cache = nullptr;
  // Carries the control plane; null for a group of one.
  parallel::Communicator* control = nullptr;
  // The communicator the model was loaded with (its collective time is reported); may be null.
  parallel::TimedCommunicator* timed = nullptr;
  WorkerMetrics* metrics = nullptr;
};

class GroupLeader {
 public:
  // heartbeat_interval: how long the leader may stay silent before it pings the followers; it
  // must be well under the followers' collective timeout.
  GroupLeader(GroupParts parts, StepLimits limits, absl::Duration heartbeat_interval);
  ~GroupLeader();  // stops the heartbeat thread (call Shutdown first to release followers)

  // Resolves the plan's sampled-token placeholders in place (SequenceTable::ResolveSampledTokens).
  absl::Status Step(v1::StepPlan& plan, v1::StepResult* result);
  int32_t Release(const v1::ReleaseRequest& request);
  // OK while the group can run steps; otherwise the error that broke it.
  absl::Status health() const;
  // Graceful shutdown, first half: steps keep running (a sequence admitted by the router before
  // it saw the flag is still served), and every result says `draining` so that the router sends
  // new work elsewhere; the owner stops the group once live_sequences() reaches 0.
  void StartDraining();
  bool draining() const;
  // Sequences the router has not released yet.
  int32_t live_sequences() const;
  // Tells the followers to exit (graceful shutdown) and stops the heartbeats.
  void Shutdown();
  // Called once, from the thread that broke the group.
  void OnBroken(std::function<void(const absl::Status&)> callback) { on_broken_ = std::move(callback); }
  const StepLimits& limits() const { return table_.limits(); }

 private:
  void HeartbeatLoop();
  // Requires mu_. Records the failure and turns it into UNAVAILABLE.
  absl::Status Break(const absl::Status& cause);

  GroupParts parts_;
  SequenceTable table_;
  absl::Duration heartbeat_interval_;
  mutable std::mutex mu_;  // one step (or heartbeat) at a time on the group
  absl::Status broken_;
  bool stopping_ = false;
  bool draining_ = false;
  absl::Time last_send_ = absl::Now();
  std::condition_variable wake_;
  std::function<void(const absl::Status&)> on_broken_;
  std::thread heartbeat_;
  model::StepLogits logits_;
};

// Follower main loop: returns OK when the leader sends shutdown, else the error that ended it
// (leader gone: nothing heard within the collective timeout, or a collective failed).
absl::Status RunFollower(const GroupParts& parts);

}  // namespace caduceus::worker
