// A key/value rendezvous store over TCP, hosted by the group leader. Gloo needs a store to
// exchange listening addresses before it can connect its mesh; the worker pods of one
// tensor-parallel group run on different nodes with no shared filesystem (so no FileStore) and
// Debian's Gloo has no TCPStore, hence this one.
//
// Protocol (all integers little-endian as on every host we run; one request, one response):
//   request  = u8 op, u32 key_count, key_count x (u32 len, bytes),
//              SET: u32 value_len, bytes        GET / WAIT: i64 timeout_ms
//   response = u8 code (kOk, kTimeout, kNotFound, kBadRequest), u32 len, bytes (value or message)
// GET and WAIT block on the server until the keys exist or the timeout expires, so a waiting
// client costs no polling traffic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <string>
#include "absl/strings/string_view.h"
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gloo/rendezvous/store.h"

namespace caduceus::parallel {

struct HostPort {
  std::string host;
  int port = 0;
};

// "host:port" or "[v6addr]:port".
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address);

class TcpStoreServer {
 public:
  // Listens on host:port (port 0 = any free port; see port()). host "" or "0.0.0.0" = all IPv4.
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Create(const std::string& host,
                                                                int port);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const { return port_; }
  // Stops accepting, wakes blocked GET/WAIT requests (they answer kTimeout), closes every
  // connection and joins all threads. Idempotent; the destructor calls it.
  void Shutdown();

 private:
  TcpStoreServer(int listen_fd, int wake_read, int wake_write, int port);
  void AcceptLoop();
  void ServeConnection(int fd);

  const int listen_fd_;
  const int wake_read_;   // self-pipe: Shutdown() writes to it to break the accept poll
  const int wake_write_;
  const int port_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  std::mutex mu_;  // guards everything below
  std::condition_variable changed_;
  std::map<std::string, std::vector<char>> data_;
  std::vector<int> connection_fds_;
  std::vector<std::thread> connection_threads_;
};

struct TcpStoreClientOptions {
  std::string host;
  int port = 0;
  // How long Connect keeps retrying while the server is not up yet (followers may start first).
  absl::Duration connect_timeout = absl::Seconds(60);
  // Default for get / wait when the caller gives none (Gloo's get() has no timeout argument).
  absl::Duration op_timeout = absl::Seconds(30);
};

// One connection to a TcpStoreServer. Thread-safe (requests are serialized). The absl::Status
// methods are the API for our code; the gloo::rendezvous::Store overrides wrap them and throw
// gloo::IoException on failure, because that is how Gloo expects a store to fail.
class TcpStoreClient : public gloo::rendezvous::Store {
 public:
  static absl::StatusOr<std::unique_ptr<TcpStoreClient>> Connect(
      const TcpStoreClientOptions& options);
  ~TcpStoreClient() override;

  absl::Status Set(const std::string& key, const std::vector<char>& value);
  // Blocks until the key exists; DEADLINE_EXCEEDED after `timeout`.
  absl::StatusOr<std::vector<char>> Get(const std::string& key, absl::Duration timeout);
  // True iff all keys exist now (no waiting).
  absl::StatusOr<bool> Check(const std::vector<std::string>& keys);
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout);

  // gloo::rendezvous::Store.
  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  TcpStoreClient(int fd, TcpStoreClientOptions options);
  // Sends one request and reads its response; `wait_for` is how long the server may block.
  absl::StatusOr<std::vector<char>> RoundTrip(const std::vector<char>& request,
                                              absl::Duration wait_for, absl::string_view what);

  std::mutex mu_;
  int fd_;  // -1 once the connection broke: later calls fail fast
  const TcpStoreClientOptions options_;
};

}  // namespace caduceus::parallel
