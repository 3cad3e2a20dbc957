// caduceus-cli: a command-line client of the router's public API (caduceus.v1.Generation).
//
//   caduceus-cli --router HOST:PORT info
//   caduceus-cli --router HOST:PORT generate (--prompt TEXT | --prompt-ids 1,2,3) [sampling flags]
//       [--json [--stream]] [--request-id ID]
//   caduceus-cli --router HOST:PORT chat --messages FILE.json [sampling flags] [--json [--stream]]
//   caduceus-cli --router HOST:PORT tokenize (--text T [--add-bos] [--allow-special] | --messages F)
//   caduceus-cli --router HOST:PORT score ([--context T] --continuation T |
//       --context-ids 1,2 --continuation-ids 3,4)
//
// Sampling flags are caduceus-generate's (--max-new-tokens --temperature --top-k --top-p --min-p
// --repetition-penalty --frequency-penalty --presence-penalty --seed --logprobs --stop
// --ignore-eos), and --json prints the same object, so a served answer can be compared with a
// local one. Errors go to stderr as "error: <CODE>: <message>"; exit 1 for failed calls, 2 for
// usage errors. --api-token-file sends "authorization: Bearer <token>"; --tls-ca enables TLS.
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "common/cli_flags.h"
#include "tools/cli/commands.h"
#include "tools/cli/grpc_status.h"
#include "tools/cli/router_connection.h"
#include "tools/cli/usage_error.h"

ABSL_FLAG(std::string, router, "", "router address HOST:PORT");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificate: connect with TLS (default: plaintext)");
ABSL_FLAG(std::string, api_token_file, "", "file holding the API bearer token");
ABSL_FLAG(std::optional<double>, timeout, std::nullopt,
          "call deadline in seconds, 0 = none [10 for info and tokenize, 600 for generate, chat and "
          "score]");
ABSL_FLAG(bool, json, false, "generate/chat: print one JSON object as the last stdout line");
ABSL_FLAG(std::string, messages, "",
          "chat/tokenize: JSON file with a list of {\"role\", \"content\"} messages");

namespace caduceus::tools {
namespace {

constexpr char kUsage[] =
    "caduceus-cli --router HOST:PORT (info | generate (--prompt T | --prompt-ids 1,2,3) | "
    "chat --messages F.json | tokenize (--text T | --messages F.json) | "
    "score ([--context T] --continuation T | --context-ids I --continuation-ids I)) [flags]";

int Report(const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "error: %s: %s\n", StatusCodeName(status.code()).c_str(),
               std::string(status.message()).c_str());
  if (IsUsageError(status)) {
    std::fprintf(stderr, "usage: %s\n", kUsage);
    return 2;
  }
  return 1;
}

absl::Status Run(const std::vector<std::string>& positional) {
  if (positional.size() != 2) {
    return UsageError(positional.size() < 2 ? "no command given"
                                            : "one command only, got extra '" + positional[2] + "'");
  }
  const std::string& command = positional[1];
  const bool quick = command == "info" || command == "tokenize";
  if (!quick && command != "generate" && command != "chat" && command != "score") {
    return UsageError("unknown command '" + command + "'");
  }
  if (absl::GetFlag(FLAGS_router).empty()) return UsageError("--router HOST:PORT is required");
  // Short default for the metadata calls: scripts poll `info` until the router can serve.
  const double timeout_s = absl::GetFlag(FLAGS_timeout).value_or(quick ? 10.0 : 600.0);
  if (timeout_s < 0) return UsageError("--timeout must be >= 0");

  auto connection = RouterConnection::Open({absl::GetFlag(FLAGS_router), absl::GetFlag(FLAGS_tls_ca),
                                            absl::GetFlag(FLAGS_api_token_file)});
  if (!connection.ok()) return connection.status();
  const CommandEnv env{*connection, std::chrono::duration<double>(timeout_s)};
  const std::string messages = absl::GetFlag(FLAGS_messages);
  if (command == "info") return RunInfo(env);
  if (command == "tokenize") return RunTokenize(env, messages);
  if (command == "score") return RunScore(env);
  return RunGenerate(env, command == "chat", messages, absl::GetFlag(FLAGS_json));
}

}  // namespace
}  // namespace caduceus::tools

int main(int argc, char** argv) {
  // absl's --help lists only flags defined in <program>.cc; ours are spread over tools/cli/.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "tools/cli/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<std::string> positional =
      caduceus::ParseFlags(argc, argv, caduceus::tools::kUsage);
  return caduceus::tools::Report(caduceus::tools::Run(positional));
}
