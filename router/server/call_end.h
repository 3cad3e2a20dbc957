// How a public call that the client ended early is classified and answered, the same for unary
// calls and streams.
#pragma once

#include <chrono>

#include <grpcpp/support/status.h>

#include "router/server/active_request.h"

namespace caduceus::router {

// Why a call that gRPC reports cancelled ended. The client's deadline clock starts before ours,
// so its cancel (RST_STREAM) can arrive just before our own deadline passes (CI once counted a
// 0.5 s deadline as a cancel): a cancel that close to the deadline is the deadline.
inline CancelReason ReasonForCancel(std::chrono::system_clock::time_point deadline) {
  constexpr std::chrono::milliseconds kSlack{100};
  return deadline < std::chrono::system_clock::now() + kSlack ? CancelReason::kDeadline
                                                              : CancelReason::kCancelled;
}

inline grpc::Status CancelStatus(CancelReason reason) {
  return reason == CancelReason::kDeadline
             ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "deadline exceeded before generation finished")
             : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
}

}  // namespace caduceus::router
