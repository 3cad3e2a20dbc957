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

// A secret token from a file (typically a mounted Kubernetes Secret), surrounding whitespace
// trimmed. Empty `path`: an empty token (the feature is off). A file holding only whitespace is
// INVALID_ARGUMENT ("<flag> is empty"); read errors as ReadFile, prefixed with `flag`.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path, std::string_view flag);

}  // namespace caduceus
