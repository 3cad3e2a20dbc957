#include "worker/server/worker_service.h"

#include <string>

#include "proto/status_conversion.h"

namespace caduceus::worker {

grpc::Status WorkerService::Info(grpc::ServerContext*, const v1::InfoRequest*,
                                 v1::InfoResponse* response) {
  *response = info_;
  response->set_rank_count_healthy(leader_->health().ok() ? info_.tp_size() : 0);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) {
  response->set_released(leader_->Release(*request));
  return grpc::Status::OK;
}

grpc::Status WorkerService::Health(grpc::ServerContext*, const v1::HealthRequest*,
                                   v1::HealthResponse* response) {
  const absl::Status health = leader_->health();
  const bool draining = leader_->draining();
  response->set_serving(health.ok() && !draining);
  response->set_draining(draining);
  response->set_message(draining ? "draining (graceful shutdown)" : std::string(health.message()));
  return grpc::Status::OK;
}

}  // namespace caduceus::worker
