#include "worker/parallel/gloo_communicator.h"

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include "absl/strings/string_view.h"
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"
#include "worker/parallel/tcp_store.h"

namespace caduceus::parallel {
namespace {

std::chrono::milliseconds ToMs(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Gloo has no error codes, only messages; its timeouts all say "Timed out" (or "timeout").
absl::Status FromGlooError(absl::string_view op, int rank, absl::string_view what) {
  const std::string message = absl::StrCat("gloo ", op, " failed on rank ", rank, ": ", what);
  const std::string lower = absl::AsciiStrToLower(what);
  if (absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout")) {
    return absl::DeadlineExceededError(message);
  }
  return absl::UnavailableError(message);
}

// Gloo writes to sockets without MSG_NOSIGNAL: a peer that dies mid-send would kill this
// process with SIGPIPE instead of surfacing as an error. Ignore it unless the program installed
// its own handler.
void IgnoreSigpipeIfDefault() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    ::signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const GlooOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad rank ", options.rank, " for group size ", options.size));
  }
  if (options.timeout <= absl::ZeroDuration() || options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeouts must be positive");
  }
  ASSIGN_OR_RETURN(HostPort store_at, ParseHostPort(options.store_address));
  IgnoreSigpipeIfDefault();

  std::unique_ptr<GlooCommunicator> comm(new GlooCommunicator(options.rank, options.size));
  comm->timeout_ = options.timeout;
  if (options.host_store) {
    ASSIGN_OR_RETURN(comm->store_server_, TcpStoreServer::Create("", store_at.port));
  }
  TcpStoreClientOptions store_options;
  store_options.host = store_at.host;
  store_options.port = store_at.port;
  store_options.connect_timeout = options.connect_timeout;
  store_options.op_timeout = options.connect_timeout;
  ASSIGN_OR_RETURN(comm->store_, TcpStoreClient::Connect(store_options));

  const std::string who = absl::StrCat("rank ", options.rank, "/", options.size);
  try {
    comm->prefix_store_ =
        std::make_unique<gloo::rendezvous::PrefixStore>(options.prefix, *comm->store_);
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    attr.iface = options.iface;
    comm->device_ = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
    // The mesh setup waits for peers that may still be starting: give it the connect timeout,
    // then switch to the (shorter) per-collective one.
    context->setTimeout(ToMs(options.connect_timeout));
    context->connectFullMesh(*comm->prefix_store_, comm->device_);
    context->setTimeout(ToMs(options.timeout));
    comm->context_ = std::move(context);
  } catch (const std::exception& e) {
    absl::Status st = FromGlooError("connect", options.rank, e.what());
    return absl::Status(st.code(), absl::StrCat(st.message(), " (store ", options.store_address,
                                                ", prefix '", options.prefix, "')"));
  } catch (...) {
    return absl::UnavailableError(absl::StrCat("gloo connect failed on ", who, ": unknown error"));
  }
  LogInfo(absl::StrCat("gloo communicator up: ", who, ", store ", options.store_address,
                       ", prefix '", options.prefix, "', timeout ",
                       absl::FormatDuration(options.timeout)));
  return comm;
}

GlooCommunicator::GlooCommunicator(int rank, int size) : rank_(rank), size_(size) {}

GlooCommunicator::~GlooCommunicator() {
  // Destroying a context whose peers died can throw inside Gloo; a destructor must not.
  try {
    context_.reset();
    device_.reset();
  } catch (...) {
  }
}

template <typename Fn>
absl::Status GlooCommunicator::Run(const char* op, Fn&& fn) {
  if (!error_.ok()) {
    return absl::UnavailableError(absl::StrCat(op, " on rank ", rank_,
                                               ": communicator unusable after an earlier error: ",
                                               error_.message()));
  }
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    error_ = FromGlooError(op, rank_, e.what());
  } catch (...) {
    error_ = absl::UnavailableError(absl::StrCat("gloo ", op, " failed on rank ", rank_,
                                                 ": unknown error"));
  }
  LogError(error_.ToString());
  return error_;
}

absl::Status GlooCommunicator::AllReduceSum(float* data, size_t count) {
  if (count == 0 || size_ == 1) return Run("allreduce", [] {});
  return Run("allreduce", [&] {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(data, count);
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTimeout(ToMs(timeout_));
    gloo::allreduce(opts);
  });
}

absl::Status GlooCommunicator::AllGather(const float* in, size_t count, float* out) {
  if (count == 0) return Run("allgather", [] {});
  if (size_ == 1) {
    return Run("allgather", [&] { std::copy(in, in + count, out); });
  }
  return Run("allgather", [&] {
    gloo::AllgatherOptions opts(context_);
    // Gloo only reads the input; its API just lacks const.
    opts.setInput(const_cast<float*>(in), count);
    opts.setOutput(out, count * static_cast<size_t>(size_));
    opts.setTimeout(ToMs(timeout_));
    gloo::allgather(opts);
  });
}

absl::Status GlooCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " outside group of ", size_));
  }
  if (bytes == 0 || size_ == 1) return Run("broadcast", [] {});
  return Run("broadcast", [&] {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<uint8_t*>(data), bytes);
    opts.setRoot(root);
    opts.setTimeout(ToMs(timeout_));
    gloo::broadcast(opts);
  });
}

absl::Status GlooCommunicator::Barrier() {
  if (size_ == 1) return Run("barrier", [] {});
  return Run("barrier", [&] {
    gloo::BarrierOptions opts(context_);
    opts.setTimeout(ToMs(timeout_));
    gloo::barrier(opts);
  });
}

}  // namespace caduceus::parallel
