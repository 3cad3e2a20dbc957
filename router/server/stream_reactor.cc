#include "router/server/stream_reactor.h"

#include <mutex>

#include "proto/status_conversion.h"
#include "router/server/audit_log.h"
#include "router/server/call_end.h"

namespace caduceus::router {

// What the request calls on every push. It outlives the reactor (the request holds it), so it
// keeps a pointer that OnDone clears under the same mutex; a push that races with the end of
// the stream then finds no reactor and does nothing.
class StreamReactor::Link final : public StreamListener {
 public:
  explicit Link(StreamReactor* reactor) : reactor_(reactor) {}

  void OnOutput() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (reactor_ != nullptr) reactor_->PumpLocked();
  }

  std::mutex mu_;
  StreamReactor* reactor_;
};

StreamReactor::StreamReactor(grpc::CallbackServerContext* context,
                             std::shared_ptr<ActiveRequest> request, bool fold_text, DoneCallback on_done)
    : context_(context),
      request_(std::move(request)),
      fold_text_(fold_text),
      on_done_(std::move(on_done)),
      link_(std::make_shared<Link>(this)) {}

void StreamReactor::Start() {
  request_->SetListener(link_);
  std::lock_guard<std::mutex> lock(link_->mu_);
  PumpLocked();  // anything pushed before the listener was set
}

void StreamReactor::Abort(const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(link_->mu_);
  FinishLocked(status);
}

void StreamReactor::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  status_ = status;
  // gRPC does not run OnDone inline from Finish, so holding the mutex here cannot deadlock.
  Finish(status);
}

void StreamReactor::PumpLocked() {
  if (writing_ || finished_) return;
  if (cancelled_) {
    FinishLocked(*cancelled_);
    return;
  }
  if (std::optional<v1::GenerateStreamResponse> message = request_->TryPop()) {
    FoldMessage(*message, &sent_, fold_text_);
    const std::string bytes = message->SerializeAsString();
    grpc::Slice slice(bytes);
    current_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    if (message->finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finished_ = true;
      StartWriteAndFinish(&current_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartWrite(&current_);
    }
    return;
  }
  if (request_->done()) FinishLocked(ToGrpcStatus(request_->error()));
}

void StreamReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(link_->mu_);
  writing_ = false;
  if (!ok) {  // the client went away (or the call was cancelled) while we wrote
    request_->RequestCancel(CancelReason::kCancelled);
    FinishLocked(cancelled_.value_or(CancelStatus(CancelReason::kCancelled)));
    return;
  }
  PumpLocked();
}

void StreamReactor::OnCancel() {
  const CancelReason reason =
      ReasonForCancel(context_->deadline(), absl::ToChronoTime(request_->arrival()));
  request_->RequestCancel(reason);
  const grpc::Status status = CancelStatus(reason);
  std::lock_guard<std::mutex> lock(link_->mu_);
  if (writing_) {
    cancelled_ = status;  // finished when the write in flight completes
    return;
  }
  FinishLocked(status);
}

void StreamReactor::OnDone() {
  {
    std::lock_guard<std::mutex> lock(link_->mu_);
    link_->reactor_ = nullptr;
  }
  request_->SetListener(nullptr);
  on_done_(status_, sent_);
  delete this;
}

}  // namespace caduceus::router
