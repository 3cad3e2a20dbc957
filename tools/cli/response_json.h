// The --json output of `caduceus-cli generate|chat`: the same fields and shapes as
// `caduceus-generate --json`, so the two can be compared field by field, plus what only a served
// request has (request_id, replica, queue time).
#pragma once

#include <string>

#include "caduceus/v1/generation.pb.h"
#include "nlohmann/json.hpp"

namespace caduceus::tools {

// "length", "stop_token", "stop_sequence", "cancelled" (caduceus-generate's names), or
// "unspecified" when the router sent none.
std::string FinishReasonName(caduceus::v1::FinishReason reason);

nlohmann::json GenerateResponseToJson(const caduceus::v1::GenerateResponse& response,
                                      bool with_logprobs);

// One line of JSON; text that is not valid UTF-8 is replaced rather than aborting the dump.
std::string DumpJsonLine(const nlohmann::json& value);

}  // namespace caduceus::tools
