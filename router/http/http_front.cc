#include "router/http/http_front.h"

#include <civetweb.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "caduceus/v1/generation.grpc.pb.h"
#include "common/log.h"
#include "proto/status_conversion.h"
#include "router/http/forwarded_caller.h"
#include "router/http/openai_request.h"
#include "router/http/openai_response.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::router::http {

struct HttpFront::Impl {
  HttpFrontOptions options;
  std::unique_ptr<v1::Generation::Stub> stub;
  const text::Tokenizer* tokenizer = nullptr;
  int64_t started = 0;  // Unix seconds: /v1/models "created"
  // CivetWeb gives each connection a pool thread until it closes, idle keep-alive time
  // included: connections open now (init_connection .. connection_closed).
  std::atomic<int> open_connections{0};
};

namespace {

// "Connection: close\r\n" when the connection of the call this thread serves closes after it
// (HttpFront::HandleRequest decides), else empty. One call per CivetWeb thread at a time.
thread_local const char* connection_header = "";

// --- writing responses -------------------------------------------------------------------

void SendBody(mg_connection* conn, int status, std::string_view content_type,
              std::string_view body, std::string_view extra_headers = "") {
  // Status line, headers and body in one write: two writes meet Nagle's algorithm and the
  // client's delayed ACK, 40 ms per call (measured: docs/performance.md).
  const std::string response = absl::StrCat(
      "HTTP/1.1 ", status, " ", mg_get_response_code_text(conn, status),
      "\r\nContent-Type: ", std::string(content_type), "\r\nContent-Length: ", body.size(),
      "\r\nCache-Control: no-store\r\n", connection_header, std::string(extra_headers), "\r\n",
      std::string(body));
  mg_write(conn, response.data(), response.size());
}

int SendJson(mg_connection* conn, int status, std::string_view body) {
  SendBody(conn, status, "application/json", body);
  return status;
}

int SendError(mg_connection* conn, const absl::Status& status) {
  HttpError e = ErrorFor(status);
  // Overload and drain are transient: tell well-behaved clients when to come back.
  const char* retry = e.http_status == 429 || e.http_status == 503 ? "Retry-After: 1\r\n" : "";
  SendBody(conn, e.http_status, "application/json", e.body, retry);
  return e.http_status;
}


// One server-sent event in one HTTP chunk; false when the client is gone.
bool SendEvent(mg_connection* conn, std::string_view data) {
  const std::string event = absl::StrCat("data: ", std::string(data), "\n\n");
  return mg_send_chunk(conn, event.data(), static_cast<unsigned>(event.size())) > 0;
}

// --- reading requests --------------------------------------------------------------------

// The body, or an error: 413 for one over the limit (RESOURCE_EXHAUSTED would say 429, which
// tells the client to retry the same thing).
absl::StatusOr<std::string> ReadBody(mg_connection* conn, int64_t limit, bool* too_large) {
  const mg_request_info* info = mg_get_request_info(conn);
  if (info->content_length > limit) {
    *too_large = true;
    return absl::InvalidArgumentError(absl::StrCat("request body of ", info->content_length,
                                                   " bytes; at most ", limit));
  }
  std::string body;
  char buf[16384];
  while (true) {
    const int n = mg_read(conn, buf, sizeof(buf));
    if (n < 0) return absl::InvalidArgumentError("could not read the request body");
    if (n == 0) break;
    body.append(buf, static_cast<size_t>(n));
    if (static_cast<int64_t>(body.size()) > limit) {
      *too_large = true;
      return absl::InvalidArgumentError(absl::StrCat("request body over ", limit, " bytes"));
    }
  }
  return body;
}

// The HTTP caller as gRPC metadata: the bearer token (the Generation service checks it) and,
// for the audit record, the client's address and user agent.
// gRPC metadata values must be printable ASCII: gRPC aborts the process on any other byte
// (found 2026-12-01: "Authorization: Bearer ümlaut" killed the router). HTTP headers may hold
// anything CivetWeb accepts, so every forwarded value goes through one of these.
bool PrintableAscii(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

std::string ToPrintableAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  }
  return out;
}

