// What a router may ask of one worker replica, from its Info: the step limits it accepts and
// the plan fields it implements (InfoResponse.features). During a rolling upgrade an older
// worker may serve next to newer ones; it would ignore fields it does not know, so they are
// never sent to it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "caduceus/worker/v1/worker.pb.h"
#include "router/scheduler/scheduler_config.h"

namespace caduceus::router {

inline constexpr std::string_view kFeatureDraftTokens = "draft_tokens";
inline constexpr std::string_view kFeatureLogitBias = "logit_bias";

bool WorkerHas(const worker::v1::InfoResponse& info, std::string_view feature);

// The scheduler configuration for a replica: `wanted` (the router's flags) with the KV geometry
// from Info, the step limits capped at the worker's, and speculation off for a worker that
// cannot verify guesses. Each change an operator should hear about is appended to `warnings`.
SchedulerConfig SchedulerConfigFor(const SchedulerConfig& wanted,
                                   const worker::v1::InfoResponse& info,
                                   std::vector<std::string>* warnings);

}  // namespace caduceus::router
