#include "worker/server/control_plane.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::worker {

absl::Status ControlPlane::Send(ControlKind kind, std::string payload) {
  int64_t header[2] = {static_cast<int64_t>(kind), static_cast<int64_t>(payload.size())};
  RETURN_IF_ERROR(comm_->Broadcast(header, sizeof(header), 0));
  if (payload.empty()) return absl::OkStatus();
  return comm_->Broadcast(payload.data(), payload.size(), 0);
}

absl::StatusOr<ControlMessage> ControlPlane::Receive() {
  int64_t header[2] = {0, 0};
  RETURN_IF_ERROR(comm_->Broadcast(header, sizeof(header), 0));
  const int64_t kind = header[0];
  const int64_t size = header[1];
  if (kind < static_cast<int64_t>(ControlKind::kStep) ||
      kind > static_cast<int64_t>(ControlKind::kShutdown) || size < 0 || size > kMaxPayloadBytes) {
    return absl::DataLossError(
        absl::StrCat("control plane: malformed header (kind ", kind, ", ", size, " bytes)"));
  }
  ControlMessage message;
  message.kind = static_cast<ControlKind>(kind);
  if (size > 0) {
    message.payload.resize(static_cast<size_t>(size));
    RETURN_IF_ERROR(comm_->Broadcast(message.payload.data(), message.payload.size(), 0));
  }
  return message;
}

}  // namespace caduceus::worker
