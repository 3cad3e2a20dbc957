#include "router/server/active_request.h"

namespace caduceus::router {

std::vector<v1::GenerateStreamResponse> ActiveRequest::PopAll(absl::Duration wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(wait),
               [this] { return final_pushed_ || !error_.ok(); });
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
  // A unary handler needs only the end; waking it for every token would cost a context switch
  // per token on a machine whose cores the worker also wants.
  if (final) cv_.notify_all();
  if (listener) listener->OnOutput();
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
