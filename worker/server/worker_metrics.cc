#include "worker/server/worker_metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "common/histogram_buckets.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace caduceus::worker {


struct WorkerMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  prometheus::Histogram* step = nullptr;
  prometheus::Histogram* forward = nullptr;
  prometheus::Histogram* collective = nullptr;
  prometheus::Histogram* tokens = nullptr;
  prometheus::Counter* steps_total = nullptr;
  prometheus::Gauge* kv_used = nullptr;
  prometheus::Gauge* kv_total = nullptr;
  prometheus::Gauge* healthy = nullptr;
  prometheus::Family<prometheus::Gauge>* memory = nullptr;
  prometheus::Counter* graph_events[3] = {};  // capture, replay, failure
  int64_t graph_counts[3] = {};                // their values so far
  prometheus::Gauge* graphs_held = nullptr;
  prometheus::Labels rank;
};

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Create(const WorkerIdentity& id,
                                                                     const std::string& listen) {
  auto impl = std::make_unique<Impl>();
  prometheus::Registry& r = *impl->registry;
  const prometheus::Labels rank{{"rank", std::to_string(id.rank)}};
  auto histogram = [&](const char* name, const char* help, const auto& buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add(rank, buckets);
  };
  impl->step = histogram("caduceus_worker_step_duration_seconds",
                         "Wall time of one step on this rank, control plane to sampled tokens.",
                         SecondsBuckets());
  impl->forward = histogram("caduceus_worker_forward_duration_seconds",
                            "Wall time of the forward pass of one step, collectives included.",
                            SecondsBuckets());
  impl->collective = histogram("caduceus_worker_collective_duration_seconds",
                               "Time one step spent in tensor-parallel collectives.",
                               SecondsBuckets());
  impl->tokens = histogram("caduceus_worker_step_tokens", "New tokens in one step.", DoublingBuckets(1, 16384));
  impl->steps_total = &prometheus::BuildCounter()
                           .Name("caduceus_worker_steps_total")
                           .Help("Steps executed by this rank.")
                           .Register(r)
                           .Add(rank);
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add(rank);
  };
  impl->kv_used = gauge("caduceus_worker_kv_blocks_used",
                        "KV-cache blocks referenced by the sequences this replica is running.");
  impl->kv_total = gauge("caduceus_worker_kv_blocks_capacity", "KV-cache blocks of this rank.");
  impl->healthy = gauge("caduceus_worker_group_healthy",
                        "1 while the tensor-parallel group of this rank can run steps, else 0.");
  impl->healthy->Set(1);
  impl->rank = rank;
  auto& graph_events = prometheus::BuildCounter()
                           .Name("caduceus_worker_cuda_graph_events_total")
                           .Help("CUDA graphs of decode steps: shapes captured, steps replayed, "
                                 "and captures or launches that failed and ran eagerly (each "
                                 "failure leaves its shape eager; more than a few means graphs "
                                 "do not work on this device: run with --cuda_graphs=false).")
                           .Register(r);
  const char* events[] = {"capture", "replay", "failure"};
  for (int i = 0; i < 3; ++i) {
    prometheus::Labels labels = rank;
    labels["event"] = events[i];
    impl->graph_events[i] = &graph_events.Add(labels);
  }
  impl->graphs_held = gauge("caduceus_worker_cuda_graphs",
                            "Executable CUDA graphs this rank holds (pieces of captured decode "
                            "step shapes).");
  impl->memory = &prometheus::BuildGauge()
                      .Name("caduceus_worker_memory_bytes")
                      .Help("Memory of this rank by kind, set at start: weights (copies in the "
                            "host arena or on the device), kv_cache, and on device backends "
                            "activations (the warm-up step's buffers and workspaces) and "
                            "device_total (the device's capacity).")
                      .Register(r);
  prometheus::BuildGauge()
      .Name("caduceus_worker_info")
      .Help("Constant 1; labels describe the worker.")
      .Register(r)
      .Add({{"rank", std::to_string(id.rank)},
            {"model", id.model},
            {"device", id.device},
            {"tp_size", std::to_string(id.tp_size)},
            {"quantization", id.quantization}})
      .Set(1);
  if (!listen.empty()) {
    try {
      impl->exposer = std::make_unique<prometheus::Exposer>(listen, 1);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
    }
    impl->exposer->RegisterCollectable(impl->registry);
  }
  return std::unique_ptr<WorkerMetrics>(new WorkerMetrics(std::move(impl)));
}

WorkerMetrics::WorkerMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerMetrics::~WorkerMetrics() = default;

void WorkerMetrics::ObserveStep(double total, double forward, double collective, int64_t tokens) {
  impl_->step->Observe(total);
  impl_->forward->Observe(forward);
  impl_->collective->Observe(collective);
  impl_->tokens->Observe(static_cast<double>(tokens));
  impl_->steps_total->Increment();
}

void WorkerMetrics::SetKvBlocks(int64_t used, int64_t total) {
  impl_->kv_used->Set(static_cast<double>(used));
  impl_->kv_total->Set(static_cast<double>(total));
}

void WorkerMetrics::SetMemory(const MemoryBreakdown& m) {
  auto set = [&](const char* kind, int64_t bytes) {
    prometheus::Labels labels = impl_->rank;
    labels["kind"] = kind;
    impl_->memory->Add(labels).Set(static_cast<double>(bytes));
  };
  set("weights", m.weights);
  set("kv_cache", m.kv_cache);
  if (m.device) {
    set("activations", m.activations);
    set("device_total", m.device_total);
  }
}

void WorkerMetrics::SetCudaGraphs(int64_t captures, int64_t replays, int64_t failures,
                                  int64_t graphs) {
  const int64_t now[3] = {captures, replays, failures};
  for (int i = 0; i < 3; ++i) {
    if (now[i] > impl_->graph_counts[i]) {
      impl_->graph_events[i]->Increment(static_cast<double>(now[i] - impl_->graph_counts[i]));
      impl_->graph_counts[i] = now[i];
    }
  }
  impl_->graphs_held->Set(static_cast<double>(graphs));
}

void WorkerMetrics::SetGroupHealthy(bool healthy) { impl_->healthy->Set(healthy ? 1 : 0); }

std::string WorkerMetrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

}  // namespace caduceus::worker
