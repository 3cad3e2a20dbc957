#include "router/server/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "router/http/forwarded_caller.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::router {

void FoldMessage(const v1::GenerateStreamResponse& m, v1::GenerateResponse* r, bool with_text) {
  r->set_request_id(m.request_id());
  if (with_text) r->mutable_text()->append(m.text_delta());
  r->mutable_token_ids()->MergeFrom(m.token_ids());
  r->mutable_prompt_token_ids()->MergeFrom(m.prompt_token_ids());
  if (with_text) r->mutable_logprobs()->MergeFrom(m.logprobs());
  if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    r->set_finish_reason(m.finish_reason());
    *r->mutable_usage() = m.usage();
    *r->mutable_timing() = m.timing();
  }
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path, bool payloads,
                                                         const text::Tokenizer* tokenizer) {
  if (path == "-") return std::unique_ptr<AuditLog>(new AuditLog(stdout, false, payloads, tokenizer));
  // 0600: the records name callers and, with payloads, hold patient data.
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  FILE* f = fd < 0 ? nullptr : fdopen(fd, "a");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--audit-log ", path, ": cannot open for appending: ", std::strerror(errno)));
  }
  return std::unique_ptr<AuditLog>(new AuditLog(f, true, payloads, tokenizer));
}

AuditLog::~AuditLog() {
  if (owned_) std::fclose(out_);
}

namespace {

std::string FinishReasonName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_UNSPECIFIED: return "";
    default: {
      // FINISH_REASON_LENGTH -> "length"
      std::string name = v1::FinishReason_Name(r);
      constexpr std::string_view kPrefix = "FINISH_REASON_";
      if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
      return absl::AsciiStrToLower(name);
    }
  }
}

nlohmann::ordered_json Params(const RequestSpec& spec) {
  const sampling::SamplingParams& s = spec.sampling;
  return {{"max_new_tokens", spec.max_new_tokens},
          {"temperature", s.temperature},
          {"top_p", s.top_p},
          {"top_k", s.top_k},
          {"min_p", s.min_p},
          {"repetition_penalty", s.repetition_penalty},
          {"frequency_penalty", s.frequency_penalty},
          {"presence_penalty", s.presence_penalty},
          {"seed", s.seed},
          {"top_logprobs", s.top_logprobs},
          {"logit_bias_tokens", s.logit_bias.size()},
          {"logprobs", spec.logprobs},
          {"ignore_eos", spec.ignore_eos},
          {"stop_sequences", spec.stop.size()},
          {"stop_token_ids", spec.stop_token_ids.size()},
          {"priority", spec.priority}};
}

}  // namespace

void AuditLog::Record(const grpc::ServerContextBase& context, const CallRequest& request,
                      const CallOutcome& outcome, const ApiCaller* caller) {
  const absl::Time now = absl::Now();
  nlohmann::ordered_json j;
  j["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone());
  j["method"] = request.method;
  j["request_id"] = request.spec != nullptr ? request.spec->request_id : "";
  const auto& md = context.client_metadata();
  auto meta = [&md](const char* key) {
    auto it = md.find(key);
    // Callers' strings go through SanitizeUtf8: the line must stay valid JSON whatever they send.
    return it == md.end() ? std::string()
                          : text::SanitizeUtf8(std::string_view(it->second.data(), it->second.size()));
  };
  const bool via_http = !http_front_secret_.empty() && meta(http::kFrontSecretKey) == http_front_secret_;
  j["caller"] = {{"api", via_http ? "http" : "grpc"},
                 {"peer", via_http ? meta(http::kPeerKey) : context.peer()},
                 {"user_agent", meta(via_http ? http::kUserAgentKey : "user-agent")},
                 {"name", caller != nullptr ? caller->name : ""},
                 {"api_token_checked", caller != nullptr}};
  j["status"] = absl::StatusCodeToString(static_cast<absl::StatusCode>(outcome.status.error_code()));
  if (!outcome.status.ok()) j["error"] = text::SanitizeUtf8(outcome.status.error_message());
  j["model"] = {{"id", request.model_id}, {"revision", request.revision}, {"replica", request.replica}};
  static const v1::GenerateResponse kNothing;
  const v1::GenerateResponse& r = outcome.response != nullptr ? *outcome.response : kNothing;
  if (request.spec != nullptr) j["params"] = Params(*request.spec);
  if (request.prompt_ids != nullptr) j["prompt_tokens"] = request.prompt_ids->size();
  j["generated_tokens"] = r.token_ids_size();
  if (r.has_usage()) j["cached_prompt_tokens"] = r.usage().cached_prompt_tokens();
  j["finish_reason"] = FinishReasonName(r.finish_reason());
  if (r.has_timing()) {
    j["time_to_first_token_seconds"] = r.timing().time_to_first_token_seconds();
  }
  if (request.arrival != absl::InfinitePast()) {
    j["duration_seconds"] = absl::ToDoubleSeconds(now - request.arrival);
  }
  if (payloads_ && request.prompt_ids != nullptr) {
    absl::StatusOr<std::string> prompt = tokenizer_->Decode(*request.prompt_ids);
    j["prompt"] = prompt.ok() ? text::SanitizeUtf8(*prompt) : "";
    if (request.spec != nullptr) j["output"] = text::SanitizeUtf8(r.text());
  }
  const std::string line = j.dump() + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace caduceus::router
