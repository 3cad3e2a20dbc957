#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "caduceus/v1/generation.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/cli/commands.h"
#include "tools/cli/grpc_status.h"
#include "tools/cli/id_list.h"
#include "tools/cli/response_json.h"
#include "tools/cli/usage_error.h"

ABSL_DECLARE_FLAG(std::string, request_id);  // generate_command.cc
ABSL_DECLARE_FLAG(int32_t, priority);        // generation_flags.cc
ABSL_FLAG(std::string, context, "", "score: the context text (tokenized with BOS)");
ABSL_FLAG(std::string, continuation, "", "score: the continuation text to score");
ABSL_FLAG(std::string, context_ids, "", "score: comma-separated context ids, used as given");
ABSL_FLAG(std::string, continuation_ids, "", "score: comma-separated continuation ids");

namespace caduceus::tools {

absl::Status RunScore(const CommandEnv& env) {
  const std::string context = absl::GetFlag(FLAGS_context);
  const std::string continuation = absl::GetFlag(FLAGS_continuation);
  const std::string context_ids = absl::GetFlag(FLAGS_context_ids);
  const std::string continuation_ids = absl::GetFlag(FLAGS_continuation_ids);
  const bool text = !continuation.empty();
  const bool ids = !context_ids.empty() && !continuation_ids.empty();
  if (text == ids || (text && !context_ids.empty()) || (ids && !context.empty())) {
    return UsageError("score needs --continuation (with an optional --context) or "
                      "--context-ids and --continuation-ids");
  }
  caduceus::v1::ScoreRequest request;
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  request.set_priority(absl::GetFlag(FLAGS_priority));
  if (text) {
    request.set_context(context);
    request.set_continuation(continuation);
  } else {
    auto c = ParseIdList(context_ids, "--context-ids");
    if (!c.ok()) return c.status();
    auto n = ParseIdList(continuation_ids, "--continuation-ids");
    if (!n.ok()) return n.status();
    request.mutable_context_ids()->Add(c->begin(), c->end());
    request.mutable_continuation_ids()->Add(n->begin(), n->end());
  }
  auto stub = caduceus::v1::Generation::NewStub(env.connection.channel());
  grpc::ClientContext call;
  env.connection.Configure(call, env.timeout);
  caduceus::v1::ScoreResponse response;
  absl::Status status = FromGrpcStatus(stub->Score(&call, request, &response));
  if (!status.ok()) return status;
  nlohmann::json out;
  out["request_id"] = response.request_id();
  out["logprob"] = response.logprob();
  out["is_greedy"] = response.is_greedy();
  out["tokens"] = nlohmann::json::array();
  for (const caduceus::v1::ScoredToken& t : response.tokens()) {
    out["tokens"].push_back({{"token_id", t.token_id()},
                             {"text", t.text()},
                             {"logprob", t.logprob()},
                             {"is_greedy", t.is_greedy()},
                             {"greedy_token_id", t.greedy_token_id()}});
  }
  out["context_token_ids"] = std::vector<int32_t>(response.context_token_ids().begin(),
                                                  response.context_token_ids().end());
  out["usage"] = {{"prompt_tokens", response.usage().prompt_tokens()},
                  {"cached_prompt_tokens", response.usage().cached_prompt_tokens()}};
  out["replica"] = response.replica();
  std::printf("%s\n", DumpJsonLine(out).c_str());
  return absl::OkStatus();
}

}  // namespace caduceus::tools
