// caduceus-bench: load generator for the router's public API.
//
//   caduceus-bench --router HOST:PORT --concurrency N --requests M [--rate R] [--prompt-len L]
//       [--prompt-len-jitter J] [--output-len O] [--temperature T] [--seed S] [--json]
//
// Sends M GenerateStream requests with at most N in flight. Without --rate the next request is
// sent as soon as one ends (closed loop); with --rate requests arrive as a Poisson process of R/s
// (open loop), still capped at N in flight. The streams are asynchronous (no thread per
// stream). Prompts are random token ids (seeded), every request generates exactly O tokens
// (ignore_eos), greedy unless --temperature. Reports TTFT, inter-token latency, end-to-end latency percentiles and
// throughput; --json prints one JSON object as the last stdout line. Exit 1 when no request
// succeeded, 2 on usage errors.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "common/cli_flags.h"
#include "common/mutex_debug.h"
#include "tools/bench/bench_report.h"
#include "tools/bench/stream_probe.h"
#include "tools/bench/workload.h"
#include "tools/cli/grpc_status.h"
#include "tools/cli/router_connection.h"

ABSL_FLAG(std::string, router, "", "router address HOST:PORT");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificate: connect with TLS (default: plaintext)");
ABSL_FLAG(std::string, api_token_file, "", "file holding the API bearer token");
ABSL_FLAG(int32_t, concurrency, 1, "most requests in flight at once");
ABSL_FLAG(int64_t, requests, 100, "requests to send in total");
ABSL_FLAG(std::optional<double>, rate, std::nullopt,
          "Poisson arrival rate in requests/s (open loop); unset: closed loop");
ABSL_FLAG(int32_t, prompt_len, 128, "prompt length in tokens");
ABSL_FLAG(int32_t, prompt_len_jitter, 0, "prompt lengths vary uniformly by +- this many tokens");
ABSL_FLAG(int32_t, output_len, 128, "tokens generated per request (max_new_tokens, ignore_eos)");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature (0 = greedy)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the prompts, arrival times and sampling");
ABSL_FLAG(double, timeout, 600, "per-request deadline in seconds (0 = none)");
ABSL_FLAG(bool, json, false, "print one JSON object as the last stdout line");

