#include "router/server/router_metrics.h"

#include <exception>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/histogram_buckets.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace caduceus::router {


struct RouterMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Gauge>* kv_usage = nullptr;
  prometheus::Histogram *queue = nullptr, *ttft = nullptr, *itl = nullptr, *duration = nullptr,
                        *batch = nullptr, *step = nullptr, *overhead = nullptr;
  prometheus::Counter *prompt_tokens = nullptr, *generation_tokens = nullptr,
                      *preemptions = nullptr, *prefix_hits = nullptr,
                      *failovers = nullptr, *draft_tokens = nullptr, *accepted_drafts = nullptr;
  prometheus::Gauge *waiting = nullptr, *running = nullptr, *up = nullptr, *down = nullptr,
                    *http_in_flight = nullptr;
  prometheus::Family<prometheus::Counter>* http_calls = nullptr;
  prometheus::Family<prometheus::Counter>* caller_requests = nullptr;
  prometheus::Family<prometheus::Counter>* caller_tokens = nullptr;
  std::mutex family_mu;  // Family::Add is thread-safe, but keep label creation serialized anyway
};

absl::StatusOr<std::unique_ptr<RouterMetrics>> RouterMetrics::Create(const std::string& listen) {
  auto m = std::make_unique<Impl>();
  prometheus::Registry& r = *m->registry;
  auto histogram = [&](const char* name, const char* help, const auto& buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
  };
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r);
  };
  m->requests = &prometheus::BuildCounter()
                     .Name("caduceus_requests_total")
                     .Help("Finished requests by gRPC status (ok, invalid_argument, ...).")
                     .Register(r);
  for (const char* s : {"ok", "invalid_argument", "resource_exhausted", "cancelled",
                        "deadline_exceeded", "unavailable"}) {
    m->requests->Add({{"status", s}});  // export zeros so rate() works from the first scrape
  }
  m->queue = histogram("caduceus_queue_time_seconds",
                       "Arrival to the first scheduled step of a request.", SecondsBuckets());
  m->ttft = histogram("caduceus_time_to_first_token_seconds",
                      "Arrival to the first generated token.", SecondsBuckets());
  m->itl = histogram("caduceus_inter_token_latency_seconds",
                     "Time between consecutive generated tokens of a request.", ShortSecondsBuckets());
  m->duration = histogram("caduceus_request_duration_seconds",
                          "Arrival to the last token (or failure) of a request.", SecondsBuckets());
  m->batch = histogram("caduceus_batch_size", "Sequences in one step of a replica.", DoublingBuckets(1, 1024));
  m->step = histogram("caduceus_step_duration_seconds",
                      "Wall time of one step as seen by the router (RPC included).", ShortSecondsBuckets());
  m->overhead = histogram("caduceus_router_step_overhead_seconds",
                          "Step time seen by the router minus the worker's own step time.",
                          ShortSecondsBuckets());
  m->prompt_tokens = counter("caduceus_prompt_tokens_total", "Prompt tokens of admitted requests.");
  m->generation_tokens = counter("caduceus_generation_tokens_total", "Generated tokens.");
  m->preemptions = counter("caduceus_preemptions_total",
                           "Sequences preempted (KV blocks freed, recomputed later).");
  m->failovers = counter("caduceus_request_failovers_total",
                         "Requests moved off a failed replica, or one that left before finishing them, to go on elsewhere.");
  m->prefix_hits = counter("caduceus_prefix_cache_hits_total",
                           "Sequences that reused cached prefix KV blocks.");
  m->draft_tokens = counter("caduceus_speculative_draft_tokens_total",
                            "Guessed tokens (speculative decoding, --speculative-tokens) sent to "
                            "workers for verification.");
  m->accepted_drafts = counter("caduceus_speculative_accepted_tokens_total",
                               "Guessed tokens the workers accepted: generated without a step of "
                               "their own.");
  m->waiting = &gauge("caduceus_requests_waiting", "Requests waiting for their first step.")->Add({});
  m->running = &gauge("caduceus_requests_running", "Requests being generated.")->Add({});
  m->kv_usage = gauge("caduceus_kv_cache_usage_ratio",
                      "Fraction of a replica's KV-cache blocks in use by running sequences.");
  auto* replicas = gauge("caduceus_replicas", "Worker replicas known to the router, by state.");
  m->up = &replicas->Add({{"state", "up"}});
  m->down = &replicas->Add({{"state", "down"}});
  m->http_in_flight = &gauge("caduceus_http_requests_in_flight",
                             "Calls the OpenAI-compatible HTTP API is serving (each holds one of "
                             "--http-threads).")->Add({});
  m->http_calls = &prometheus::BuildCounter()
                       .Name("caduceus_http_requests_total")
                       .Help("Finished calls of the OpenAI-compatible HTTP API by endpoint and HTTP status.")
                       .Register(r);
  m->caller_requests = &prometheus::BuildCounter()
                            .Name("caduceus_caller_requests_total")
                            .Help("Finished requests by --api-token-file caller and gRPC status.")
                            .Register(r);
  m->caller_tokens = &prometheus::BuildCounter()
                          .Name("caduceus_caller_tokens_total")
                          .Help("Prompt and generated tokens by --api-token-file caller.")
                          .Register(r);
  for (const char* e : {"chat_completions", "completions"}) {
    m->http_calls->Add({{"endpoint", e}, {"code", "200"}});  // zeros: rate() works at once
  }
  if (!listen.empty()) {
    try {
      m->exposer = std::make_unique<prometheus::Exposer>(listen, 2);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
    }
    m->exposer->RegisterCollectable(m->registry);
  }
  return std::unique_ptr<RouterMetrics>(new RouterMetrics(std::move(m)));
}

