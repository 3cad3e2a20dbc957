// Serves Worker.Step on one long-lived thread that waits on its own completion queue and runs
// every step itself.
//
// Why not the synchronous API like the other worker methods: there gRPC hands each call to
// whichever thread of its pool is free, and creates and retires pool threads as the load moves.
// Every thread that runs a forward pass becomes an OpenMP master with a thread team of its own,
// so steps kept landing on new teams (at concurrency 32, all of the pool's threads were replaced
// within 10 s), paying thread creation, cold caches and, with more OpenMP threads alive than
// cores, libgomp's throttled spinning (a futex sleep at nearly every barrier). One thread keeps
// one warm team, and needs no hand-off to a compute thread (which costs a wake-up per step).
//
// Order: a pipelining router sends a plan before the results of the plans ahead of it are back
// (StepPlan.previous_step_id), and two calls on one channel can reach the server in either
// order. A plan that arrives before the step it follows is held until that step has run, then
// runs right after it; if that step never comes (the router abandoned it), the plan runs after
// kHoldLimit and the leader's validation decides, so nothing waits forever.
//
// Responses are sent by a second thread. Finish serializes the result and writes it inline,
// and on the 2-vCPU test machine that held the step thread for 1.3 ms per step (10% of a
// batch-32 step), while with pipelined steps the next plan is already waiting for it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "worker/server/tp_group.h"
#include "worker/server/worker_service.h"

namespace caduceus::worker {

class StepServer {
 public:
  // `service` must be registered with `builder`; call Start after BuildAndStart.
  StepServer(WorkerService* service, GroupLeader* leader, grpc::ServerBuilder& builder);
  ~StepServer();  // calls Stop

  void Start();
  // Stops asking gRPC for new Step calls, then shuts `server` down (calls in progress get until
  // `deadline`). Use it instead of server.Shutdown: gRPC aborts the process when a call is
  // requested from a server that is shutting down, and the step thread requests the next call
  // whenever one arrives (a worker died of it when a step came in as its drain ended,
  // 2026-12-01).
  void ShutdownServer(grpc::Server& server, std::chrono::system_clock::time_point deadline);
  // After ShutdownServer: drains the queue and joins the thread. Idempotent.
  void Stop();

 private:
  struct Call;
  void Run();
  // Runs `call` unless it must wait for an earlier step, then every held call that was waiting
  // for the step just run.
  void Dispatch(Call* call);
  void Execute(Call* call);
  // Runs held calls that waited longer than kHoldLimit (oldest step first).
  void RunExpiredHolds();
  // Hands a finished call to the responder thread (or answers inline once it has stopped).
  void Respond(Call* call);
  void RunResponder();
  // Finishes the call; once the queue is shut down (Stop), drops it instead (see Stop).
  void SendResponse(Call* call);

  WorkerService* const service_;
  GroupLeader* const leader_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  std::mutex respond_mu_;
  std::condition_variable respond_cv_;
  std::deque<Call*> to_respond_;  // guarded by respond_mu_
  bool responder_stopped_ = false;  // guarded by respond_mu_
  std::thread responder_;
  bool stopped_ = false;
  std::mutex request_mu_;
  bool accepting_ = true;  // guarded by request_mu_: false once the server shuts down
  // Set by Stop: the step thread runs no held plan any more.
  std::atomic<bool> stopping_{false};
  // Finish on a shut-down completion queue aborts the process (gRPC asserts it), and the step
  // thread may still answer a call while Stop shuts the queue down: the two take this lock.
  std::mutex finish_mu_;
  bool cq_shut_ = false;  // guarded by finish_mu_
  // Step thread only: calls that arrived before the step they follow, keyed by that step's id,
  // with the time they arrived; and the step run last.
  std::map<uint64_t, std::pair<Call*, std::chrono::steady_clock::time_point>> held_;
  uint64_t last_step_id_ = 0;
};

// How long a pipelined plan waits for the step it follows (two calls of one router arrive
// microseconds apart; a missing one was abandoned).
inline constexpr std::chrono::milliseconds kHoldLimit{2000};

}  // namespace caduceus::worker
