// Every replica the router knows: listed with --replica, or registered by their leaders
// (caduceus.worker.v1.ReplicaRegistry). Routes each new request to the replica with the most
// free KV capacity and keeps the queue and replica gauges current.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "router/server/replica.h"

namespace caduceus::router {

class ReplicaSet {
 public:
  ReplicaSet(ReplicaOptions options, const ModelTextContext* model, RouterMetrics* metrics);
  ~ReplicaSet();

  // Adds a replica by address (idempotent); returns its id (the address). Replicas added here
  // (--replica) are kept for good.
  std::string Add(const std::string& address);
  // A leader registering itself (the registry). Like Add, but the replica is forgotten once it
  // has been down for options.forget_after, and at most options.max_registered are held
  // (RESOURCE_EXHAUSTED beyond).
  absl::StatusOr<std::string> Register(const std::string& address);
  // A registered replica leaving (after its drain): dropped now; requests still on it move to
  // other replicas (Replica::Retire). False when no registered replica has that address.
  bool Deregister(const std::string& address);
  // Registry heartbeat; false when the id is unknown (the leader should register again).
  bool Heartbeat(const std::string& id, bool serving);

  // Queues the request on the best replica that accepts it. UNAVAILABLE when none is up,
  // RESOURCE_EXHAUSTED when every replica's queue is full, INVALID_ARGUMENT when it cannot fit.
  absl::StatusOr<std::string> Submit(const std::shared_ptr<ActiveRequest>& request);

  struct Summary {
    int64_t up = 0, down = 0, waiting = 0, running = 0, in_flight = 0, kv_blocks_total = 0;
    std::optional<worker::v1::InfoResponse> first_info;  // of an up replica
  };
  Summary Summarize() const;
  // The smallest up replica's KV cache, in tokens (0: none up). Per request, so no Summary
  // (which copies a worker's Info).
  int64_t MinKvTokens() const;

 private:
  void MonitorLoop();
  // Drops registered replicas down longer than options_.forget_after. Requires !mu_ held.
  void ForgetLongDown();
  // Logs once per change when the up replicas do not all serve the same model revision.
  void WarnOnMixedRevisions();
  struct Entry {
    std::shared_ptr<Replica> replica;  // shared: Submit uses it outside mu_
    bool registered = false;
  };
  // Require mu_.
  std::vector<Entry>::iterator FindLocked(const std::string& address);
  std::string AddLocked(const std::string& address, bool registered);

  const ReplicaOptions options_;
  const ModelTextContext* model_;
  RouterMetrics* metrics_;
  mutable std::mutex mu_;
  std::vector<Entry> replicas_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string revisions_warned_;  // monitor thread only: the mix last logged
  std::thread monitor_;
};

}  // namespace caduceus::router
