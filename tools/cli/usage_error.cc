#include "tools/cli/usage_error.h"

#include "absl/strings/cord.h"

namespace caduceus::tools {

namespace {
constexpr char kUsagePayload[] = "type.caduceus.dev/cli.UsageError";
}

absl::Status UsageError(const std::string& message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

}  // namespace caduceus::tools