void ForwardCaller(const HttpFrontOptions& options, mg_connection* conn,
                   grpc::ClientContext* context) {
  context->AddMetadata(kFrontSecretKey, options.front_secret);
  // A token with other bytes matches no configured token (they are read from a file and
  // compared byte for byte, and a header cannot carry them to gRPC): not forwarding it gives
  // the same UNAUTHENTICATED as a wrong one.
  if (const char* auth = mg_get_header(conn, "Authorization"); auth != nullptr && PrintableAscii(auth)) {
    context->AddMetadata("authorization", auth);
  }
  const mg_request_info* info = mg_get_request_info(conn);
  context->AddMetadata(kPeerKey, ToPrintableAscii(absl::StrCat("ipv4:", info->remote_addr, ":",
                                                               info->remote_port)));
  if (const char* agent = mg_get_header(conn, "User-Agent"); agent != nullptr) {
    context->AddMetadata(kUserAgentKey, ToPrintableAscii(agent));
  }
}

std::string RequestIdHeader(mg_connection* conn) {
  const char* id = mg_get_header(conn, "X-Request-Id");
  return id == nullptr ? std::string() : std::string(id);
}

}  // namespace

// --- the endpoints ---------------------------------------------------------------------------

namespace {

int ServeModels(HttpFront::Impl& impl, mg_connection* conn) {
  grpc::ClientContext context;
  ForwardCaller(impl.options, conn, &context);
  v1::ModelInfo info;
  const grpc::Status s = impl.stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!s.ok()) return SendError(conn, FromGrpcStatus(s));
  nlohmann::ordered_json model = {{"id", impl.options.served_model_name},
                                  {"object", "model"},
                                  {"created", impl.started},
                                  {"owned_by", "caduceus"},
                                  {"root", info.model_id()},
                                  {"revision", info.revision()},
                                  {"quantization", info.quantization()},
                                  {"max_model_len", info.max_context()}};
  nlohmann::ordered_json j = {{"object", "list"}, {"data", nlohmann::ordered_json::array({model})}};
  return SendJson(conn, 200, j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

// OpenAI's n > 1: n requests at once (the prefix cache computes the shared prompt once). With a
// seed s, choice i samples with seed s + i (so the choices differ and the call is
// reproducible); without one each request gets its own random seed. Choice i > 0 of a request
// with an X-Request-Id gets "<id>-<i>". The first failure fails the call and cancels the rest.
int ServeChoices(HttpFront::Impl& impl, mg_connection* conn, OpenAiCall& call, ResponseContext& rc) {
  struct Choice {
    grpc::ClientContext context;
    v1::GenerateResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::GenerateResponse>> reader;
  };
  const bool chat = call.endpoint == Endpoint::kChatCompletions;
  std::vector<std::unique_ptr<Choice>> choices;
  grpc::CompletionQueue cq;
  for (int i = 0; i < call.n; ++i) {
    auto& c = *choices.emplace_back(std::make_unique<Choice>());
    ForwardCaller(impl.options, conn, &c.context);
    OpenAiCall one = call;
    v1::SamplingParameters* s = one.mutable_params()->mutable_sampling();
    if (s->seed_set_case() == v1::SamplingParameters::kSeed) s->set_seed(s->seed() + i);
    const std::string& id = chat ? call.chat.request_id() : call.generate.request_id();
    if (i > 0 && !id.empty()) one.set_request_id(absl::StrCat(id, "-", i));
    c.reader = chat ? impl.stub->AsyncChat(&c.context, one.chat, &cq)
                    : impl.stub->AsyncGenerate(&c.context, one.generate, &cq);
    c.reader->Finish(&c.response, &c.status, reinterpret_cast<void*>(static_cast<intptr_t>(i)));
  }
  std::optional<grpc::Status> failed;
  for (int done = 0; done < call.n; ++done) {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) break;
    const Choice& c = *choices[static_cast<size_t>(reinterpret_cast<intptr_t>(tag))];
    if (!c.status.ok() && !failed) {
      failed = c.status;
      for (auto& other : choices) other->context.TryCancel();
    }
  }
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
  if (failed) return SendError(conn, FromGrpcStatus(*failed));
  std::vector<v1::GenerateResponse> responses;
  responses.reserve(choices.size());
  for (auto& c : choices) responses.push_back(std::move(c->response));
  rc.id += responses.front().request_id();
  return SendJson(conn, 200, CompletionBody(rc, responses));
}

int ServeUnary(HttpFront::Impl& impl, mg_connection* conn, OpenAiCall& call, ResponseContext& rc) {
  if (call.n > 1) return ServeChoices(impl, conn, call, rc);
  grpc::ClientContext context;
  ForwardCaller(impl.options, conn, &context);
  v1::GenerateResponse response;
  const grpc::Status s = call.endpoint == Endpoint::kChatCompletions
                             ? impl.stub->Chat(&context, call.chat, &response)
                             : impl.stub->Generate(&context, call.generate, &response);
  if (!s.ok()) return SendError(conn, FromGrpcStatus(s));
  rc.id += response.request_id();
  return SendJson(conn, 200, CompletionBody(rc, response));
}

int ServeStream(HttpFront::Impl& impl, mg_connection* conn, OpenAiCall& call, ResponseContext& rc) {
  grpc::ClientContext context;
  ForwardCaller(impl.options, conn, &context);
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader =
      call.endpoint == Endpoint::kChatCompletions ? impl.stub->ChatStream(&context, call.chat)
                                                  : impl.stub->GenerateStream(&context, call.generate);
  // The status line waits for the first message, so that a refused request (validation,
  // overload, auth) gets its HTTP status instead of a 200 with an error event.
  v1::GenerateStreamResponse message;
  if (!reader->Read(&message)) return SendError(conn, FromGrpcStatus(reader->Finish()));
  rc.id += message.request_id();
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n%s\r\n", connection_header);
  bool client_here = rc.endpoint != Endpoint::kChatCompletions || SendEvent(conn, RoleChunk(rc));
  v1::Usage usage;
  bool have_usage = false;
  do {
    if (message.has_usage()) {
      usage = message.usage();
      have_usage = true;
    }
    const std::string chunk = StreamChunk(rc, message);
    if (client_here && !chunk.empty()) client_here = SendEvent(conn, chunk);
    if (!client_here) {
      // The client left: cancelling the call frees the request's KV blocks at the next step.
      context.TryCancel();
      break;
    }
  } while (reader->Read(&message));
  while (!client_here && reader->Read(&message)) {
  }
  const grpc::Status s = reader->Finish();
  if (!client_here) return 499;
  if (!s.ok()) {
    // Headers are gone: the error travels as an event (what vLLM and OpenAI do mid-stream).
    SendEvent(conn, ErrorFor(FromGrpcStatus(s)).body);
  } else if (call.include_usage && have_usage) {
    SendEvent(conn, UsageChunk(rc, usage));
  }
  SendEvent(conn, "[DONE]");
  mg_send_chunk(conn, "", 0);  // the chunked body's end
  return 200;
}

int ServeGeneration(HttpFront::Impl& impl, mg_connection* conn, Endpoint endpoint) {
  bool too_large = false;
  absl::StatusOr<std::string> body = ReadBody(conn, impl.options.max_body_bytes, &too_large);
  if (!body.ok()) {
    if (!too_large) return SendError(conn, body.status());
    HttpError e = ErrorFor(body.status());
    SendBody(conn, 413, "application/json", e.body, "Connection: close\r\n");
    return 413;
  }
  absl::StatusOr<OpenAiCall> call = ParseOpenAiRequest(endpoint, *body);
  if (!call.ok()) return SendError(conn, call.status());
  if (!call->model.empty() && call->model != impl.options.served_model_name) {
    return SendError(conn, absl::NotFoundError(absl::StrCat(
                               "the model '", text::SanitizeUtf8(call->model),
                               "' does not exist; this server serves '",
                               impl.options.served_model_name, "' (see /v1/models)")));
  }
  const std::string request_id = RequestIdHeader(conn);
  if (!text::IsValidUtf8(request_id)) {
    return SendError(conn, absl::InvalidArgumentError("X-Request-Id: not valid UTF-8"));
  }
  call->set_request_id(request_id);
  ResponseContext rc;
  rc.endpoint = endpoint;
  rc.id = endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-";
  rc.model = impl.options.served_model_name;
  rc.created = static_cast<int64_t>(std::time(nullptr));
  rc.tokens_as_ids = call->tokens_as_ids;
  rc.tokenizer = impl.tokenizer;
  return call->stream ? ServeStream(impl, conn, *call, rc) : ServeUnary(impl, conn, *call, rc);
}

}  // namespace

