// caduceus-router: the public gRPC API of a Caduceus cluster.
//
//   caduceus-router --model DIR --listen HOST:PORT --metrics-listen HOST:PORT
//                   [--replica HOST:PORT ...] (leaders may also register themselves)
//
// --model needs only config.json, generation_config.json, tokenizer.json and
// tokenizer_config.json (no weights). Every flag can also be set as CADUCEUS_<FLAG>.
// SIGTERM/SIGINT: drain (health NOT_SERVING, new requests UNAVAILABLE, in-flight ones finish
// within --drain-timeout), then exit 0.
#include <signal.h>

#include <chrono>
#include <random>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli_flags.h"
#include "common/log.h"
#include "common/mutex_debug.h"
#include "common/read_file.h"
#include "router/http/http_front.h"
#include "router/server/generation_service.h"
#include "router/server/replica_set.h"
#include "router/server/router_metrics.h"
#include "router/text/chat_template.h"
#include "router/text/tokenizer.h"
#include "worker/model/model_config.h"

ABSL_FLAG(std::string, model, "",
          "model directory: config.json, tokenizer.json, tokenizer_config.json (weights not needed)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "HOST:PORT of the public gRPC API");
ABSL_FLAG(std::string, metrics_listen, "", "HOST:PORT for Prometheus /metrics");
ABSL_FLAG(std::vector<std::string>, replica, {},
          "worker leaders' HOST:PORT (comma list; the flag may be repeated)");
ABSL_FLAG(int32_t, max_num_seqs, 256, "running sequences per replica at most");
ABSL_FLAG(int32_t, max_tokens_per_step, 2048, "new tokens per step per replica (token budget)");
ABSL_FLAG(int32_t, prefill_chunk_tokens, 512, "prompt tokens one sequence computes per step");
ABSL_FLAG(int32_t, max_waiting_requests, 256,
          "waiting requests per replica before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_waiting_tokens, 262144,
          "waiting prompt tokens per replica before RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, default_max_new_tokens, 128,
          "max_new_tokens when a request leaves it unset; shortened to what the context and the "
          "smallest replica's KV cache hold (OpenAI chat clients expect long answers: raise it)");
ABSL_FLAG(int32_t, max_stop_sequences, 16, "stop sequences per request at most");
ABSL_FLAG(int32_t, max_stop_bytes, 256, "bytes per stop sequence at most");
ABSL_FLAG(int32_t, max_prompt_bytes, 1 << 20, "prompt text bytes at most");
ABSL_FLAG(double, drain_timeout, 30, "seconds in-flight requests get to finish on SIGTERM");
ABSL_FLAG(double, heartbeat_timeout, 10,
          "seconds without a successful health check or heartbeat before a replica is down");
ABSL_FLAG(double, step_timeout, 120, "seconds one worker step may take before it is a failure");
ABSL_FLAG(int32_t, pipeline_depth, 2,
          "worker steps in flight per replica: 2 plans and sends the next step while one runs, "
          "so the worker never waits for the router between steps; 1 waits for each result");
ABSL_FLAG(int32_t, speculative_tokens, 0,
          "speculative decoding: guesses (prompt lookup: what followed the sequence's last "
          "n-gram earlier in its prompt or output) appended to each decode for the worker to "
          "verify; outputs are unchanged, copy-heavy answers (summaries, extractions) come "
          "faster. 0: off");
ABSL_FLAG(int32_t, speculative_ngram_min, 2, "shortest n-gram a guess is based on");
ABSL_FLAG(int32_t, speculative_ngram_max, 4, "longest n-gram a guess is based on (tried first)");
ABSL_FLAG(int32_t, speculative_max_running, 16,
          "guess only while at most this many sequences run on the replica; larger batches are "
          "compute-bound and pipeline their steps instead (--pipeline-depth)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve the public gRPC API over TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls-cert");
ABSL_FLAG(std::string, api_token_file, "",
          "bearer token(s) every public call must present: a file holding one token, or one "
          "caller per line 'NAME TOKEN [MIN_PRIORITY]' (the name goes into audit records; the "
          "caller's requests get at least MIN_PRIORITY)");
ABSL_FLAG(std::string, registry_token_file, "",
          "file holding a bearer token workers must present to register (the worker's "
          "--registry-token-file); without it anyone who reaches the port can register a replica "
          "and receive prompts");
ABSL_FLAG(double, forget_replica_after, 600,
          "seconds a registered replica may stay down before the router forgets it (it registers "
          "again when it comes back; one that leaves gracefully deregisters at once); --replica "
          "ones are kept");
ABSL_FLAG(int32_t, max_registered_replicas, 64,
          "registered replicas held at most; further registrations get RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, max_request_failovers, 1,
          "times one request may move to another replica when its replica fails (it recomputes "
          "what it generated and goes on; a stream continues without a gap); 0: fail them");
ABSL_FLAG(std::string, audit_log, "",
          "append one JSON line per generation call (caller, model revision, parameters, token "
          "counts, status; no text) to this file, or '-' for standard output");
ABSL_FLAG(bool, audit_log_payloads, false,
          "also put each call's prompt and output text in its audit line (patient data)");
ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT of the OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
          "/v1/models); empty: off. Same validation, token, limits and audit as the gRPC API");
