#include "worker/parallel/tcp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "gloo/common/error.h"

namespace caduceus::parallel {
namespace {

enum Op : uint8_t { kSet = 1, kGet = 2, kCheck = 3, kWait = 4 };
enum Code : uint8_t { kOk = 0, kTimeout = 1, kNotFound = 2, kBadRequest = 3 };

// Bounds on what a request may ask the server to allocate: a stray client (a port scanner, a
// wrong service) must not make the leader allocate gigabytes.
constexpr uint32_t kMaxKeys = 4096;
constexpr uint32_t kMaxKeyBytes = 64 * 1024;
constexpr uint32_t kMaxValueBytes = 64 * 1024 * 1024;
// A response may take the server-side wait plus this long to arrive before we call the server
// unreachable (covers a leader that is alive but slow to schedule).
constexpr absl::Duration kResponseSlack = absl::Seconds(10);

std::string ErrnoText(int err) { return std::strerror(err); }

void AppendU32(std::vector<char>& out, uint32_t v) {
  const char* p = reinterpret_cast<const char*>(&v);
  out.insert(out.end(), p, p + sizeof(v));
}
void AppendI64(std::vector<char>& out, int64_t v) {
  const char* p = reinterpret_cast<const char*>(&v);
  out.insert(out.end(), p, p + sizeof(v));
}
void AppendBytes(std::vector<char>& out, const char* data, size_t n) {
  AppendU32(out, static_cast<uint32_t>(n));
  out.insert(out.end(), data, data + n);
}

absl::Status WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    // MSG_NOSIGNAL: a peer that went away must be an error, not a SIGPIPE killing the worker.
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send: ", ErrnoText(errno)));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// Reads exactly n bytes. With a deadline, gives up with DEADLINE_EXCEEDED when it passes.
absl::Status ReadAll(int fd, char* data, size_t n, absl::Time deadline = absl::InfiniteFuture()) {
  while (n > 0) {
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("read timed out");
      pollfd p{fd, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
      if (rc < 0 && errno != EINTR) return absl::UnavailableError(absl::StrCat("poll: ", ErrnoText(errno)));
      if (rc <= 0) continue;
    }
    ssize_t r = ::recv(fd, data, n, 0);
    if (r == 0) return absl::UnavailableError("connection closed by peer");
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("recv: ", ErrnoText(errno)));
    }
    data += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ReadU32(int fd, absl::Time deadline = absl::InfiniteFuture()) {
  uint32_t v = 0;
  RETURN_IF_ERROR(ReadAll(fd, reinterpret_cast<char*>(&v), sizeof(v), deadline));
  return v;
}

absl::StatusOr<std::string> ReadString(int fd, uint32_t max_len) {
  ASSIGN_OR_RETURN(uint32_t len, ReadU32(fd));
  if (len > max_len) return absl::InvalidArgumentError("field too long");
  std::string s(len, '\0');
  RETURN_IF_ERROR(ReadAll(fd, s.data(), len));
  return s;
}

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

struct AddrInfoDeleter {
  void operator()(addrinfo* a) const { ::freeaddrinfo(a); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

absl::StatusOr<AddrInfoPtr> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  const bool any = host.empty() || host == "0.0.0.0";
  hints.ai_family = any ? AF_INET : AF_UNSPEC;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = ::getaddrinfo(any ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve '", host, "': ", gai_strerror(rc)));
  }
  return AddrInfoPtr(res);
}

// Connects one socket, giving up when `deadline` passes (a blocking connect to an unreachable
// host can take minutes). Returns the fd or the errno of the failure.
int ConnectOnce(const addrinfo* a, absl::Time deadline, int* err) {
  int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
  if (rc < 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    const int64_t ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now()));
    rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 5000)));
    if (rc <= 0) {
      *err = rc == 0 ? ETIMEDOUT : errno;
      ::close(fd);
      return -1;
    }
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
    rc = so_error == 0 ? 0 : -1;
    errno = so_error;
  }
  if (rc < 0) {
    *err = errno;
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  SetNoDelay(fd);
  return fd;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address) {
  HostPort out;
  absl::string_view port_text;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("bad address '", address, "': want [v6]:port"));
    }
    out.host = std::string(address.substr(1, close - 1));
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad address '", address, "': want host:port"));
    }
    out.host = std::string(address.substr(0, colon));
    port_text = address.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port_text, &out.port) || out.port < 0 || out.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in address '", address, "'"));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Server

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Create(const std::string& host,
                                                                        int port) {
  ASSIGN_OR_RETURN(AddrInfoPtr addrs, Resolve(host, port, /*passive=*/true));
  int listen_fd = -1;
  int last_errno = 0;
  for (const addrinfo* a = addrs.get(); a != nullptr && listen_fd < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    // A restarted leader must be able to rebind its port while old connections sit in TIME_WAIT.
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd = fd;
    } else {
      last_errno = errno;
      ::close(fd);
    }
  }
  if (listen_fd < 0) {
    return absl::UnavailableError(absl::StrCat("store server cannot listen on ", host, ":", port,
                                               ": ", ErrnoText(last_errno)));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int actual_port = bound.ss_family == AF_INET6
                              ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                              : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ::close(listen_fd);
    return absl::InternalError(absl::StrCat("pipe2: ", ErrnoText(errno)));
  }
  std::unique_ptr<TcpStoreServer> server(
      new TcpStoreServer(listen_fd, pipe_fds[0], pipe_fds[1], actual_port));
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  LogInfo(absl::StrCat("store server listening on ", host.empty() ? "0.0.0.0" : host, ":",
                       actual_port));
  return server;
}

