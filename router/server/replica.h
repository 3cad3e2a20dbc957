// One worker group (a model replica) as the router sees it: its scheduler, the requests it runs,
// and the loop thread that turns scheduler steps into Step RPCs on the group's leader.
//
// Threads: RPC handler threads call Submit (under mu_) and flag cancellations on the request;
// the loop thread owns everything else. The loop never holds mu_ during an RPC, so submissions
// are not delayed by a running step; cancellations take effect at the next step boundary.
//
// Failure: a Step that fails other than with INVALID_ARGUMENT means the group is gone (workers
// exit when their group breaks), so its KV cache is gone too. Its requests move to other
// replicas (at most options.max_failovers times each), where they recompute their prompt and the
// tokens they generated so far and go on: a client's stream continues without a gap or a
// duplicate, and with the same tokens (sampling draws depend only on seed and position). Those
// that cannot move fail with UNAVAILABLE. The replica is marked down and reconnects (Info, fresh
// scheduler) once its health check answers again.
//
// Pipelining (options.pipeline_depth 2, the default): the loop sends step N+1, planned with
// Scheduler::ScheduleAhead, before step N's result is back, so the worker starts N+1 as soon as
// it finishes N instead of waiting a round trip and the router's bookkeeping (the RPC, streaming
// N's tokens, planning). The worker's leader runs Step calls one at a time in arrival order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/support/status.h>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "caduceus/worker/v1/worker.grpc.pb.h"
#include "router/scheduler/scheduler.h"
#include "router/server/active_request.h"
#include "router/server/request_spec.h"
#include "router/server/router_metrics.h"

namespace caduceus::router {

struct ReplicaOptions {
  SchedulerConfig scheduler;       // block geometry is replaced by the worker's Info
  absl::Duration step_timeout = absl::Seconds(120);
  // Steps in flight per replica: 1 = plan, send, wait; 2 = plan the next step while one runs.
  int32_t pipeline_depth = 2;
  absl::Duration health_interval = absl::Seconds(1);
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  bool log_payloads = false;
  // Registered replicas (not --replica ones) down this long are forgotten: a worker pod that
  // crashed and was replaced advertises a new address, and the old one would count as down forever
  // (alerts, a probe loop, stale series). Longer than the replica-down alert's 5 minutes, so a
  // group that dies for good still alerts; a leader that leaves gracefully deregisters at once. A
  // live leader whose heartbeat finds itself forgotten registers again.
  absl::Duration forget_after = absl::Seconds(600);
  // Registered replicas at most (RESOURCE_EXHAUSTED past it): each has a thread and a channel.
  int32_t max_registered = 64;
  // Times one request may move to another replica because its replica failed (docs/
  // architecture.md, "Failover"). Bounded because a request that crashes workers (a "query of
  // death") would otherwise take down every replica in turn; 0 fails every request of a
  // failed replica.
  int32_t max_failovers = 1;
};

class Replica {
 public:
  // Re-routes a request that had not started when this replica began draining.
  using Resubmit = std::function<absl::Status(std::shared_ptr<ActiveRequest>)>;
  Replica(std::string address, ReplicaOptions options, const ModelTextContext* model,
          RouterMetrics* metrics, Resubmit resubmit);
  ~Replica();

  const std::string& address() const { return address_; }

  // Queues a request. UNAVAILABLE when the replica is down, RESOURCE_EXHAUSTED when its waiting
  // queue is full, INVALID_ARGUMENT when the request can never fit its KV cache.
  absl::Status Submit(std::shared_ptr<ActiveRequest> request);
  // A registered leader's heartbeat (it counts as a successful health check).
  void Heartbeat(bool serving);
  // Stops the replica (it is being removed, its drain over): requests still on it move to other
  // replicas and go on where they stopped; those no replica takes fail with `why`.
  void Retire(const absl::Status& why);

  struct Load {
    bool up = false;
    bool draining = false;  // up, finishing its requests, taking no new ones
    int64_t waiting = 0, running = 0, waiting_tokens = 0;
    double kv_usage = 0;
    int64_t num_blocks = 0, block_size = 0;
    // Free KV blocks minus what the waiting queue will need: where a new request fits best.
    double FreeCapacity() const;
  };
  Load load() const;
  // What the worker reported when the replica came up (nullopt while down).
  std::optional<worker::v1::InfoResponse> info() const;
  int64_t in_flight() const;
  // How long it has been down (since its last good health check, or since it was added when it
  // never came up); zero while up.
  absl::Duration DownFor() const;

