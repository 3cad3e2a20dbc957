// generate and chat: build the request from flags, then call the unary or the streaming RPC.
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "caduceus/v1/generation.grpc.pb.h"
#include "tools/cli/chat_messages.h"
#include "tools/cli/commands.h"
#include "tools/cli/generation_flags.h"
#include "tools/cli/grpc_status.h"
#include "tools/cli/id_list.h"
#include "tools/cli/response_json.h"
#include "tools/cli/stream_accumulator.h"
#include "tools/cli/usage_error.h"

ABSL_FLAG(std::string, prompt, "", "generate: prompt text (the router tokenizes it with BOS)");
ABSL_FLAG(std::string, prompt_ids, "", "generate: comma-separated token ids, used exactly as given");
ABSL_FLAG(bool, stream, false,
          "with --json: stream the text as it is produced too (without --json it always streams)");
ABSL_FLAG(std::string, request_id, "", "request id echoed back by the router (it makes one if empty)");

namespace caduceus::tools {

namespace {

using caduceus::v1::GenerateResponse;
using caduceus::v1::GenerateStreamResponse;
using StreamReader = grpc::ClientReader<GenerateStreamResponse>;

// The router names the serving replica in GenerateResponse.replica; stream messages have no such
// field, so a router may put it in call metadata instead.
constexpr char kReplicaMetadataKey[] = "caduceus-replica";

std::string ReplicaFromMetadata(const grpc::ClientContext& context) {
  for (const auto* metadata : {&context.GetServerInitialMetadata(),
                               &context.GetServerTrailingMetadata()}) {
    auto it = metadata->find(kReplicaMetadataKey);
    if (it != metadata->end()) return std::string(it->second.data(), it->second.size());
  }
  return "";
}

void PrintText(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);  // a person is watching the tokens arrive
}

// Streams the text deltas to stdout as they arrive; returns the whole response.
absl::StatusOr<GenerateResponse> CallStreaming(
    const CommandEnv& env,
    const std::function<std::unique_ptr<StreamReader>(grpc::ClientContext*)>& start) {
  grpc::ClientContext context;
  env.connection.Configure(context, env.timeout);
  std::unique_ptr<StreamReader> reader = start(&context);
  StreamAccumulator accumulator;
  GenerateStreamResponse message;
  bool printed = false;
  while (reader->Read(&message)) {
    accumulator.Add(message);
    if (!message.text_delta().empty()) {
      PrintText(message.text_delta());
      printed = true;
    }
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  // End the streamed line on success, and on failure only if text was already shown.
  if (status.ok() || printed) PrintText("\n");
  if (!status.ok()) return status;
  accumulator.SetReplica(ReplicaFromMetadata(context));
  return accumulator.response();
}

template <typename Request>
absl::Status Execute(
    const CommandEnv& env, const Request& request, bool json,
    const std::function<grpc::Status(grpc::ClientContext*, const Request&, GenerateResponse*)>& unary,
    const std::function<std::unique_ptr<StreamReader>(grpc::ClientContext*, const Request&)>&
        streaming) {
  GenerateResponse response;
  if (json && !absl::GetFlag(FLAGS_stream)) {
    grpc::ClientContext context;
    env.connection.Configure(context, env.timeout);
    absl::Status status = FromGrpcStatus(unary(&context, request, &response));
    if (!status.ok()) return status;
  } else {
    auto streamed = CallStreaming(
        env, [&](grpc::ClientContext* context) { return streaming(context, request); });
    if (!streamed.ok()) return streamed.status();
    response = *std::move(streamed);
  }
  if (json) {
    std::printf("%s\n", DumpJsonLine(GenerateResponseToJson(response, LogprobsRequested())).c_str());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGenerate(const CommandEnv& env, bool chat, const std::string& messages_file,
                         bool json) {
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  const std::string prompt_ids = absl::GetFlag(FLAGS_prompt_ids);
  auto params = GenerationParametersFromFlags();
  if (!params.ok()) return params.status();
  auto stub = caduceus::v1::Generation::NewStub(env.connection.channel());

  if (chat) {
    if (messages_file.empty()) return UsageError("chat needs --messages FILE.json");
    if (!prompt.empty() || !prompt_ids.empty()) {
      return UsageError("chat takes --messages, not --prompt or --prompt-ids");
    }
    auto messages = ReadChatMessages(messages_file);
    if (!messages.ok()) return messages.status();
    caduceus::v1::ChatRequest request;
    request.set_request_id(absl::GetFlag(FLAGS_request_id));
    for (auto& m : *messages) *request.add_messages() = std::move(m);
    *request.mutable_params() = *std::move(params);
    return Execute<caduceus::v1::ChatRequest>(
        env, request, json,
        [&](grpc::ClientContext* c, const auto& r, GenerateResponse* out) {
          return stub->Chat(c, r, out);
        },
        [&](grpc::ClientContext* c, const auto& r) { return stub->ChatStream(c, r); });
  }

  if (prompt.empty() == prompt_ids.empty()) {
    return UsageError("generate needs exactly one of --prompt and --prompt-ids");
  }
  if (!messages_file.empty()) return UsageError("generate does not take --messages (use chat)");
  caduceus::v1::GenerateRequest request;
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  if (!prompt_ids.empty()) {
    auto ids = ParseIdList(prompt_ids, "--prompt-ids");
    if (!ids.ok()) return ids.status();
    request.mutable_prompt_ids()->Add(ids->begin(), ids->end());
  } else {
    request.set_prompt(prompt);
  }
  *request.mutable_params() = *std::move(params);
  return Execute<caduceus::v1::GenerateRequest>(
      env, request, json,
      [&](grpc::ClientContext* c, const auto& r, GenerateResponse* out) {
        return stub->Generate(c, r, out);
      },
      [&](grpc::ClientContext* c, const auto& r) { return stub->GenerateStream(c, r); });
}

}  // namespace caduceus::tools