ABSL_FLAG(bool, http_behind_tls_proxy, false,
          "the HTTP API is plain HTTP; with --tls-cert the router refuses to serve it unless this "
          "says TLS is terminated in front of it (ingress, service mesh sidecar)");
ABSL_FLAG(int32_t, http_threads, 64,
          "HTTP calls served at once (a streaming call holds one thread until it ends); more "
          "wait for a free thread");
ABSL_FLAG(std::string, served_model_name, "",
          "the model name the HTTP API lists and that requests' \"model\" must name (empty: the "
          "--model directory's name, as workers report it)");
ABSL_FLAG(bool, log_payloads, false,
          "log prompts and outputs (patient data: keep off in production)");

namespace caduceus::router {
namespace {

constexpr const char kUsage[] =
    "caduceus-router --model DIR --listen HOST:PORT --metrics-listen HOST:PORT "
    "[--replica HOST:PORT ...]\nThe public gRPC API of a Caduceus cluster. Every flag may also "
    "be given as CADUCEUS_<FLAG>, e.g. CADUCEUS_LISTEN.";

// `bytes` random bytes as hex, from the OS's entropy source.
std::string RandomHex(int bytes) {
  std::random_device device;
  std::string out;
  for (int i = 0; i < bytes; ++i) absl::StrAppend(&out, absl::Hex(device() & 0xff, absl::kZeroPad2));
  return out;
}

int Fail(const absl::Status& status) {
  LogError(status.ToString());
  return 1;
}

// absl keeps only the last value of a repeated flag: join every --replica into one list first.
std::vector<std::string> MergeRepeatedReplicaFlags(int argc, char** argv) {
  std::vector<std::string> args;
  std::vector<std::string> replicas;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--replica" || a == "-replica") && i + 1 < argc) {
      replicas.push_back(argv[++i]);
    } else if (a.rfind("--replica=", 0) == 0) {
      replicas.push_back(a.substr(10));
    } else {
      args.push_back(a);
    }
  }
  if (!replicas.empty()) args.push_back("--replica=" + absl::StrJoin(replicas, ","));
  return args;
}

