// Communicator over Gloo's TCP transport, for CPU tensors. Every rank connects to the leader's
// TcpStoreServer, publishes its own listening address there and connects a full mesh to its
// peers; after that the store is no longer needed for collectives.
//
// Gloo reports a dead peer or an expired timeout by throwing. Every operation here catches and
// returns UNAVAILABLE (peer gone, connection broken) or DEADLINE_EXCEEDED (timeout), naming the
// operation and this rank. After the first failure the mesh is in an unknown state (messages may
// be half sent), so the communicator marks itself unusable and every later call fails fast; the
// caller rebuilds the group with a new `prefix` (generation).
//
// Not thread-safe: one thread issues the collectives of a group, as the model does.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/communicator.h"

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
namespace transport {
class Device;
}
}  // namespace gloo

namespace caduceus::parallel {

class TcpStoreClient;
class TcpStoreServer;

struct GlooOptions {
  int rank = 0;
  int size = 1;
  // "host:port" of the leader's TcpStoreServer.
  std::string store_address;
  // The leader sets this: the communicator then runs the TcpStoreServer itself, on all IPv4
  // interfaces at store_address's port, for its whole lifetime (peers may still be reading keys
  // after this rank's mesh is up, so the store must outlive Create).
  bool host_store = false;
  // This rank's address for Gloo's TCP transport: a hostname / IP peers can reach (the pod IP),
  // or a network interface name. With both empty Gloo resolves the machine's hostname.
  std::string hostname;
  std::string iface;
  // Key namespace in the store: distinct groups, and successive generations of one group after
  // a restart, must use distinct prefixes.
  std::string prefix = "caduceus/tp/0";
  // Per collective.
  absl::Duration timeout = absl::Seconds(30);
  // Reaching the store (a follower may start before the leader) and waiting for all peers to
  // register during the mesh setup.
  absl::Duration connect_timeout = absl::Seconds(60);
};

class GlooCommunicator : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(const GlooOptions& options);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // False after any collective failed; every later call returns UNAVAILABLE at once.
  bool usable() const { return error_.ok(); }

  absl::Status AllReduceSum(float* data, size_t count) override;
  absl::Status AllGather(const float* in, size_t count, float* out) override;
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  // Waits until every rank reaches this point (used by tests and at shutdown).
  absl::Status Barrier();

 private:
  // Out of line: member cleanup needs the complete store / Gloo types.
  GlooCommunicator(int rank, int size);
  template <typename Fn>
  absl::Status Run(const char* op, Fn&& fn);

  const int rank_;
  const int size_;
  absl::Duration timeout_;
  absl::Status error_;  // first failure; OK while usable
  // Declaration order = reverse destruction order: the context goes before the device and the
  // store it was set up with.
  std::unique_ptr<TcpStoreServer> store_server_;
  std::unique_ptr<TcpStoreClient> store_;
  std::unique_ptr<gloo::rendezvous::Store> prefix_store_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
};

}  // namespace caduceus::parallel