int HttpFront::HandleRequest(mg_connection* conn) {
  Impl& impl = *static_cast<Impl*>(mg_get_request_info(conn)->user_data);
  // An idle keep-alive connection holds its pool thread (CivetWeb has one thread per
  // connection) for up to keep_alive_timeout_ms: with every thread held by idle clients (SDK
  // connection pools), new clients would wait unserved. So connections are only kept while at
  // most half the threads hold one; beyond that each response says "Connection: close" and the
  // thread is free for the next client right after it.
  const bool keep = impl.open_connections.load() <= impl.options.threads / 2;
  if (!keep) mg_disable_connection_keep_alive(conn);
  connection_header = keep ? "" : "Connection: close\r\n";
  if (impl.options.on_call_start) impl.options.on_call_start();
  const char* endpoint = "other";
  const int status = Dispatch(impl, conn, &endpoint);
  if (impl.options.on_call_end) impl.options.on_call_end(endpoint, status);
  return status;
}

int HttpFront::Dispatch(Impl& impl, mg_connection* conn, const char** endpoint) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string_view method = info->request_method;
  std::string_view path = info->local_uri != nullptr ? info->local_uri : "";
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const bool get = method == "GET" || method == "HEAD";
  const bool post = method == "POST";
  if (path == "/health") {
    *endpoint = "health";
    return get ? SendJson(conn, 200, "{}")
               : SendError(conn, absl::InvalidArgumentError("use GET /health"));
  }
  if (path == "/v1/models") {
    *endpoint = "models";
    if (get) return ServeModels(impl, conn);
    return SendError(conn, absl::InvalidArgumentError("use GET /v1/models"));
  }
  for (auto [p, kind, label] :
       {std::tuple{"/v1/chat/completions", Endpoint::kChatCompletions, "chat_completions"},
        std::tuple{"/v1/completions", Endpoint::kCompletions, "completions"}}) {
    if (path != p) continue;
    *endpoint = label;
    if (post) return ServeGeneration(impl, conn, kind);
    HttpError e = ErrorFor(absl::InvalidArgumentError(absl::StrCat("use POST ", p)));
    SendBody(conn, 405, "application/json", e.body, "Allow: POST\r\n");
    return 405;
  }
  return SendError(conn, absl::NotFoundError(absl::StrCat(
                             "no such endpoint: ", text::SanitizeUtf8(path),
                             " (this server has /v1/chat/completions, /v1/completions, "
                             "/v1/models, /health)")));
}

