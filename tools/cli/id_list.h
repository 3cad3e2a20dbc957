// Comma-separated token ids from a command-line flag (--prompt-ids, --context-ids, ...).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace caduceus::tools {

// A usage error naming `flag` when a part is not an integer or the list is empty.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& csv, const std::string& flag);

}  // namespace caduceus::tools
