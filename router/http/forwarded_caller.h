// gRPC metadata the HTTP front adds to the in-process calls it makes, so that the audit record
// names the HTTP client (its address and user agent) instead of the in-process channel. The
// router trusts the forwarded values only next to its per-process secret, which no outside
// gRPC client knows: a gRPC caller cannot pass itself off as someone else in the audit trail.
#pragma once

namespace caduceus::router::http {

inline constexpr char kFrontSecretKey[] = "x-caduceus-http-front";
inline constexpr char kPeerKey[] = "x-caduceus-http-peer";
inline constexpr char kUserAgentKey[] = "x-caduceus-http-user-agent";

}  // namespace caduceus::router::http