TcpStoreServer::TcpStoreServer(int listen_fd, int wake_read, int wake_write, int port)
    : listen_fd_(listen_fd), wake_read_(wake_read), wake_write_(wake_write), port_(port) {}

TcpStoreServer::~TcpStoreServer() {
  Shutdown();
  ::close(listen_fd_);
  ::close(wake_read_);
  ::close(wake_write_);
}

void TcpStoreServer::Shutdown() {
  if (stopping_.exchange(true)) return;
  char byte = 1;
  while (::write(wake_write_, &byte, 1) < 0 && errno == EINTR) {
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Unblocks connection threads sitting in recv(); each closes its own fd on the way out.
    for (int fd : connection_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(connection_threads_);
  }
  changed_.notify_all();
  for (std::thread& t : threads) t.join();
}

void TcpStoreServer::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    int rc = ::poll(fds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      LogError(absl::StrCat("store server poll failed: ", ErrnoText(errno)));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // ECONNABORTED and friends: the next poll tells more
    SetNoDelay(fd);
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_.load()) {
      ::close(fd);
      return;
    }
    connection_fds_.push_back(fd);
    connection_threads_.emplace_back([this, fd] { ServeConnection(fd); });
  }
}

void TcpStoreServer::ServeConnection(int fd) {
  auto respond = [fd](Code code, const char* data, size_t n) {
    std::vector<char> out;
    out.push_back(static_cast<char>(code));
    AppendBytes(out, data, n);
    return WriteAll(fd, out.data(), out.size());
  };
  auto respond_text = [&](Code code, absl::string_view text) {
    return respond(code, text.data(), text.size());
  };

  while (!stopping_.load()) {
    uint8_t op = 0;
    if (!ReadAll(fd, reinterpret_cast<char*>(&op), 1).ok()) break;
    absl::StatusOr<uint32_t> key_count = ReadU32(fd);
    if (!key_count.ok()) break;
    if (*key_count > kMaxKeys || (op == kSet && *key_count != 1) ||
        ((op == kGet) && *key_count != 1)) {
      respond_text(kBadRequest, "bad key count").IgnoreError();
      break;  // the stream is out of sync: drop the connection
    }
    std::vector<std::string> keys;
    bool ok = true;
    for (uint32_t i = 0; i < *key_count && ok; ++i) {
      absl::StatusOr<std::string> key = ReadString(fd, kMaxKeyBytes);
      ok = key.ok();
      if (ok) keys.push_back(*std::move(key));
    }
    if (!ok) break;

    absl::Status written;
    if (op == kSet) {
      absl::StatusOr<std::string> value = ReadString(fd, kMaxValueBytes);
      if (!value.ok()) break;
      {
        std::lock_guard<std::mutex> lock(mu_);
        data_[keys[0]] = std::vector<char>(value->begin(), value->end());
      }
      changed_.notify_all();
      written = respond(kOk, nullptr, 0);
    } else if (op == kCheck) {
      bool all = true;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const std::string& k : keys) all = all && data_.count(k) > 0;
      }
      const char flag = all ? 1 : 0;
      written = respond(kOk, &flag, 1);
    } else if (op == kGet || op == kWait) {
      int64_t timeout_ms = 0;
      if (!ReadAll(fd, reinterpret_cast<char*>(&timeout_ms), sizeof(timeout_ms)).ok()) break;
      std::unique_lock<std::mutex> lock(mu_);
      auto present = [&] {
        return std::all_of(keys.begin(), keys.end(),
                           [&](const std::string& k) { return data_.count(k) > 0; });
      };
      const bool found = changed_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(0, timeout_ms)),
                                           [&] { return stopping_.load() || present(); }) &&
                         present();
      if (!found) {
        lock.unlock();
        written = respond_text(stopping_.load() ? kNotFound : kTimeout,
                               stopping_.load() ? "store server shutting down" : "timed out");
      } else if (op == kGet) {
        std::vector<char> value = data_[keys[0]];
        lock.unlock();
        written = respond(kOk, value.data(), value.size());
      } else {
        lock.unlock();
        written = respond(kOk, nullptr, 0);
      }
    } else {
      respond_text(kBadRequest, "unknown op").IgnoreError();
      break;
    }
    if (!written.ok()) break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  connection_fds_.erase(std::remove(connection_fds_.begin(), connection_fds_.end(), fd),
                        connection_fds_.end());
  ::close(fd);  // under the lock, so Shutdown never shuts down a reused descriptor number
}

