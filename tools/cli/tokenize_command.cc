#include <cstdio>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "caduceus/v1/generation.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/cli/chat_messages.h"
#include "tools/cli/commands.h"
#include "tools/cli/grpc_status.h"
#include "tools/cli/response_json.h"
#include "tools/cli/usage_error.h"

ABSL_FLAG(std::optional<std::string>, text, std::nullopt, "tokenize: the text to tokenize");
ABSL_FLAG(bool, add_bos, false, "tokenize: prepend <|begin_of_text|>");
ABSL_FLAG(bool, allow_special, false,
          "tokenize: parse special-token text such as <|eot_id|> as special tokens");

namespace caduceus::tools {

absl::Status RunTokenize(const CommandEnv& env, const std::string& messages_file) {
  const std::optional<std::string> text = absl::GetFlag(FLAGS_text);
  if (text.has_value() == !messages_file.empty()) {
    return UsageError("tokenize needs exactly one of --text and --messages");
  }
  caduceus::v1::TokenizeRequest request;
  if (text.has_value()) {
    request.set_text(*text);
  } else {
    auto messages = ReadChatMessages(messages_file);
    if (!messages.ok()) return messages.status();
    for (auto& m : *messages) *request.add_messages() = std::move(m);
  }
  request.set_add_bos(absl::GetFlag(FLAGS_add_bos));
  request.set_allow_special(absl::GetFlag(FLAGS_allow_special));

  auto stub = caduceus::v1::Generation::NewStub(env.connection.channel());
  grpc::ClientContext context;
  env.connection.Configure(context, env.timeout);
  caduceus::v1::TokenizeResponse response;
  absl::Status status = FromGrpcStatus(stub->Tokenize(&context, request, &response));
  if (!status.ok()) return status;
  nlohmann::json out;
  out["token_ids"] = std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end());
  out["tokens"] = std::vector<std::string>(response.tokens().begin(), response.tokens().end());
  std::printf("%s\n", DumpJsonLine(out).c_str());
  return absl::OkStatus();
}

}  // namespace caduceus::tools
