#include "router/server/api_callers.h"

#include <grpcpp/server_context.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace caduceus::router {
namespace {

// Constant time in the length of `token`: every byte is compared whatever the first mismatch.
bool SameToken(std::string_view presented, const std::string& token) {
  if (presented.size() != token.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(presented[i] ^ token[i]);
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<ApiCallers> ApiCallers::Parse(std::string_view text, std::string_view origin) {
  ApiCallers out;
  const std::string where(origin);
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(text.data(), text.size()), '\n');
  std::vector<std::pair<int, std::vector<std::string>>> entries;
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    entries.emplace_back(static_cast<int>(i + 1), std::move(fields));
  }
  if (entries.empty()) return absl::InvalidArgumentError(absl::StrCat(where, " holds no token"));
  if (entries.size() == 1 && entries[0].second.size() == 1) {
    out.callers_.push_back({"default", entries[0].second[0]});
    return out;
  }
  absl::flat_hash_set<std::string> names, tokens;
  for (const auto& [line, fields] : entries) {
    const std::string at = absl::StrCat(where, " line ", line, ": ");
    if (fields.size() < 2 || fields.size() > 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          at, "expected NAME TOKEN [MIN_PRIORITY] (a file with several callers names each)"));
    }
    ApiCaller c{fields[0], fields[1]};
    if (fields.size() == 3 && !absl::SimpleAtoi(fields[2], &c.min_priority)) {
      return absl::InvalidArgumentError(absl::StrCat(at, "MIN_PRIORITY '", fields[2],
                                                     "' is not an integer"));
    }
    if (!names.insert(c.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(at, "caller '", c.name, "' appears twice"));
    }
    // Two callers with one token could not be told apart in the audit trail.
    if (!tokens.insert(c.token).second) {
      return absl::InvalidArgumentError(absl::StrCat(at, "caller '", c.name,
                                                     "' has the token of another caller"));
    }
    out.callers_.push_back(std::move(c));
  }
  return out;
}

ApiCallers ApiCallers::Single(std::string token) {
  ApiCallers out;
  out.callers_.push_back({"default", std::move(token)});
  return out;
}

const ApiCaller* ApiCallers::FindByAuthorization(std::string_view authorization) const {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kScheme.size()),
                              absl::string_view(kScheme.data(), kScheme.size()))) {
    return nullptr;
  }
  const std::string_view presented = authorization.substr(kScheme.size());
  const ApiCaller* found = nullptr;
  for (const ApiCaller& c : callers_) {  // no early exit: the same work whoever matches
    if (SameToken(presented, c.token)) found = &c;
  }
  return found;
}

const ApiCaller* ApiCallers::Find(const grpc::ServerContextBase& context) const {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return nullptr;
  return FindByAuthorization(std::string_view(it->second.data(), it->second.size()));
}

}  // namespace caduceus::router