// ---------------------------------------------------------------------------------------------
// Client

absl::StatusOr<std::unique_ptr<TcpStoreClient>> TcpStoreClient::Connect(
    const TcpStoreClientOptions& options) {
  const std::string where = absl::StrCat(options.host, ":", options.port);
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options.connect_timeout;
  absl::Duration backoff = absl::Milliseconds(50);
  absl::Time next_log = start;
  std::string last_error;
  int attempts = 0;
  while (true) {
    ++attempts;
    absl::StatusOr<AddrInfoPtr> addrs = Resolve(options.host, options.port, /*passive=*/false);
    if (addrs.ok()) {
      for (const addrinfo* a = addrs->get(); a != nullptr; a = a->ai_next) {
        int err = 0;
        int fd = ConnectOnce(a, deadline, &err);
        if (fd >= 0) {
          if (attempts > 1) {
            LogInfo(absl::StrCat("connected to store at ", where, " after ", attempts,
                                 " attempts (", absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))), ")"));
          }
          return std::unique_ptr<TcpStoreClient>(new TcpStoreClient(fd, options));
        }
        last_error = ErrnoText(err);
      }
    } else {
      // DNS of a pod that is not scheduled yet fails too: retry it like a refused connection.
      last_error = std::string(addrs.status().message());
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) break;
    if (now >= next_log) {
      LogWarning(absl::StrCat("store at ", where, " not reachable yet (", last_error,
                              "); retrying for up to ", absl::FormatDuration(absl::Trunc(deadline - now, absl::Milliseconds(1)))));
      next_log = now + absl::Seconds(5);
    }
    absl::SleepFor(std::min(backoff, deadline - now));
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
  return absl::UnavailableError(absl::StrCat("cannot connect to store at ", where, " within ",
                                             absl::FormatDuration(options.connect_timeout), " (",
                                             attempts, " attempts; last error: ", last_error,
                                             ")"));
}

TcpStoreClient::TcpStoreClient(int fd, TcpStoreClientOptions options)
    : fd_(fd), options_(std::move(options)) {}

