// Reads a chat conversation file: a JSON list of {"role", "content"} objects (or an object with
// such a list under "messages"), the format caduceus-generate --chat accepts.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "caduceus/v1/generation.pb.h"

namespace caduceus::tools {

absl::StatusOr<std::vector<caduceus::v1::ChatMessage>> ReadChatMessages(const std::string& path);

}  // namespace caduceus::tools
