// The leader's gRPC service (caduceus.worker.v1.Worker): a thin adapter from RPCs to GroupLeader.
#pragma once

#include <grpcpp/grpcpp.h>

#include "caduceus/worker/v1/worker.grpc.pb.h"
#include "worker/server/tp_group.h"

namespace caduceus::worker {

// Step is asynchronous: StepServer (step_server.h) serves it on a thread of its own.
class WorkerService final : public v1::Worker::WithAsyncMethod_Step<v1::Worker::Service> {
 public:
  WorkerService(GroupLeader* leader, v1::InfoResponse info) : leader_(leader), info_(std::move(info)) {}

  grpc::Status Info(grpc::ServerContext*, const v1::InfoRequest*, v1::InfoResponse* response) override;
  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override;
  grpc::Status Health(grpc::ServerContext*, const v1::HealthRequest*,
                      v1::HealthResponse* response) override;

 private:
  GroupLeader* leader_;
  const v1::InfoResponse info_;
};

}  // namespace caduceus::worker
