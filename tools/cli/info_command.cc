#include <cstdio>

#include "caduceus/v1/generation.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/cli/commands.h"
#include "tools/cli/grpc_status.h"
#include "tools/cli/response_json.h"

namespace caduceus::tools {

absl::Status RunInfo(const CommandEnv& env) {
  auto stub = caduceus::v1::Generation::NewStub(env.connection.channel());
  grpc::ClientContext context;
  env.connection.Configure(context, env.timeout);
  caduceus::v1::ModelInfo info;
  absl::Status status = FromGrpcStatus(stub->GetModelInfo(&context, {}, &info));
  if (!status.ok()) return status;
  // Written by hand rather than with protobuf's JSON printer, which quotes uint64 numbers.
  nlohmann::json out = {
      {"model_id", info.model_id()},
      {"revision", info.revision()},
      {"max_context", info.max_context()},
      {"vocab_size", info.vocab_size()},
      {"eos_token_ids", std::vector<int32_t>(info.eos_token_ids().begin(), info.eos_token_ids().end())},
      {"bos_token_id", info.bos_token_id()},
      {"has_chat_template", info.has_chat_template()},
      {"replicas_up", info.replicas_up()},
      {"kv_block_size", info.kv_block_size()},
      {"kv_blocks_total", info.kv_blocks_total()},
      {"tp_size", info.tp_size()},
      {"quantization", info.quantization()},
  };
  std::printf("%s\n", DumpJsonLine(out).c_str());
  return absl::OkStatus();
}

}  // namespace caduceus::tools
