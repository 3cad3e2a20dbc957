// How a public call that the client ended early is classified and answered, the same for unary
// calls and streams.
#pragma once

#include <algorithm>
#include <chrono>

#include <grpcpp/support/status.h>

#include "router/server/active_request.h"

namespace caduceus::router {

// Why a call that gRPC reports cancelled ended (`started`: when the router received it). The
// client's deadline clock starts before ours, so its cancel (RST_STREAM) can arrive just before
// our own deadline passes (CI once counted a 0.5 s deadline as a cancel); and gRPC sends the
// timeout with a few significant digits, rounded up ("encoding may round up arbitrarily",
// grpc's timeout_encoding.h), so for long timeouts our deadline can lie seconds after the
// client's (a review saw 105 s deadlines counted as cancels). A cancel within 2% of the call's
// length (at least 100 ms) of the deadline is the deadline.
inline CancelReason ReasonForCancel(std::chrono::system_clock::time_point deadline,
                                    std::chrono::system_clock::time_point started) {
  using std::chrono::system_clock;
  if (deadline == system_clock::time_point::max()) return CancelReason::kCancelled;
  const system_clock::duration slack =
      std::max<system_clock::duration>(std::chrono::milliseconds(100), (deadline - started) / 50);
  return deadline < system_clock::now() + slack ? CancelReason::kDeadline
                                                : CancelReason::kCancelled;
}

inline grpc::Status CancelStatus(CancelReason reason) {
  return reason == CancelReason::kDeadline
             ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "deadline exceeded before generation finished")
             : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
}

}  // namespace caduceus::router
