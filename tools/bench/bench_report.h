// Turns the per-request results of a caduceus-bench run into its report: one JSON object for
// scripts, or a table for people.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tools/bench/stream_probe.h"

namespace caduceus::tools {

struct BenchSetup {
  int64_t requests = 0;
  int32_t concurrency = 0;
  std::optional<double> rate;  // requests/s; nullopt = closed loop (send as fast as allowed)
  int32_t prompt_len = 0;
  int32_t prompt_len_jitter = 0;
  int32_t output_len = 0;
};

// Latency distributions cover the requests that succeeded; failed ones are counted in "errors"
// by status code name.
nlohmann::json BenchReportJson(const BenchSetup& setup, const std::vector<RequestResult>& results,
                               double duration_s);

std::string BenchReportTable(const nlohmann::json& report);

}  // namespace caduceus::tools
