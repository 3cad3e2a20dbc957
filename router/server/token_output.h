// Turns one token a worker sampled into the request's output: incremental detokenization, stop
// tokens and stop strings (never emitted), the length limit, logprobs, usage and timing on the
// final message, and the router's per-token metrics (TTFT, inter-token latency, tokens).
#pragma once

#include "caduceus/worker/v1/worker.pb.h"
#include "router/server/active_request.h"
#include "router/server/router_metrics.h"
#include "worker/model/model_config.h"

namespace caduceus::router {

// Pushes the message for `result` onto the request's outbox; true when the request finished
// (it is then complete or failed, and its sequence can be released).
bool EmitToken(ActiveRequest& request, const worker::v1::SequenceResult& result,
               const model::ModelConfig& config, RouterMetrics* metrics);

}  // namespace caduceus::router
