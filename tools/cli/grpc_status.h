// gRPC statuses as absl::Status (what our functions pass around) and as the canonical upper-case
// code names (INVALID_ARGUMENT, RESOURCE_EXHAUSTED...) that users and scripts match on.
#pragma once

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace caduceus::tools {

// gRPC and absl share the canonical code numbering, so the code carries over unchanged.
absl::Status FromGrpcStatus(const grpc::Status& status);

// "OK", "INVALID_ARGUMENT", ...
std::string StatusCodeName(absl::StatusCode code);

}  // namespace caduceus::tools