TcpStoreClient::~TcpStoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::vector<char>> TcpStoreClient::RoundTrip(const std::vector<char>& request,
                                                            absl::Duration wait_for,
                                                            absl::string_view what) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string where = absl::StrCat(options_.host, ":", options_.port);
  if (fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("store ", what, ": connection to ", where,
                                               " was lost earlier"));
  }
  const absl::Time deadline = absl::Now() + wait_for + kResponseSlack;
  absl::Status st = WriteAll(fd_, request.data(), request.size());
  uint8_t code = 0;
  std::vector<char> payload;
  if (st.ok()) st = ReadAll(fd_, reinterpret_cast<char*>(&code), 1, deadline);
  absl::StatusOr<uint32_t> len = st.ok() ? ReadU32(fd_, deadline) : absl::StatusOr<uint32_t>(st);
  if (len.ok()) {
    payload.resize(*len);
    st = ReadAll(fd_, payload.data(), payload.size(), deadline);
  } else {
    st = len.status();
  }
  if (!st.ok()) {
    // The stream may hold half a response now: never reuse it.
    ::close(fd_);
    fd_ = -1;
    return absl::UnavailableError(
        absl::StrCat("store ", what, ": connection to ", where, " failed: ", st.message()));
  }
  const std::string text(payload.begin(), payload.end());
  switch (code) {
    case kOk:
      return payload;
    case kTimeout:
      return absl::DeadlineExceededError(absl::StrCat(
          "store ", what, ": timed out after ", absl::FormatDuration(wait_for), " at ", where));
    case kNotFound:
      return absl::UnavailableError(absl::StrCat("store ", what, ": ", text, " (", where, ")"));
    default:
      return absl::InternalError(absl::StrCat("store ", what, ": server rejected request: ", text));
  }
}

absl::Status TcpStoreClient::Set(const std::string& key, const std::vector<char>& value) {
  std::vector<char> req;
  req.push_back(static_cast<char>(kSet));
  AppendU32(req, 1);
  AppendBytes(req, key.data(), key.size());
  AppendBytes(req, value.data(), value.size());
  return RoundTrip(req, absl::ZeroDuration(), absl::StrCat("set '", key, "'")).status();
}

absl::StatusOr<std::vector<char>> TcpStoreClient::Get(const std::string& key,
                                                      absl::Duration timeout) {
  std::vector<char> req;
  req.push_back(static_cast<char>(kGet));
  AppendU32(req, 1);
  AppendBytes(req, key.data(), key.size());
  AppendI64(req, absl::ToInt64Milliseconds(timeout));
  return RoundTrip(req, timeout, absl::StrCat("get '", key, "'"));
}

absl::StatusOr<bool> TcpStoreClient::Check(const std::vector<std::string>& keys) {
  std::vector<char> req;
  req.push_back(static_cast<char>(kCheck));
  AppendU32(req, static_cast<uint32_t>(keys.size()));
  for (const std::string& k : keys) AppendBytes(req, k.data(), k.size());
  ASSIGN_OR_RETURN(std::vector<char> reply, RoundTrip(req, absl::ZeroDuration(), "check"));
  return !reply.empty() && reply[0] == 1;
}

absl::Status TcpStoreClient::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  std::vector<char> req;
  req.push_back(static_cast<char>(kWait));
  AppendU32(req, static_cast<uint32_t>(keys.size()));
  for (const std::string& k : keys) AppendBytes(req, k.data(), k.size());
  AppendI64(req, absl::ToInt64Milliseconds(timeout));
  return RoundTrip(req, timeout, absl::StrCat("wait for [", absl::StrJoin(keys, ", "), "]"))
      .status();
}

void TcpStoreClient::set(const std::string& key, const std::vector<char>& data) {
  absl::Status st = Set(key, data);
  if (!st.ok()) throw gloo::IoException(std::string(st.message()));
}

std::vector<char> TcpStoreClient::get(const std::string& key) {
  absl::StatusOr<std::vector<char>> v = Get(key, options_.op_timeout);
  if (!v.ok()) throw gloo::IoException(std::string(v.status().message()));
  return *std::move(v);
}

void TcpStoreClient::wait(const std::vector<std::string>& keys) {
  wait(keys, std::chrono::milliseconds(0));
}

void TcpStoreClient::wait(const std::vector<std::string>& keys,
                          const std::chrono::milliseconds& timeout) {
  // Gloo passes 0 (kNoTimeout) for "forever"; we never wait forever, so that becomes our default.
  const absl::Duration t =
      timeout.count() > 0 ? absl::FromChrono(timeout) : options_.op_timeout;
  absl::Status st = Wait(keys, t);
  if (!st.ok()) throw gloo::IoException(std::string(st.message()));
}

}  // namespace caduceus::parallel
