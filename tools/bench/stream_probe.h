// One benchmark request: a GenerateStream call timed message by message.
#pragma once

#include <chrono>
#include <functional>
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

// Sends `request` on `stub` and returns at once; `done` runs with the result, on a gRPC thread,
// when the stream has ended. `request` must stay alive until then. Failures are in
// RequestResult::status (their timings are not meaningful).
//
// Asynchronous (gRPC's callback API) so that a load generator with hundreds of streams in
// flight does not need a thread per stream, woken for every token: on a machine it shares with
// the router and the workers, those wake-ups would be taken from what it measures.
void StartStreamingRequest(caduceus::v1::Generation::Stub& stub, const RouterConnection& connection,
                           const caduceus::v1::GenerateRequest& request,
                           std::chrono::duration<double> timeout,
                           std::function<void(RequestResult)> done);

}  // namespace caduceus::tools
