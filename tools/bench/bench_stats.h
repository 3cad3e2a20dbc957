// Summary statistics of latency samples for caduceus-bench.
#pragma once

#include <optional>
#include <vector>

namespace caduceus::tools {

struct LatencySummary {
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double mean = 0;
  size_t count = 0;
};

// The q-quantile (q in [0, 1]) of `sorted` (ascending, non-empty), interpolating linearly between
// the two nearest ranks: numpy's default, so numbers can be checked against a notebook.
double Percentile(const std::vector<double>& sorted, double q);

// nullopt when there are no samples (e.g. every request failed): "no data" is not "0 s".
std::optional<LatencySummary> Summarize(std::vector<double> samples);

}  // namespace caduceus::tools