namespace caduceus::tools {
namespace {

constexpr char kUsage[] =
    "caduceus-bench --router HOST:PORT --concurrency N --requests M [--rate R] [--prompt-len L] "
    "[--output-len O] [--json]";

int UsageError(const std::string& message) {
  std::fprintf(stderr, "error: INVALID_ARGUMENT: %s\nusage: %s\n", message.c_str(), kUsage);
  return 2;
}

caduceus::v1::GenerateRequest MakeRequest(const BenchSetup& setup, int64_t index) {
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  caduceus::v1::GenerateRequest request;
  request.set_request_id("bench-" + std::to_string(index));
  const std::vector<int32_t> ids =
      RandomPromptIds(seed, static_cast<uint64_t>(index), setup.prompt_len, setup.prompt_len_jitter);
  request.mutable_prompt_ids()->Add(ids.begin(), ids.end());
  caduceus::v1::GenerationParameters& params = *request.mutable_params();
  params.set_max_new_tokens(static_cast<uint32_t>(setup.output_len));
  params.set_ignore_eos(true);  // every request costs the same number of decode steps
  params.mutable_sampling()->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  params.mutable_sampling()->set_seed(seed + static_cast<uint64_t>(index));
  return request;
}

int Main() {
  BenchSetup setup;
  setup.requests = absl::GetFlag(FLAGS_requests);
  setup.concurrency = absl::GetFlag(FLAGS_concurrency);
  setup.rate = absl::GetFlag(FLAGS_rate);
  setup.prompt_len = absl::GetFlag(FLAGS_prompt_len);
  setup.prompt_len_jitter = absl::GetFlag(FLAGS_prompt_len_jitter);
  setup.output_len = absl::GetFlag(FLAGS_output_len);
  if (absl::GetFlag(FLAGS_router).empty()) return UsageError("--router HOST:PORT is required");
  if (setup.requests < 1) return UsageError("--requests must be >= 1");
  if (setup.concurrency < 1) return UsageError("--concurrency must be >= 1");
  if (setup.rate && !(*setup.rate > 0)) return UsageError("--rate must be > 0");
  if (setup.prompt_len < 1) return UsageError("--prompt-len must be >= 1");
  if (setup.prompt_len_jitter < 0) return UsageError("--prompt-len-jitter must be >= 0");
  if (setup.output_len < 1) return UsageError("--output-len must be >= 1");
  if (absl::GetFlag(FLAGS_timeout) < 0) return UsageError("--timeout must be >= 0");

  auto connection = RouterConnection::Open({absl::GetFlag(FLAGS_router), absl::GetFlag(FLAGS_tls_ca),
                                            absl::GetFlag(FLAGS_api_token_file)});
  if (!connection.ok()) {
    std::fprintf(stderr, "error: %s: %s\n", StatusCodeName(connection.status().code()).c_str(),
                 std::string(connection.status().message()).c_str());
    return 1;
  }
  auto stub = caduceus::v1::Generation::NewStub(connection->channel());
  const std::chrono::duration<double> timeout(absl::GetFlag(FLAGS_timeout));

  // Built up front so that building them does not delay the sends it should not delay.
  std::vector<caduceus::v1::GenerateRequest> requests;
  requests.reserve(static_cast<size_t>(setup.requests));
  for (int64_t i = 0; i < setup.requests; ++i) requests.push_back(MakeRequest(setup, i));
  const std::vector<double> arrivals =
      setup.rate ? PoissonArrivalTimes(absl::GetFlag(FLAGS_seed), setup.requests, *setup.rate)
                 : std::vector<double>();

  // Requests go out in order, each once a slot is free (and, in open loop, at its arrival time;
  // when all N slots are busy, arrivals queue here, as they would at a saturated client).
  std::vector<RequestResult> results(requests.size());
  std::mutex mu;
  std::condition_variable slot_freed;
  int64_t in_flight = 0, finished = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < setup.requests; ++i) {
    if (!arrivals.empty()) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(arrivals[i])));
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      slot_freed.wait(lock, [&] { return in_flight < setup.concurrency; });
      ++in_flight;
    }
    StartStreamingRequest(*stub, *connection, requests[i], timeout, [&, i](RequestResult r) {
      results[i] = std::move(r);
      std::lock_guard<std::mutex> lock(mu);
      --in_flight;
      ++finished;
      slot_freed.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    slot_freed.wait(lock, [&] { return finished == setup.requests; });
  }
  const double duration_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const nlohmann::json report = BenchReportJson(setup, results, duration_s);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", report.dump().c_str());
  } else {
    std::printf("%s", BenchReportTable(report).c_str());
  }
  // Show why requests failed: the first message of each failing code.
  for (const auto& [code, count] : report["errors"].items()) {
    for (const RequestResult& r : results) {
      if (!r.status.ok() && StatusCodeName(r.status.code()) == code) {
        std::fprintf(stderr, "%s x%lld, e.g.: %s\n", code.c_str(),
                     static_cast<long long>(count.get<int64_t>()),
                     std::string(r.status.message()).c_str());
        break;
      }
    }
  }
  return report["completed"].get<int64_t>() > 0 ? 0 : 1;
}

}  // namespace
}  // namespace caduceus::tools

int main(int argc, char** argv) {
  // absl's --help lists only flags defined in <program>.cc; ours live in tools/bench/main.cc.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "tools/bench/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<std::string> positional = caduceus::ParseFlags(argc, argv, caduceus::tools::kUsage);
  caduceus::DisableMutexDeadlockDetection();
  if (positional.size() > 1) {
    return caduceus::tools::UsageError("unexpected argument '" + positional[1] + "'");
  }
  return caduceus::tools::Main();
}
