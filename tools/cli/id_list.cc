#include "tools/cli/id_list.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tools/cli/usage_error.h"

namespace caduceus::tools {

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& csv, const std::string& flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(csv, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return UsageError(flag + ": '" + std::string(part) + "' is not an integer");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return UsageError(flag + " is empty");
  return ids;
}

}  // namespace caduceus::tools
