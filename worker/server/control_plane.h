// The leader -> followers channel of a tensor-parallel group. The router talks only to the
// leader; the leader forwards every step plan to the followers over this channel before it runs
// the step itself, so that all ranks enter the same collectives in the same order.
//
// It runs over the group's Gloo communicator on every device kind (on GPUs the model's
// collectives use NCCL, but plans are small host bytes). Each message is two broadcasts from
// rank 0: a fixed header {kind, payload bytes}, then the payload. Followers block in Receive
// for at most the communicator's timeout, so an idle leader sends heartbeats: a follower that
// hears nothing for a whole timeout knows the leader is gone and exits instead of hanging.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/parallel/communicator.h"

namespace caduceus::worker {

enum class ControlKind : int64_t { kStep = 1, kHeartbeat = 2, kShutdown = 3 };

struct ControlMessage {
  ControlKind kind = ControlKind::kHeartbeat;
  std::string payload;
};

class ControlPlane {
 public:
  // Payloads above this are refused (a plan is a few KB; a corrupt header must not allocate GBs).
  static constexpr int64_t kMaxPayloadBytes = 256 << 20;

  explicit ControlPlane(parallel::Communicator* comm) : comm_(comm) {}

  // Leader (rank 0) only. Takes the payload: Broadcast writes into the root's buffer as well.
  absl::Status Send(ControlKind kind, std::string payload = {});
  // Followers only.
  absl::StatusOr<ControlMessage> Receive();

 private:
  parallel::Communicator* comm_;
};

}  // namespace caduceus::worker
