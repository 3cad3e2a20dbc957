// The public API (caduceus.v1.Generation): validates requests, hands them to the replicas and
// relays their output, unary or streamed. Also the replica registry (internal API) that leaders
// started with --router call.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/grpcpp.h>

#include "caduceus/v1/generation.grpc.pb.h"
#include "caduceus/worker/v1/worker.grpc.pb.h"
#include "router/server/api_callers.h"
#include "router/server/audit_log.h"
#include "router/server/replica_set.h"
#include "router/server/request_spec.h"
#include "router/server/router_metrics.h"

namespace caduceus::router {

class ActiveRequest;

struct ServiceOptions {
  RequestLimits limits;
  ApiCallers callers;  // none: no bearer-token check (--api-token-file)
  bool log_payloads = false;
  AuditLog* audit = nullptr;  // null: no audit records (--audit-log)
};

// The streaming methods use gRPC's callback API (see stream_reactor.h for why), as raw methods
// that parse their request themselves (a request that does not parse is INVALID_ARGUMENT, not
// gRPC's UNIMPLEMENTED); the unary ones stay synchronous, since their handler sleeps until the
// final message anyway.
using GenerationServiceBase = v1::Generation::WithRawCallbackMethod_GenerateStream<
    v1::Generation::WithRawCallbackMethod_ChatStream<v1::Generation::Service>>;

class GenerationService final : public GenerationServiceBase {
 public:
  GenerationService(ServiceOptions options, const ModelTextContext* model, ReplicaSet* replicas,
                    RouterMetrics* metrics)
      : options_(std::move(options)), model_(model), replicas_(replicas), metrics_(metrics) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::Status Chat(grpc::ServerContext* context, const v1::ChatRequest* request,
                    v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* ChatStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;
  grpc::Status Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override;

  // Graceful drain: new requests get UNAVAILABLE; in-flight ones continue.
  void StartDraining() { draining_ = true; }
  int64_t in_flight() const { return in_flight_.load(); }

 private:
  // UNAUTHENTICATED without a known caller's token (when callers are configured), UNAVAILABLE
  // while draining. `caller`: the caller, null when no token is required.
  grpc::Status Admit(const grpc::ServerContextBase* context, const ApiCaller** caller = nullptr) const;
  // The caller's priority floor applied to a validated spec.
  static absl::StatusOr<RequestSpec> ForCaller(absl::StatusOr<RequestSpec> spec, const ApiCaller* caller);
  // The in-flight request for a validated spec (a request id assigned if the client gave none).
  std::shared_ptr<ActiveRequest> NewRequest(RequestSpec spec);
  // Runs a unary request to the end; `method` names it in the audit record.
  grpc::Status RunUnary(grpc::ServerContext* context, const char* method,
                        absl::StatusOr<RequestSpec> spec, v1::GenerateResponse* response);
  grpc::Status RunUnaryToEnd(grpc::ServerContext* context, absl::StatusOr<RequestSpec> spec,
                             v1::GenerateResponse* response, std::shared_ptr<ActiveRequest>* request);
  // Starts a streaming request; the returned reactor relays it.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* StartStream(
      grpc::CallbackServerContext* context, const char* method, absl::StatusOr<RequestSpec> spec);
  grpc::Status Refuse(const absl::Status& status);
  // A stream that ends before it starts, with its audit record.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* RefuseStream(grpc::CallbackServerContext* context,
                                                           const char* method,
                                                           const grpc::Status& status);
  // The call's audit record, when --audit-log is set, and its caller's usage metrics, when
  // callers are named (--api-token-file). `request` null: refused before it existed.
  void Audit(const grpc::ServerContextBase& context, const char* method,
             const ActiveRequest* request, const CallOutcome& outcome) const;
  void Audit(const grpc::ServerContextBase& context, const CallRequest& call,
             const CallOutcome& outcome) const;
  // A finished score request's answer; INTERNAL when a continuation token has no score.
  grpc::Status FillScore(ActiveRequest& request, const v1::GenerateResponse& generated,
                         v1::ScoreResponse* response) const;
  // Tokenize without its audit record.
  grpc::Status TokenizeUnaudited(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                                 v1::TokenizeResponse* response) const;

  const ServiceOptions options_;
  const ModelTextContext* model_;
  ReplicaSet* replicas_;
  RouterMetrics* metrics_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> next_seq_{1};
};


class RegistryService final : public worker::v1::ReplicaRegistry::Service {
 public:
  // `token` empty: anyone who reaches the port may register (the router warns at start).
  RegistryService(ReplicaSet* replicas, ApiCallers workers)
      : replicas_(replicas), workers_(std::move(workers)) {}
  grpc::Status Register(grpc::ServerContext*, const worker::v1::RegisterRequest* request,
                        worker::v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const worker::v1::HeartbeatRequest* request,
                         worker::v1::HeartbeatResponse* response) override;
  grpc::Status Deregister(grpc::ServerContext*, const worker::v1::DeregisterRequest* request,
                          worker::v1::DeregisterResponse* response) override;

 private:
  grpc::Status Authorize(const grpc::ServerContext* context) const;

  ReplicaSet* replicas_;
  const ApiCallers workers_;  // the registry token, as one caller; none: the registry is open
};

}  // namespace caduceus::router
