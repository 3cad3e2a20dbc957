// Keeps a leader registered with the router (--router): registers, then heartbeats at the
// interval the router asks for; registers again when the router has forgotten it (it restarted)
// or was unreachable. Failures are logged on state changes only, never fatal: the router may
// start after the workers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "caduceus/worker/v1/worker.pb.h"

namespace caduceus::worker {

class RouterRegistration {
 public:
  // serving() is asked before each heartbeat. `token` (the router's --registry-token-file) goes
  // with every call as "authorization: Bearer <token>" when not empty.
  RouterRegistration(std::string router_address, std::string advertise_address,
                     v1::InfoResponse info, std::function<bool()> serving, std::string token = "");
  ~RouterRegistration();

  // Tells the router that the leader at `advertise_address` is leaving for good (after its
  // drain), so it drops the replica at once. Best effort: a few seconds at most, the outcome is
  // logged (a router that never hears of it forgets the replica after --forget-replica-after).
  static void Deregister(const std::string& router_address, const std::string& advertise_address,
                         const std::string& token);

 private:
  void Loop();

  const std::string router_address_;
  const std::string advertise_address_;
  const v1::InfoResponse info_;
  const std::string token_;
  std::function<bool()> serving_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace caduceus::worker