int Main(int argc, char** argv) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<std::string> merged = MergeRepeatedReplicaFlags(argc, argv);
  std::vector<char*> merged_argv;
  for (std::string& a : merged) merged_argv.push_back(a.data());
  ParseFlagsWithEnv(static_cast<int>(merged_argv.size()), merged_argv.data(), kUsage, "CADUCEUS_");
  DisableMutexDeadlockDetection();

  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  auto config = model::ModelConfig::LoadFromDir(model_dir);
  if (!config.ok()) return Fail(config.status());
  auto tokenizer = text::Tokenizer::FromModelDir(model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::unique_ptr<text::ChatTemplate> chat_template;
  if (auto t = text::ChatTemplate::FromTokenizerConfig(model_dir + "/tokenizer_config.json"); t.ok()) {
    chat_template = std::move(*t);
  } else {
    LogWarning(absl::StrCat("no usable chat template (", t.status().message(),
                            "); Chat and ChatStream will be refused"));
  }
  ModelTextContext model{tokenizer->get(), chat_template.get(), &*config};

  ApiCallers callers;
  if (!absl::GetFlag(FLAGS_api_token_file).empty()) {
    auto text = ReadFile(absl::GetFlag(FLAGS_api_token_file), "--api-token-file");
    if (!text.ok()) return Fail(text.status());
    auto parsed = ApiCallers::Parse(*text, "--api-token-file " + absl::GetFlag(FLAGS_api_token_file));
    if (!parsed.ok()) return Fail(parsed.status());
    callers = *std::move(parsed);
  }
  auto registry_token =
      ReadTokenFile(absl::GetFlag(FLAGS_registry_token_file), "--registry-token-file");
  if (!registry_token.ok()) return Fail(registry_token.status());
  if (registry_token->empty()) {
    LogWarning("the worker registry is open (no --registry-token-file): anyone who can reach "
               "this port can register a replica and be sent prompts; set a token, or restrict "
               "who reaches the port");
  }

  auto metrics = RouterMetrics::Create(absl::GetFlag(FLAGS_metrics_listen));
  if (!metrics.ok()) return Fail(metrics.status());

  ReplicaOptions ro;
  ro.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  ro.scheduler.max_tokens_per_step = absl::GetFlag(FLAGS_max_tokens_per_step);
  ro.scheduler.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk_tokens);
  ro.scheduler.max_waiting_requests = absl::GetFlag(FLAGS_max_waiting_requests);
  ro.scheduler.max_waiting_tokens = absl::GetFlag(FLAGS_max_waiting_tokens);
  ro.scheduler.speculative_tokens = absl::GetFlag(FLAGS_speculative_tokens);
  ro.scheduler.speculative_max_running = absl::GetFlag(FLAGS_speculative_max_running);
  ro.scheduler.ngram.min_ngram = absl::GetFlag(FLAGS_speculative_ngram_min);
  ro.scheduler.ngram.max_ngram = absl::GetFlag(FLAGS_speculative_ngram_max);
  ro.step_timeout = absl::Seconds(absl::GetFlag(FLAGS_step_timeout));
  ro.heartbeat_timeout = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_timeout));
  ro.log_payloads = absl::GetFlag(FLAGS_log_payloads);
  ro.pipeline_depth = absl::GetFlag(FLAGS_pipeline_depth);
  ro.forget_after = absl::Seconds(absl::GetFlag(FLAGS_forget_replica_after));
  ro.max_registered = absl::GetFlag(FLAGS_max_registered_replicas);
  ro.max_failovers = absl::GetFlag(FLAGS_max_request_failovers);
  if (ro.max_failovers < 0) {
    return Fail(absl::InvalidArgumentError("--max-request-failovers must be >= 0"));
  }
  if (!(absl::GetFlag(FLAGS_forget_replica_after) > 0) || ro.max_registered < 1) {
    return Fail(absl::InvalidArgumentError(
        "--forget-replica-after must be > 0 and --max-registered-replicas >= 1"));
  }
  if (ro.pipeline_depth != 1 && ro.pipeline_depth != 2) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--pipeline-depth must be 1 or 2, got ", ro.pipeline_depth)));
  }
  if (ro.scheduler.speculative_tokens < 0 || ro.scheduler.speculative_tokens > 64 ||
      ro.scheduler.speculative_max_running < 1 || ro.scheduler.ngram.min_ngram < 1 ||
      ro.scheduler.ngram.max_ngram < ro.scheduler.ngram.min_ngram) {
    return Fail(absl::InvalidArgumentError(
        "speculative decoding needs 0 <= --speculative-tokens <= 64, --speculative-max-running "
        ">= 1 and 1 <= --speculative-ngram-min <= --speculative-ngram-max"));
  }
  if (ro.scheduler.max_tokens_per_step < ro.scheduler.max_num_seqs) {
    return Fail(absl::InvalidArgumentError(
        "--max-tokens-per-step must be >= --max-num-seqs (every running sequence decodes each step)"));
  }
  if (!absl::GetFlag(FLAGS_http_listen).empty() && !absl::GetFlag(FLAGS_tls_cert).empty() &&
      !absl::GetFlag(FLAGS_http_behind_tls_proxy)) {
    return Fail(absl::InvalidArgumentError(
        "--http-listen serves plain HTTP while --tls-cert encrypts the gRPC API: terminate TLS in "
        "front of the HTTP port (ingress, service mesh) and say so with --http-behind-tls-proxy, "
        "or leave --http-listen unset"));
  }
  auto replicas = std::make_unique<ReplicaSet>(ro, &model, metrics->get());
  for (const std::string& r : absl::GetFlag(FLAGS_replica)) {
    if (!r.empty()) replicas->Add(r);
  }

  ServiceOptions so;
  so.limits.max_stop_sequences = absl::GetFlag(FLAGS_max_stop_sequences);
  so.limits.max_stop_bytes = absl::GetFlag(FLAGS_max_stop_bytes);
  so.limits.max_prompt_bytes = absl::GetFlag(FLAGS_max_prompt_bytes);
  so.limits.default_max_new_tokens = absl::GetFlag(FLAGS_default_max_new_tokens);
  so.callers = callers;
  so.log_payloads = ro.log_payloads;
  std::unique_ptr<AuditLog> audit;
  if (!absl::GetFlag(FLAGS_audit_log).empty()) {
    auto opened = AuditLog::Open(absl::GetFlag(FLAGS_audit_log),
                                 absl::GetFlag(FLAGS_audit_log_payloads), model.tokenizer);
    if (!opened.ok()) return Fail(opened.status());
    audit = *std::move(opened);
    so.audit = audit.get();
  } else if (absl::GetFlag(FLAGS_audit_log_payloads)) {
    return Fail(absl::InvalidArgumentError("--audit-log-payloads needs --audit-log"));
  }
  // Drawn before serving: the audit reads it from every call's thread.
  const std::string http_front_secret = RandomHex(16);
  if (audit != nullptr && !absl::GetFlag(FLAGS_http_listen).empty()) {
    audit->TrustHttpFront(http_front_secret);
  }
  GenerationService generation(so, &model, replicas.get(), metrics->get());
  // The registry token as one caller; none: open (warned above).
  RegistryService registry(replicas.get(), registry_token->empty()
                                               ? ApiCallers()
                                               : ApiCallers::Single(*registry_token));

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    auto cert = ReadFile(absl::GetFlag(FLAGS_tls_cert), "--tls-cert");
    if (!cert.ok()) return Fail(cert.status());
    auto key = ReadFile(absl::GetFlag(FLAGS_tls_key), "--tls-key");
    if (!key.ok()) return Fail(key.status());
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, credentials, &port);
  builder.RegisterService(&generation);
  builder.RegisterService(&registry);
  grpc::ResourceQuota quota("caduceus-router");
  quota.SetMaxThreads(2048);  // unary calls use the sync API: one thread per call in flight
  builder.SetResourceQuota(quota);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot serve on ", listen)));
  }
  // Serving as soon as the API is up; GetModelInfo answers UNAVAILABLE until a replica is.
  server->GetHealthCheckService()->SetServingStatus(true);
  LogInfo(absl::StrCat("caduceus-router serving ", model_dir, " on ", listen,
                       callers.required()
                           ? absl::StrCat(" (bearer token required; ", callers.size(), " caller(s))")
                           : std::string(),
                       absl::GetFlag(FLAGS_tls_cert).empty() ? "" : " over TLS"));

  std::unique_ptr<http::HttpFront> http_front;
  if (!absl::GetFlag(FLAGS_http_listen).empty()) {
    http::HttpFrontOptions ho;
    ho.listen = absl::GetFlag(FLAGS_http_listen);
    ho.threads = absl::GetFlag(FLAGS_http_threads);
    ho.served_model_name = absl::GetFlag(FLAGS_served_model_name);
    ho.front_secret = http_front_secret;
    RouterMetrics* m = metrics->get();
    ho.on_call_start = [m] { m->HttpCallStarted(); };
    ho.on_call_end = [m](const std::string& endpoint, int status) {
      m->HttpCallFinished(endpoint, status);
    };
    if (ho.served_model_name.empty()) ho.served_model_name = model::ModelDirName(model_dir);
    // A prompt of --max-prompt-bytes can grow by JSON escaping (up to 6 bytes for one).
    ho.max_body_bytes = 6 * static_cast<int64_t>(so.limits.max_prompt_bytes) + (1 << 20);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    auto front = http::HttpFront::Start(ho, server->InProcessChannel(args), model.tokenizer);
    if (!front.ok()) {
      server->Shutdown();
      return Fail(front.status());
    }
    http_front = *std::move(front);
    LogInfo(absl::StrCat("OpenAI-compatible HTTP API on ", ho.listen, " (model '",
                         ho.served_model_name, "')"));
  }

  int sig = 0;
  sigwait(&stop_signals, &sig);
  LogInfo(absl::StrCat("signal ", sig, ": draining (up to ", absl::GetFlag(FLAGS_drain_timeout), " s)"));
  server->GetHealthCheckService()->SetServingStatus(false);
  generation.StartDraining();
  const auto drain_deadline = std::chrono::steady_clock::now() +
                              std::chrono::duration<double>(absl::GetFlag(FLAGS_drain_timeout));
  while (generation.in_flight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (generation.in_flight() > 0) {
    LogWarning(absl::StrCat(generation.in_flight(), " requests still running at the drain timeout"));
  }
  replicas.reset();  // fails anything left with UNAVAILABLE, stops the loops
  http_front.reset();  // its calls ended with the replicas
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  LogInfo("drained; exiting");
  return 0;
}

}  // namespace
}  // namespace caduceus::router

int main(int argc, char** argv) { return caduceus::router::Main(argc, argv); }
