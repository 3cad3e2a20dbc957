#include "router/server/active_request.h"

namespace caduceus::router {

std::vector<v1::GenerateStreamResponse> ActiveRequest::PopAll(absl::Duration wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(wait),
               [this] { return !outbox_.empty() || !error_.ok(); });
  std::vector<v1::GenerateStreamResponse> messages;
  if (!error_.ok()) return messages;
  messages.assign(std::make_move_iterator(outbox_.begin()), std::make_move_iterator(outbox_.end()));
  outbox_.clear();
  return messages;
}

std::optional<v1::GenerateStreamResponse> ActiveRequest::TryPop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_.ok() || outbox_.empty()) return std::nullopt;
  v1::GenerateStreamResponse message = std::move(outbox_.front());
  outbox_.pop_front();
  return message;
}

void ActiveRequest::SetListener(std::shared_ptr<StreamListener> listener) {
  std::lock_guard<std::mutex> lock(mu_);
  listener_ = std::move(listener);
}

bool ActiveRequest::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !error_.ok() || (final_pushed_ && outbox_.empty());
}

absl::Status ActiveRequest::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void ActiveRequest::Push(v1::GenerateStreamResponse message, bool final) {
  std::shared_ptr<StreamListener> listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_pushed_ || !error_.ok()) return;
    outbox_.push_back(std::move(message));
    final_pushed_ = final;
    listener = listener_;
  }
  if (!listener) {
    // A unary handler. Waking it only for the final message would save a context switch per
    // token, but it then checks its deadline only every 50 ms, and once in CI a client's
    // deadline was counted as a cancel (the client's RST_STREAM came before the server's own
    // deadline had passed, and the 50 ms tick fell in between). Streams have a listener.
    cv_.notify_all();
    return;
  }
  listener->OnOutput();
}

void ActiveRequest::Fail(absl::Status status) {
  std::shared_ptr<StreamListener> listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_pushed_ || !error_.ok()) return;
    error_ = std::move(status);
    listener = listener_;
  }
  cv_.notify_all();
  if (listener) listener->OnOutput();
}

}  // namespace caduceus::router
