// How a client reaches the router: the channel (plaintext or TLS) and the per-call settings
// (deadline, bearer token). Shared by caduceus-cli and caduceus-bench so both talk to a secured
// router the same way.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace caduceus::tools {

struct RouterConnectionOptions {
  std::string address;         // HOST:PORT
  std::string tls_ca_file;     // empty: plaintext; else TLS trusting this PEM root certificate
  std::string api_token_file;  // empty: no authorization metadata
};

class RouterConnection {
 public:
  // Reads the files named in `options` (so a bad path fails before any call is made).
  static absl::StatusOr<RouterConnection> Open(const RouterConnectionOptions& options);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // Prepares `context` for one call. `timeout` <= 0 means no deadline. wait_for_ready stays false
  // so that a router that is not up fails fast with UNAVAILABLE instead of waiting out the
  // deadline (scripts poll `caduceus-cli info` until it succeeds).
  void Configure(grpc::ClientContext& context, std::chrono::duration<double> timeout) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::string bearer_token_;
};

}  // namespace caduceus::tools
