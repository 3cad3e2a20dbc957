#include "tools/cli/router_connection.h"

#include "absl/strings/ascii.h"
#include "common/read_file.h"

namespace caduceus::tools {

absl::StatusOr<RouterConnection> RouterConnection::Open(const RouterConnectionOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("--router HOST:PORT is required");
  RouterConnection connection;
  if (!options.api_token_file.empty()) {
    auto token = ReadFile(options.api_token_file, "--api-token-file");
    if (!token.ok()) return token.status();
    // Token files usually end with a newline (echo > file, Kubernetes secrets edited by hand).
    connection.bearer_token_ = std::string(absl::StripAsciiWhitespace(*token));
    if (connection.bearer_token_.empty()) {
      return absl::InvalidArgumentError("--api-token-file: " + options.api_token_file + " is empty");
    }
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_ca_file.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    auto ca = ReadFile(options.tls_ca_file, "--tls-ca");
    if (!ca.ok()) return ca.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *ca;
    credentials = grpc::SslCredentials(ssl);
  }
  connection.channel_ = grpc::CreateChannel(options.address, credentials);
  return connection;
}

void RouterConnection::Configure(grpc::ClientContext& context,
                                 std::chrono::duration<double> timeout) const {
  if (timeout.count() > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout));
  }
  context.set_wait_for_ready(false);
  // Plain call metadata rather than CallCredentials: gRPC refuses call credentials on plaintext
  // channels, and a router behind a TLS-terminating proxy still checks the token.
  if (!bearer_token_.empty()) context.AddMetadata("authorization", "Bearer " + bearer_token_);
}

}  // namespace caduceus::tools
