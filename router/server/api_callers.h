// Who may call the public API (--api-token-file): named callers, each with its own bearer
// token and the most urgent priority it may ask for. The name goes into every audit record (a
// hospital's audit trail must say which service asked, not only that some token was right),
// and the priority floor keeps a batch service from jumping ahead of clinicians however it
// sets its requests' priority.
//
// File format, one caller per line: NAME TOKEN [MIN_PRIORITY]; blank lines and lines starting
// with '#' are skipped. A file holding nothing but one token (the original format) is one
// caller named "default" without a floor.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace grpc {
class ServerContextBase;
}

namespace caduceus::router {

struct ApiCaller {
  std::string name;
  std::string token;
  // Requests of this caller get at least this priority value (lower is more urgent).
  int32_t min_priority = std::numeric_limits<int32_t>::min();
};

class ApiCallers {
 public:
  ApiCallers() = default;  // no token required: every call is anonymous
  // INVALID_ARGUMENT naming the line for a malformed entry, a duplicate name or token, or a
  // file without any caller. `origin` names the file in messages.
  static absl::StatusOr<ApiCallers> Parse(std::string_view text, std::string_view origin);
  // One caller, "default", with this token taken as it is (the registry token).
  static ApiCallers Single(std::string token);

  bool required() const { return !callers_.empty(); }
  size_t size() const { return callers_.size(); }
  // The caller presenting `authorization` ("Bearer <token>", scheme in any case, RFC 7235), or
  // null. Every token is compared in full and in constant time, so the time taken does not tell
  // how much of a guess was right nor which caller it was close to.
  const ApiCaller* FindByAuthorization(std::string_view authorization) const;
  // The same for a call's "authorization" metadata.
  const ApiCaller* Find(const grpc::ServerContextBase& context) const;

 private:
  std::vector<ApiCaller> callers_;
};

}  // namespace caduceus::router