 private:
  void Loop();
  // Info + scheduler. Requires !mu_ held. False while the worker cannot be reached.
  bool Connect();
  enum class Health { kServing, kDraining, kUnreachable };
  Health ProbeHealth();
  // Each of these requires mu_.
  void HandleCancellations(std::vector<uint64_t>* release);
  void FailAll(const absl::Status& status);
  void Release(const std::vector<uint64_t>& ids);
  // The steps of Loop. Each requires mu_ (held through `lock` where it is passed: it may be
  // released for RPCs and re-routing; OnStepFailed returns with it released).
  worker::v1::StepPlan BuildPlan(const ScheduledStep& step);
  std::vector<uint64_t> ApplyResult(const ScheduledStep& step, const worker::v1::StepResult& result);
  // A step failed: the steps sent after it are abandoned too (their results, if any, are not
  // applied). A refused step alone fails its requests (rolled back first); anything else resets
  // the replica as lost.
  void OnStepFailed(const grpc::Status& status, std::unique_lock<std::mutex>& lock);
  void CheckIdleHealth(std::unique_lock<std::mutex>& lock);
  // Requires mu_. Down: no scheduler, no Info, no KV-usage series until it reconnects.
  void MarkDownLocked();
  void CountSchedulerEvents();
  // Fails one request with `error`, frees its blocks and queues its release on the worker.
  void DropRequest(uint64_t seq, const absl::Status& error, std::vector<uint64_t>* release);
  // Requires mu_. Marks the replica draining and takes its not-yet-started requests out of the
  // scheduler; the caller re-routes them after releasing mu_ (ReplicaSet locks other replicas).
  std::vector<std::shared_ptr<ActiveRequest>> BeginDraining();
  // Requires mu_. Removes the requests for which `take` answers true (it may mark their
  // progress for the move), from the scheduler too. The move functions are in replica_moves.cc.
  std::vector<std::shared_ptr<ActiveRequest>> TakeWhere(absl::FunctionRef<bool(ActiveRequest&)> take);
  // Requires mu_. Removes the requests that have not had a step yet.
  std::vector<std::shared_ptr<ActiveRequest>> TakeUnstarted();
  // Requires mu_. Removes the requests that move to other replicas, pinning those that have sent
  // output to this replica's model revision. `failed`: the replica failed; only requests that
  // moved fewer than options_.max_failovers times go, and this move counts. Otherwise (it left
  // after its drain) all go, and the move does not count: nothing suggests they harm a worker.
  std::vector<std::shared_ptr<ActiveRequest>> TakeForMove(bool failed);
  // Submits each request elsewhere; one that no replica takes fails with the submission's error,
  // or, when `failed` is set (it is moving off a failed replica), with UNAVAILABLE naming both.
  void Reroute(std::vector<std::shared_ptr<ActiveRequest>> requests,
               const absl::Status& failed = absl::OkStatus());

  // A Step call in flight (loop thread only). Its tag on cq_ is the object itself.
  struct InFlightStep {
    ScheduledStep step;
    grpc::ClientContext context;
    worker::v1::StepResult result;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<worker::v1::StepResult>> call;
    absl::Time sent;
    bool done = false;
  };
  // Starts the Step RPC of `step`. Requires !mu_ held.
  void SendStep(ScheduledStep step, const worker::v1::StepPlan& plan);
  // Blocks until `step` (in flight) has completed. Requires !mu_ held. A step running longer
  // than options_.heartbeat_timeout is watched with health checks: when the worker stops
  // answering them for that long, the steps in flight are cancelled (they fail, and the
  // replica's requests move) instead of waiting for options_.step_timeout.
  void AwaitDone(InFlightStep& step);
  // Cancels every step in flight and waits for them to complete. Requires !mu_ held.
  void AbandonInFlight();
  const std::string address_;
  const ReplicaOptions options_;
  const ModelTextContext* model_;
  RouterMetrics* metrics_;
  std::unique_ptr<worker::v1::Worker::Stub> stub_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<Scheduler> scheduler_;  // null while down
  std::optional<worker::v1::InfoResponse> info_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<ActiveRequest>> requests_;
  bool up_ = false;
  bool draining_ = false;
  Resubmit resubmit_;
  absl::Time last_ok_ = absl::InfinitePast();
  const absl::Time added_ = absl::Now();
  bool stop_ = false;
  int64_t preemptions_seen_ = 0, prefix_hits_seen_ = 0;
  uint64_t next_step_id_ = 1;  // 0 is "no step" in StepPlan.previous_step_id
  grpc::CompletionQueue cq_;                              // the loop's Step calls
  std::deque<std::unique_ptr<InFlightStep>> in_flight_;  // oldest first; loop thread only
  absl::Time last_result_ = absl::InfinitePast();
  std::thread loop_;  // last: starts after every member above is initialized
};

}  // namespace caduceus::router
