// Usage errors (bad or conflicting flags) must exit 2 while errors from the router exit 1, but
// both are INVALID_ARGUMENT; a status payload tells them apart without a second error type.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace caduceus::tools {

absl::Status UsageError(const std::string& message);
bool IsUsageError(const absl::Status& status);

}  // namespace caduceus::tools
