#include "tools/cli/response_json.h"

namespace caduceus::tools {

std::string FinishReasonName(caduceus::v1::FinishReason reason) {
  switch (reason) {
    case caduceus::v1::FINISH_REASON_LENGTH: return "length";
    case caduceus::v1::FINISH_REASON_STOP_TOKEN: return "stop_token";
    case caduceus::v1::FINISH_REASON_STOP_SEQUENCE: return "stop_sequence";
    case caduceus::v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

nlohmann::json GenerateResponseToJson(const caduceus::v1::GenerateResponse& response,
                                      bool with_logprobs) {
  nlohmann::json out;
  out["prompt_ids"] = std::vector<int32_t>(response.prompt_token_ids().begin(),
                                           response.prompt_token_ids().end());
  out["generated_ids"] =
      std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end());
  out["text"] = response.text();
  out["finish_reason"] = FinishReasonName(response.finish_reason());
  out["usage"] = {{"prompt_tokens", response.usage().prompt_tokens()},
                  {"generated_tokens", response.usage().generated_tokens()}};
  // The router's own measurements: they exclude the network and this process's start-up.
  out["timings"] = {{"time_to_first_token_s", response.timing().time_to_first_token_seconds()},
                    {"total_s", response.timing().total_seconds()},
                    {"queue_s", response.timing().queue_seconds()}};
  if (with_logprobs) {
    // caduceus-generate's shape: [{"id", "logprob", "top": [[id, logprob], ...]}, ...]
    nlohmann::json lp = nlohmann::json::array();
    for (const auto& token : response.logprobs()) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& alt : token.top_logprobs()) top.push_back({alt.token_id(), alt.logprob()});
      lp.push_back({{"id", token.token_id()}, {"logprob", token.logprob()}, {"top", top}});
    }
    out["logprobs"] = lp;
  }
  out["request_id"] = response.request_id();
  out["replica"] = response.replica();
  return out;
}

std::string DumpJsonLine(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace caduceus::tools
