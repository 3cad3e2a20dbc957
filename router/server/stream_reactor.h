// Relays one request's stream messages to its gRPC server stream with gRPC's callback API.
//
// Why not the synchronous API: there, each stream has a handler thread that the replica loop
// wakes for every token, and that thread then drives the write. At concurrency 32 that is 32
// wake-ups and context switches per step, on cores the worker's forward pass also wants. Here
// the replica loop that pushes a message starts the write itself (StartWrite does not block), and
// gRPC's completion of one write starts the next. Client cancel, disconnect and deadline arrive
// as OnCancel / a failed write and become RequestCancel, which the loop honours at its next step.
//
// The streams are raw (ByteBuffer) methods: gRPC 1.51's callback handler answers a request that
// does not parse (invalid UTF-8 in a string field) with UNIMPLEMENTED and no message, so the
// service parses the request itself (ParseStreamRequest) and this reactor writes serialized
// messages.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "caduceus/v1/generation.pb.h"
#include "router/server/active_request.h"

namespace caduceus::router {

class StreamReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // `on_done` runs once gRPC is finished with the stream, just before the reactor deletes
  // itself (it owns itself, as gRPC's callback API expects), with the stream's status and the
  // messages it wrote folded together (their text only with `fold_text`).
  using DoneCallback = std::function<void(const grpc::Status&, const v1::GenerateResponse&)>;
  StreamReactor(grpc::CallbackServerContext* context, std::shared_ptr<ActiveRequest> request,
                bool fold_text, DoneCallback on_done);

  // Starts relaying: from now on every message the replica loop pushes is written.
  void Start();
  // Ends the stream with `status` before anything was written (e.g. no replica took it).
  void Abort(const grpc::Status& status);


 private:
  // All state is guarded by the link's mutex: the replica loop (through the link), gRPC's
  // reactions and Start/Abort may run on different threads at once.
  class Link;

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  void PumpLocked();
  void FinishLocked(const grpc::Status& status);

  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<ActiveRequest> request_;
  const bool fold_text_;
  const DoneCallback on_done_;
  v1::GenerateResponse sent_;       // what was written, folded (for on_done_)
  grpc::Status status_;             // how the stream ended
  const std::shared_ptr<Link> link_;
  grpc::ByteBuffer current_;  // the message being written, serialized; gRPC reads it until done
  bool writing_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> cancelled_;  // OnCancel came while a write was in flight
};

}  // namespace caduceus::router
