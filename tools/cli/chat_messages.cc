#include "tools/cli/chat_messages.h"

#include <fstream>

#include "nlohmann/json.hpp"

namespace caduceus::tools {

absl::StatusOr<std::vector<caduceus::v1::ChatMessage>> ReadChatMessages(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("--messages: cannot open " + path);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_object() && doc.contains("messages")) doc = doc["messages"];
  if (!doc.is_array() || doc.empty()) {
    return absl::InvalidArgumentError("--messages: " + path +
                                      " must hold a non-empty JSON list of messages");
  }
  std::vector<caduceus::v1::ChatMessage> messages;
  for (const auto& m : doc) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return absl::InvalidArgumentError("--messages: each message needs string 'role' and 'content'");
    }
    caduceus::v1::ChatMessage& message = messages.emplace_back();
    message.set_role(m["role"].get<std::string>());
    message.set_content(m["content"].get<std::string>());
  }
  return messages;
}

}  // namespace caduceus::tools
