// The router's Prometheus metrics (prometheus-cpp), served on --metrics-listen. Names follow
// Prometheus conventions: base units (_seconds), _total counters; see docs/operations.md for
// what each is for (autoscaling on caduceus_requests_waiting, SLOs on the latency histograms).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace caduceus::router {

class RouterMetrics {
 public:
  // listen empty: metrics are kept but not served. UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<RouterMetrics>> Create(const std::string& listen);
  ~RouterMetrics();

  // status: the gRPC code name in lower case ("ok", "invalid_argument", ...).
  void RequestFinished(const std::string& status);
  void ObserveQueueTime(double seconds);
  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  void ObserveRequestDuration(double seconds);
  void AddPromptTokens(int64_t n);
  void AddGenerationTokens(int64_t n);
  // One step of one replica: sequences in it, wall time seen by the router, and the part of it
  // that was not the worker's own step time (router + RPC overhead).
  void ObserveStep(int64_t batch_size, double seconds, double overhead_seconds);
  void AddPreemptions(int64_t n);
  // Requests moved off a failed or departed replica (caduceus_request_failovers_total).
  void AddFailovers(int64_t n);
  void AddPrefixCacheHits(int64_t n);
  // Speculative decoding (--speculative-tokens): guesses sent to workers, and those accepted
  // (each accepted guess is a generated token that cost no step of its own).
  void AddDraftTokens(int64_t drafted, int64_t accepted);
  void SetQueue(int64_t waiting, int64_t running);
  void SetKvUsage(const std::string& replica, double ratio);
  // Drops the replica's series (it went down, or was forgotten): no stale last value.
  void RemoveReplica(const std::string& replica);
  void SetReplicas(int64_t up, int64_t down);
  // The OpenAI-compatible HTTP API (--http-listen): calls being served, and finished calls by
  // endpoint ("chat_completions", "completions", "models", "health", "other") and HTTP status.
  // Includes what the front refuses itself (bad JSON, unknown model or path, body too large),
  // which never reaches caduceus_requests_total.
  // A call of a named caller (--api-token-file) that reached the model ended: requests by
  // caller and gRPC status, prompt and generated tokens by caller (chargeback, per-service
  // dashboards). Bounded: one series set per line of the token file.
  void CallerFinished(const std::string& caller, const std::string& status, int64_t prompt_tokens,
                      int64_t generated_tokens);
  void HttpCallStarted();
  void HttpCallFinished(const std::string& endpoint, int http_status);

  std::string Scrape() const;

 private:
  struct Impl;
  explicit RouterMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace caduceus::router
