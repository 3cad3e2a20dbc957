#include "worker/server/step_server.h"

#include "proto/status_conversion.h"

namespace caduceus::worker {
// One Step call, from the request for it until its response is sent. Its address is the tag
// of both completion-queue events it takes part in.
struct StepServer::Call {
  grpc::ServerContext context;
  v1::StepPlan plan;
  v1::StepResult result;
  absl::Status status;
  grpc::ServerAsyncResponseWriter<v1::StepResult> responder{&context};
  bool answered = false;  // the next event is the end of the response
};

StepServer::StepServer(WorkerService* service, GroupLeader* leader, grpc::ServerBuilder& builder)
    : service_(service), leader_(leader), cq_(builder.AddCompletionQueue()) {}

StepServer::~StepServer() { Stop(); }

void StepServer::Start() {
  responder_ = std::thread([this] { RunResponder(); });
  thread_ = std::thread([this] { Run(); });
}

void StepServer::ShutdownServer(grpc::Server& server,
                                std::chrono::system_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(request_mu_);
    accepting_ = false;
  }
  server.Shutdown(deadline);
}

void StepServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_ = true;
  {
    std::lock_guard<std::mutex> lock(respond_mu_);
    responder_stopped_ = true;
  }
  respond_cv_.notify_one();
  if (responder_.joinable()) responder_.join();  // answers what is queued first
  {
    // The step thread may still be running a plan (one held past the server's shutdown
    // deadline): from now on it drops its answer instead of finishing the call.
    std::lock_guard<std::mutex> lock(finish_mu_);
    cq_shut_ = true;
  }
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
}

void StepServer::Respond(Call* call) {
  {
    std::lock_guard<std::mutex> lock(respond_mu_);
    if (!responder_stopped_) {
      to_respond_.push_back(call);
      respond_cv_.notify_one();
      return;
    }
  }
  SendResponse(call);
}

void StepServer::RunResponder() {
  std::unique_lock<std::mutex> lock(respond_mu_);
  while (true) {
    respond_cv_.wait(lock, [this] { return responder_stopped_ || !to_respond_.empty(); });
    if (to_respond_.empty()) return;  // stopped, nothing left
    Call* call = to_respond_.front();
    to_respond_.pop_front();
    lock.unlock();
    SendResponse(call);  // the step thread deletes the call when this completes
    lock.lock();
  }
}

void StepServer::Run() {
  // Under request_mu_, so that the server cannot begin its shutdown between the check and the
  // request (see ShutdownServer).
  auto request_next = [this] {
    std::lock_guard<std::mutex> lock(request_mu_);
    if (!accepting_) return;
    auto* call = new Call;
    service_->RequestStep(&call->context, &call->plan, &call->responder, cq_.get(), cq_.get(), call);
  };
  request_next();
  void* tag = nullptr;
  bool ok = false;
  while (true) {
    // With plans on hold, wake up now and then to release those that waited too long.
    const auto status =
        held_.empty()
            ? (cq_->Next(&tag, &ok) ? grpc::CompletionQueue::GOT_EVENT
                                    : grpc::CompletionQueue::SHUTDOWN)
            : cq_->AsyncNext(&tag, &ok, std::chrono::system_clock::now() + kHoldLimit / 10);
    if (status == grpc::CompletionQueue::SHUTDOWN) break;
    if (status == grpc::CompletionQueue::TIMEOUT) {
      if (!stopping_) RunExpiredHolds();
      continue;
    }
    auto* call = static_cast<Call*>(tag);
    if (call->answered || !ok) {  // a response went out, or the server is shutting down
      delete call;
      continue;
    }
    // The next call can arrive while this one runs (another router, or a retry); gRPC queues it.
    request_next();
    Dispatch(call);
    RunExpiredHolds();
  }
  // Shutting down: the calls still on hold get no answer (the server cancels them).
  for (auto& [step, held] : held_) delete held.first;
  held_.clear();
}

void StepServer::Dispatch(Call* call) {
  const uint64_t previous = call->plan.previous_step_id();
  if (previous != 0 && previous != last_step_id_ && held_.count(previous) == 0) {
    held_.emplace(previous, std::make_pair(call, std::chrono::steady_clock::now()));
    return;
  }
  Execute(call);
}

void StepServer::Execute(Call* call) {
  // This call, then the plans that were waiting for it, in order.
  while (call != nullptr) {
    call->status = leader_->Step(call->plan, &call->result);
    last_step_id_ = call->plan.step_id();
    call->answered = true;
    Respond(call);
    auto next = held_.find(last_step_id_);
    call = next != held_.end() ? next->second.first : nullptr;
    if (call != nullptr) held_.erase(next);
  }
}

void StepServer::RunExpiredHolds() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = held_.begin(); it != held_.end();) {
    if (now - it->second.second < kHoldLimit) {
      ++it;
      continue;
    }
    Call* call = it->second.first;
    held_.erase(it);
    Execute(call);  // may run (and erase) later held calls too
    it = held_.begin();
  }
}

void StepServer::SendResponse(Call* call) {
  std::lock_guard<std::mutex> lock(finish_mu_);
  if (cq_shut_) {
    // The server has shut down and cancelled the call; no completion will come to delete it.
    delete call;
    return;
  }
  if (call->status.ok()) {
    call->responder.Finish(call->result, grpc::Status::OK, call);
  } else {
    call->responder.FinishWithError(ToGrpcStatus(call->status), call);
  }
}

}  // namespace caduceus::worker
