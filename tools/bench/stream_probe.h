// One benchmark request: a GenerateStream call timed message by message.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "caduceus/v1/generation.grpc.pb.h"
#include "tools/cli/router_connection.h"

namespace caduceus::tools {

struct RequestResult {
  absl::Status status;
  bool got_token = false;
  double ttft_s = 0;            // send -> first message carrying tokens
  std::vector<double> itl_s;    // one entry per token after the first message's
  double latency_s = 0;         // send -> end of the stream
  int64_t output_tokens = 0;
};

// Sends `request` on `stub` and reads the stream to its end. Never throws; failures are in
// RequestResult::status (their timings are not meaningful).
RequestResult RunStreamingRequest(caduceus::v1::Generation::Stub& stub,
                                  const RouterConnection& connection,
                                  const caduceus::v1::GenerateRequest& request,
                                  std::chrono::duration<double> timeout);

}  // namespace caduceus::tools
