// gRPC statuses as absl::Status (what our functions pass around) and as the canonical upper-case
// code names (INVALID_ARGUMENT, RESOURCE_EXHAUSTED...) that users and scripts match on.
#pragma once

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "proto/status_conversion.h"

namespace caduceus::tools {

using ::caduceus::FromGrpcStatus;  // proto/status_conversion.h

// "OK", "INVALID_ARGUMENT", ...
std::string StatusCodeName(absl::StatusCode code);

}  // namespace caduceus::tools
