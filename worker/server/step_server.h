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
#pragma once

#include <memory>
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
  // After grpc::Server::Shutdown: drains the queue and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();

  WorkerService* const service_;
  GroupLeader* const leader_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace caduceus::worker