namespace {

int LogCivetMessage(const mg_connection*, const char* message) {
  LogWarning(absl::StrCat("http: ", message));
  return 1;
}

// "HOST:PORT" -> CivetWeb's "HOST:PORT" (plain) or "HOST:PORTs" (TLS).
absl::StatusOr<int> ParsePort(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http-listen: '", listen,
                                                   "' is not HOST:PORT with a port in 1..65535"));
  }
  return port;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(HttpFrontOptions options,
                                                            std::shared_ptr<grpc::Channel> api,
                                                            const text::Tokenizer* tokenizer) {
  absl::StatusOr<int> port = ParsePort(options.listen);
  if (!port.ok()) return port.status();
  if (options.threads < 1) return absl::InvalidArgumentError("--http-threads must be >= 1");
  std::unique_ptr<HttpFront> front(new HttpFront());
  front->impl_ = std::make_unique<Impl>();
  Impl& impl = *front->impl_;
  impl.options = std::move(options);
  impl.stub = v1::Generation::NewStub(std::move(api));
  impl.tokenizer = tokenizer;
  impl.started = static_cast<int64_t>(std::time(nullptr));

  const std::string threads = std::to_string(impl.options.threads);
  const char* civet_options[] = {
      "listening_ports", impl.options.listen.c_str(), "num_threads", threads.c_str(),
      // Reads and writes of one connection; a stream's pauses between tokens are not I/O.
      "request_timeout_ms", "60000", "enable_keep_alive", "yes", "keep_alive_timeout_ms", "60000",
      // Streamed tokens are small writes that must leave at once.
      "tcp_nodelay", "1", nullptr};
  mg_init_library(0);
  mg_callbacks callbacks{};
  callbacks.begin_request = &HttpFront::HandleRequest;
  callbacks.log_message = &LogCivetMessage;
  callbacks.init_connection = [](const mg_connection* conn, void**) {
    static_cast<Impl*>(mg_get_user_data(mg_get_context(conn)))->open_connections.fetch_add(1);
    return 0;
  };
  callbacks.connection_closed = [](const mg_connection* conn) {
    static_cast<Impl*>(mg_get_user_data(mg_get_context(conn)))->open_connections.fetch_sub(1);
  };
  front->context_ = mg_start(&callbacks, &impl, civet_options);
  if (front->context_ == nullptr) {
    mg_exit_library();
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", impl.options.listen,
                                               " (port in use, or not a local address)"));
  }
  front->port_ = *port;
  return front;
}

HttpFront::~HttpFront() {
  if (context_ != nullptr) {
    mg_stop(context_);
    mg_exit_library();
  }
}

}  // namespace caduceus::router::http
