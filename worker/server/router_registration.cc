#include "worker/server/router_registration.h"

#include <chrono>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "caduceus/worker/v1/worker.grpc.pb.h"
#include "common/log.h"

namespace caduceus::worker {

RouterRegistration::RouterRegistration(std::string router_address, std::string advertise_address,
                                       v1::InfoResponse info, std::function<bool()> serving,
                                       std::string token)
    : router_address_(std::move(router_address)),
      advertise_address_(std::move(advertise_address)),
      info_(std::move(info)),
      token_(std::move(token)),
      serving_(std::move(serving)),
      thread_([this] { Loop(); }) {}

RouterRegistration::~RouterRegistration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void RouterRegistration::Deregister(const std::string& router_address,
                                    const std::string& advertise_address, const std::string& token) {
  auto stub = v1::ReplicaRegistry::NewStub(
      grpc::CreateChannel(router_address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::DeregisterRequest request;
  request.set_address(advertise_address);
  v1::DeregisterResponse response;
  const grpc::Status status = stub->Deregister(&context, request, &response);
  if (!status.ok()) {
    LogWarning(absl::StrCat("could not deregister from router ", router_address, " (",
                            status.error_message(), "); it forgets this replica later"));
  } else {
    LogInfo(absl::StrCat("deregistered from router ", router_address,
                         response.known() ? "" : " (it had already forgotten this replica)"));
  }
}

void RouterRegistration::Loop() {
  auto stub = v1::ReplicaRegistry::NewStub(
      grpc::CreateChannel(router_address_, grpc::InsecureChannelCredentials()));
  std::string replica_id;
  double interval = 1.0;
  bool reachable = true;  // for logging state changes only
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (!token_.empty()) context.AddMetadata("authorization", "Bearer " + token_);
    grpc::Status status;
    if (replica_id.empty()) {
      v1::RegisterRequest request;
      request.set_address(advertise_address_);
      *request.mutable_info() = info_;
      v1::RegisterResponse response;
      status = stub->Register(&context, request, &response);
      if (status.ok()) {
        replica_id = response.replica_id();
        if (response.heartbeat_interval_seconds() > 0) interval = response.heartbeat_interval_seconds();
        LogInfo(absl::StrCat("registered with router ", router_address_, " as replica ", replica_id,
                             " (", advertise_address_, ")"));
      }
    } else {
      v1::HeartbeatRequest request;
      request.set_replica_id(replica_id);
      request.set_address(advertise_address_);
      request.set_serving(serving_());
      v1::HeartbeatResponse response;
      status = stub->Heartbeat(&context, request, &response);
      if (status.ok() && !response.known()) {
        LogWarning(absl::StrCat("router ", router_address_, " forgot replica ", replica_id,
                                "; registering again"));
        replica_id.clear();
        lock.lock();
        continue;
      }
    }
    if (!status.ok() && reachable) {
      LogWarning(absl::StrCat("router ", router_address_, " unreachable (", status.error_message(),
                              "); retrying every ", interval, " s"));
    }
    reachable = status.ok();
    lock.lock();
    wake_.wait_for(lock, std::chrono::duration<double>(interval), [this] { return stop_; });
  }
}

}  // namespace caduceus::worker
