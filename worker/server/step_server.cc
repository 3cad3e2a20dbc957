#include "worker/server/step_server.h"

#include "proto/status_conversion.h"

namespace caduceus::worker {
namespace {

// One Step call, from the request for it until its response is sent. Its address is the tag
// of both completion-queue events it takes part in.
struct StepCall {
  grpc::ServerContext context;
  v1::StepPlan plan;
  v1::StepResult result;
  grpc::ServerAsyncResponseWriter<v1::StepResult> responder{&context};
  bool answered = false;  // the next event is the end of the response
};

}  // namespace

StepServer::StepServer(WorkerService* service, GroupLeader* leader, grpc::ServerBuilder& builder)
    : service_(service), leader_(leader), cq_(builder.AddCompletionQueue()) {}

StepServer::~StepServer() { Stop(); }

void StepServer::Start() { thread_ = std::thread([this] { Run(); }); }

void StepServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
}

void StepServer::Run() {
  auto request_next = [this] {
    auto* call = new StepCall;
    service_->RequestStep(&call->context, &call->plan, &call->responder, cq_.get(), cq_.get(), call);
  };
  request_next();
  void* tag = nullptr;
  bool ok = false;
  bool accepting = true;
  while (cq_->Next(&tag, &ok)) {
    auto* call = static_cast<StepCall*>(tag);
    if (call->answered || !ok) {  // a response went out, or the server is shutting down
      if (!call->answered) accepting = false;
      delete call;
      continue;
    }
    // The next call can arrive while this one runs (another router, or a retry); gRPC queues it.
    if (accepting) request_next();
    const absl::Status status = leader_->Step(call->plan, &call->result);
    call->answered = true;
    if (status.ok()) {
      call->responder.Finish(call->result, grpc::Status::OK, call);
    } else {
      call->responder.FinishWithError(ToGrpcStatus(status), call);
    }
  }
}

}  // namespace caduceus::worker
