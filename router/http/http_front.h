// The OpenAI-compatible HTTP API of caduceus-router (--http-listen): /v1/chat/completions,
// /v1/completions (unary JSON or server-sent events), /v1/models and /health, served by
// CivetWeb (Debian's, already linked through prometheus-cpp).
//
// Every call is translated into a public gRPC call and sent over an in-process channel to the
// router's own Generation service: validation, the bearer token, back-pressure, audit records
// and metrics are those of the gRPC API, in one place. See docs/openai-http.md.
//
// Plain HTTP only: Debian 12's CivetWeb loads OpenSSL at run time through the 1.1 API and its
// TLS connections fail after the handshake with OpenSSL 3 (tried 2026-12-01), so TLS is
// terminated in front of this port (ingress, service mesh); the router refuses to serve it
// next to a TLS gRPC API unless told that is so (--http-behind-tls-proxy).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"

struct mg_context;
struct mg_connection;

namespace caduceus::text {
class Tokenizer;
}

namespace caduceus::router::http {

struct HttpFrontOptions {
  std::string listen;             // HOST:PORT
  int threads = 64;               // one per call in flight (a stream holds its thread)
  std::string served_model_name;  // what /v1/models lists and requests' "model" must name
  int64_t max_body_bytes = 8 << 20;
  // Sent with every call so that the router's audit trusts the forwarded caller (see
  // forwarded_caller.h); the router draws it at random when it starts.
  std::string front_secret;
  // Metrics hooks (either may be empty): a call starts; a call ends with its endpoint
  // ("chat_completions", "completions", "models", "health", "other") and HTTP status (499: the
  // client left during a stream).
  std::function<void()> on_call_start;
  std::function<void(const std::string& endpoint, int http_status)> on_call_end;
};

class HttpFront {
 public:
  // `api`: a channel to the router's Generation service (in-process); `tokenizer` gives the
  // logprob tokens' text.
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(HttpFrontOptions options,
                                                          std::shared_ptr<grpc::Channel> api,
                                                          const text::Tokenizer* tokenizer);
  // Stops listening and waits for the calls in flight (end them first: drain the router).
  ~HttpFront();

  int port() const { return port_; }

  struct Impl;  // the handlers' state (http_front.cc)

 private:
  HttpFront() = default;
  static int HandleRequest(mg_connection* conn);
  // Dispatches one call; `endpoint` gets its metrics label.
  static int Dispatch(Impl& impl, mg_connection* conn, const char** endpoint);

  std::unique_ptr<Impl> impl_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace caduceus::router::http
