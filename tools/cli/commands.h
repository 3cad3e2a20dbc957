// The subcommands of caduceus-cli. Each returns the status to report; output goes to stdout.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "tools/cli/router_connection.h"

namespace caduceus::tools {

struct CommandEnv {
  const RouterConnection& connection;
  std::chrono::duration<double> timeout;  // per call; <= 0: no deadline
};

// GetModelInfo, printed as one JSON object.
absl::Status RunInfo(const CommandEnv& env);

// Tokenize --text (or the chat template rendering of `messages_file`), printed as
// {"token_ids": [...], "tokens": [...]}.
absl::Status RunTokenize(const CommandEnv& env, const std::string& messages_file);

// Score --context/--continuation (text) or --context-ids/--continuation-ids, printed as one JSON
// object: the sum, is_greedy, and each continuation token's logprob and greedy token.
absl::Status RunScore(const CommandEnv& env);

// Generate from --prompt or --prompt-ids (chat = false) or Chat from `messages_file`. Streams the
// text unless `json` (then one JSON object is the last stdout line; --stream streams it too).
absl::Status RunGenerate(const CommandEnv& env, bool chat, const std::string& messages_file,
                         bool json);

}  // namespace caduceus::tools