RouterMetrics::RouterMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RouterMetrics::~RouterMetrics() = default;

void RouterMetrics::RequestFinished(const std::string& status) {
  std::lock_guard<std::mutex> lock(impl_->family_mu);
  impl_->requests->Add({{"status", status}}).Increment();
}
void RouterMetrics::ObserveQueueTime(double s) { impl_->queue->Observe(s); }
void RouterMetrics::ObserveTimeToFirstToken(double s) { impl_->ttft->Observe(s); }
void RouterMetrics::ObserveInterTokenLatency(double s) { impl_->itl->Observe(s); }
void RouterMetrics::ObserveRequestDuration(double s) { impl_->duration->Observe(s); }
void RouterMetrics::AddPromptTokens(int64_t n) { impl_->prompt_tokens->Increment(static_cast<double>(n)); }
void RouterMetrics::AddGenerationTokens(int64_t n) {
  impl_->generation_tokens->Increment(static_cast<double>(n));
}
void RouterMetrics::ObserveStep(int64_t batch_size, double seconds, double overhead_seconds) {
  impl_->batch->Observe(static_cast<double>(batch_size));
  impl_->step->Observe(seconds);
  impl_->overhead->Observe(overhead_seconds);
}
void RouterMetrics::AddPreemptions(int64_t n) { impl_->preemptions->Increment(static_cast<double>(n)); }
void RouterMetrics::AddFailovers(int64_t n) { impl_->failovers->Increment(static_cast<double>(n)); }
void RouterMetrics::AddPrefixCacheHits(int64_t n) {
  impl_->prefix_hits->Increment(static_cast<double>(n));
}
void RouterMetrics::AddDraftTokens(int64_t drafted, int64_t accepted) {
  impl_->draft_tokens->Increment(static_cast<double>(drafted));
  impl_->accepted_drafts->Increment(static_cast<double>(accepted));
}
void RouterMetrics::SetQueue(int64_t waiting, int64_t running) {
  impl_->waiting->Set(static_cast<double>(waiting));
  impl_->running->Set(static_cast<double>(running));
}
void RouterMetrics::SetKvUsage(const std::string& replica, double ratio) {
  std::lock_guard<std::mutex> lock(impl_->family_mu);
  impl_->kv_usage->Add({{"replica", replica}}).Set(ratio);
}
void RouterMetrics::RemoveReplica(const std::string& replica) {
  std::lock_guard<std::mutex> lock(impl_->family_mu);
  if (impl_->kv_usage->Has({{"replica", replica}})) {
    impl_->kv_usage->Remove(&impl_->kv_usage->Add({{"replica", replica}}));
  }
}
void RouterMetrics::SetReplicas(int64_t up, int64_t down) {
  impl_->up->Set(static_cast<double>(up));
  impl_->down->Set(static_cast<double>(down));
}

void RouterMetrics::CallerFinished(const std::string& caller, const std::string& status,
                                   int64_t prompt_tokens, int64_t generated_tokens) {
  std::lock_guard<std::mutex> lock(impl_->family_mu);
  impl_->caller_requests->Add({{"caller", caller}, {"status", status}}).Increment();
  impl_->caller_tokens->Add({{"caller", caller}, {"kind", "prompt"}})
      .Increment(static_cast<double>(prompt_tokens));
  impl_->caller_tokens->Add({{"caller", caller}, {"kind", "generated"}})
      .Increment(static_cast<double>(generated_tokens));
}

void RouterMetrics::HttpCallStarted() { impl_->http_in_flight->Increment(); }
void RouterMetrics::HttpCallFinished(const std::string& endpoint, int http_status) {
  impl_->http_in_flight->Decrement();
  std::lock_guard<std::mutex> lock(impl_->family_mu);
  impl_->http_calls->Add({{"endpoint", endpoint}, {"code", std::to_string(http_status)}}).Increment();
}

std::string RouterMetrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

}  // namespace caduceus::router
