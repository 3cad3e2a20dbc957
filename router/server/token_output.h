// Turns one token a worker sampled into the request's output: incremental detokenization, stop
// tokens and stop strings (never emitted), the length limit, logprobs, usage and timing on the
// final message, and the router's per-token metrics (TTFT, inter-token latency, tokens).
#pragma once

#include "caduceus/worker/v1/worker.pb.h"
#include "router/server/active_request.h"
#include "router/server/router_metrics.h"
#include "worker/model/model_config.h"

namespace caduceus::router {

// What the worker reported for one generated token: a sampled one (SequenceResult) or an
// accepted guess (SampledToken) alike.
struct TokenView {
  int32_t token_id = 0;
  float logprob = 0;
  const google::protobuf::RepeatedPtrField<worker::v1::TokenLogprob>* top_logprobs = nullptr;

  template <typename Message>
  static TokenView Of(const Message& m) {
    return TokenView{m.token_id(), m.logprob(), &m.top_logprobs()};
  }
};

// Pushes the message for `token` onto the request's outbox; true when the request finished
// (it is then complete or failed, and its sequence can be released).
bool EmitToken(ActiveRequest& request, const TokenView& token, const model::ModelConfig& config,
               RouterMetrics* metrics);

}  // namespace caduceus::router
