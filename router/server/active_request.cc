#include "router/server/active_request.h"

namespace caduceus::router {

std::optional<v1::GenerateStreamResponse> ActiveRequest::Pop(absl::Duration wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(wait),
               [this] { return !outbox_.empty() || !error_.ok(); });
  if (!error_.ok() || outbox_.empty()) return std::nullopt;
  v1::GenerateStreamResponse message = std::move(outbox_.front());
  outbox_.pop_front();
  return message;
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_pushed_ || !error_.ok()) return;
    outbox_.push_back(std::move(message));
    final_pushed_ = final;
  }
  cv_.notify_all();
}

void ActiveRequest::Fail(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_pushed_ || !error_.ok()) return;
    error_ = std::move(status);
  }
  cv_.notify_all();
}

}  // namespace caduceus::router
