// Reads a whole file into memory; the error names the path (and, for the callers that pass one,
// the flag it came from) so that a person can act on it.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace caduceus {

// NOT_FOUND when the file cannot be opened, INTERNAL on a read error. `what` (e.g. "--tls-cert")
// prefixes the message when given.
absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view what = {});

}  // namespace caduceus
