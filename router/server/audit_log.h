// One JSON line per public call that takes text (Generate, GenerateStream, Chat, ChatStream,
// Tokenize; GetModelInfo and health checks carry none), for the
// audit trail a hospital keeps of who asked the model what, when, and what it did: request id,
// caller (peer, user agent, whether the bearer token was checked), model and revision, the
// parameters, token counts, finish reason, status and timings. No prompt or output text unless
// --audit-log-payloads (patient data). Refused calls (authentication, validation, queue full)
// are recorded too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "caduceus/v1/generation.pb.h"
#include "router/server/api_callers.h"
#include "router/server/request_spec.h"

namespace caduceus::router {

// What one call produced, as its handler saw it.
struct CallOutcome {
  grpc::Status status;
  // The messages folded together (text only with payloads); null when nothing was produced.
  const v1::GenerateResponse* response = nullptr;
};

// What the record says about the request itself (null pieces: refused before they existed).
struct CallRequest {
  const char* method = "";
  const RequestSpec* spec = nullptr;  // null when validation refused it, and for Tokenize
  // The tokenized input: a generation's prompt, or what Tokenize answered.
  const std::vector<int32_t>* prompt_ids = nullptr;
  std::string replica, model_id, revision;
  absl::Time arrival = absl::InfinitePast();
};

class AuditLog {
 public:
  // `path`: a file (appended to; created 0600) or "-" for standard output.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path, bool payloads,
                                                        const text::Tokenizer* tokenizer);
  ~AuditLog();

  bool payloads() const { return payloads_; }
  // Calls that carry this secret came through the router's own HTTP front: their record names
  // the HTTP client it forwarded (router/http/forwarded_caller.h). Set before serving.
  void TrustHttpFront(std::string secret) { http_front_secret_ = std::move(secret); }
  // Writes the call's line (whole lines, flushed, serialized across threads). `caller`: the
  // caller whose bearer token the call presented (its name is recorded), null when the router
  // requires no token or the call presented none that is known.
  void Record(const grpc::ServerContextBase& context, const CallRequest& request,
              const CallOutcome& outcome, const ApiCaller* caller);

 private:
  AuditLog(FILE* out, bool owned, bool payloads, const text::Tokenizer* tokenizer)
      : out_(out), owned_(owned), payloads_(payloads), tokenizer_(tokenizer) {}

  std::mutex mu_;
  FILE* out_;
  const bool owned_;
  const bool payloads_;
  const text::Tokenizer* tokenizer_;
  std::string http_front_secret_;
};

// Folds one stream message into a unary response (what a unary call returns; what a stream's
// audit record counts). Text only when `with_text`.
void FoldMessage(const v1::GenerateStreamResponse& m, v1::GenerateResponse* r, bool with_text = true);

}  // namespace caduceus::router
