#include "tools/bench/bench_report.h"

#include <map>

#include "absl/strings/str_format.h"
#include "tools/bench/bench_stats.h"
#include "tools/cli/grpc_status.h"

namespace caduceus::tools {

namespace {

nlohmann::json SummaryJson(std::vector<double> samples) {
  auto s = Summarize(std::move(samples));
  if (!s) return {{"p50", nullptr}, {"p90", nullptr}, {"p99", nullptr}, {"mean", nullptr}};
  return {{"p50", s->p50}, {"p90", s->p90}, {"p99", s->p99}, {"mean", s->mean}};
}

std::string Millis(const nlohmann::json& v) {
  return v.is_number() ? absl::StrFormat("%10.1f", v.get<double>() * 1e3) : absl::StrFormat("%10s", "-");
}

}  // namespace

nlohmann::json BenchReportJson(const BenchSetup& setup, const std::vector<RequestResult>& results,
                               double duration_s) {
  std::vector<double> ttft, itl, latency;
  std::map<std::string, int64_t> errors;
  int64_t completed = 0, output_tokens = 0;
  for (const RequestResult& r : results) {
    if (!r.status.ok()) {
      ++errors[StatusCodeName(r.status.code())];
      continue;
    }
    ++completed;
    output_tokens += r.output_tokens;
    if (r.got_token) ttft.push_back(r.ttft_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    latency.push_back(r.latency_s);
  }
  const double per_s = duration_s > 0 ? 1.0 / duration_s : 0.0;
  nlohmann::json report;
  report["requests"] = setup.requests;
  report["concurrency"] = setup.concurrency;
  report["rate"] = setup.rate ? nlohmann::json(*setup.rate) : nlohmann::json(nullptr);
  report["prompt_len"] = setup.prompt_len;
  report["prompt_len_jitter"] = setup.prompt_len_jitter;
  report["output_len"] = setup.output_len;
  report["duration_s"] = duration_s;
  report["completed"] = completed;
  report["errors"] = errors;  // {} when none
  report["output_tokens"] = output_tokens;
  report["throughput"] = {{"requests_per_s", completed * per_s},
                          {"output_tokens_per_s", output_tokens * per_s}};
  report["ttft_s"] = SummaryJson(std::move(ttft));
  report["itl_s"] = SummaryJson(std::move(itl));
  report["latency_s"] = SummaryJson(std::move(latency));
  return report;
}

std::string BenchReportTable(const nlohmann::json& r) {
  std::string out = absl::StrFormat(
      "requests %d  concurrency %d  rate %s  prompt %d tokens  output %d tokens\n",
      r["requests"].get<int64_t>(), r["concurrency"].get<int32_t>(),
      r["rate"].is_null() ? std::string("unlimited") : absl::StrFormat("%g/s", r["rate"].get<double>()),
      r["prompt_len"].get<int32_t>(), r["output_len"].get<int32_t>());
  out += absl::StrFormat("duration %.2f s  completed %d", r["duration_s"].get<double>(),
                         r["completed"].get<int64_t>());
  if (r["errors"].empty()) {
    out += "  errors none\n";
  } else {
    for (const auto& [code, n] : r["errors"].items()) {
      out += absl::StrFormat("  %s %d", code, n.get<int64_t>());
    }
    out += "\n";
  }
  out += absl::StrFormat("throughput %.2f requests/s  %.1f output tokens/s\n\n",
                         r["throughput"]["requests_per_s"].get<double>(),
                         r["throughput"]["output_tokens_per_s"].get<double>());
  out += absl::StrFormat("%-14s%10s%10s%10s%10s\n", "(ms)", "p50", "p90", "p99", "mean");
  for (const char* metric : {"ttft_s", "itl_s", "latency_s"}) {
    const nlohmann::json& m = r[metric];
    std::string name(metric);
    out += absl::StrFormat("%-14s%s%s%s%s\n", name.substr(0, name.size() - 2), Millis(m["p50"]),
                           Millis(m["p90"]), Millis(m["p99"]), Millis(m["mean"]));
  }
  return out;
}

}  // namespace caduceus::tools
