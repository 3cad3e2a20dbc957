// Histogram bucket boundaries shared by the router's and the workers' Prometheus metrics, so that
// the same quantity (seconds, token counts) is bucketed the same way everywhere and dashboards
// can aggregate across processes.
#pragma once

#include <vector>

namespace caduceus {

// first, 2*first, 4*first, ... while <= last.
inline std::vector<double> DoublingBuckets(double first, double last) {
  std::vector<double> b;
  for (double v = first; v <= last; v *= 2) b.push_back(v);
  return b;
}

// 1 ms .. ~65 s: a tiny-model decode step on a CPU up to a 70B prefill chunk or a long request.
inline std::vector<double> SecondsBuckets() { return DoublingBuckets(0.001, 70); }
// 0.25 ms .. ~8 s: inter-token latencies and step times.
inline std::vector<double> ShortSecondsBuckets() { return DoublingBuckets(0.00025, 10); }

}  // namespace caduceus
