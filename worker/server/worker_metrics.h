// Prometheus metrics of one worker rank (prometheus-cpp), served on --metrics-listen. Names
// follow Prometheus conventions (base units, _seconds); every series carries the rank label.
// prometheus-cpp headers stay in the .cc: this header is included by the step path.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace caduceus::worker {

struct WorkerIdentity {
  std::string model;
  std::string device;
  int tp_size = 1;
  int rank = 0;
  std::string quantization = "none";  // of the projection weights: none, fp8, fp8-online
};

class WorkerMetrics {
 public:
  // listen: "host:port" to serve /metrics on, or empty to keep the metrics in memory only.
  // UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Create(const WorkerIdentity& identity,
                                                               const std::string& listen);
  ~WorkerMetrics();

  void ObserveStep(double total_seconds, double forward_seconds, double collective_seconds,
                   int64_t tokens);
  void SetKvBlocks(int64_t used, int64_t total);
  // Where this rank's memory went at start: weights the placement copied (arena or device),
  // the KV cache, and on device backends the warm-up's activations and the device's capacity.
  struct MemoryBreakdown {
    int64_t weights = 0, kv_cache = 0, activations = 0, device_total = 0;
    bool device = false;  // activations and device_total are exported only for devices
  };
  void SetMemory(const MemoryBreakdown& memory);
  void SetGroupHealthy(bool healthy);
  // The model's CUDA graph counters since load (LlamaModel::graph_stats): captures, replays and
  // failures become counters, graphs (executable graphs held) a gauge.
  void SetCudaGraphs(int64_t captures, int64_t replays, int64_t failures, int64_t graphs);
  // The /metrics text, for tests.
  std::string Scrape() const;

 private:
  struct Impl;
  explicit WorkerMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace caduceus::worker
