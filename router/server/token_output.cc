#include "router/server/token_output.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace caduceus::router {

namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

bool EmitToken(ActiveRequest& request, const TokenView& result, const model::ModelConfig& config,
               RouterMetrics* metrics) {
  ActiveRequest::Progress& p = request.progress();
  const RequestSpec& spec = request.spec();
  const absl::Time now = absl::Now();
  const int32_t token = result.token_id;
  p.generated.push_back(token);
  if (!p.first_token) {
    p.first_token = now;
    metrics->ObserveTimeToFirstToken(Seconds(now - request.arrival()));
  } else {
    metrics->ObserveInterTokenLatency(Seconds(now - *p.last_token));
  }
  p.last_token = now;
  metrics->AddGenerationTokens(1);

  v1::GenerateStreamResponse message;
  message.set_request_id(spec.request_id);
  if (!p.sent_prompt_ids) {
    message.mutable_prompt_token_ids()->Add(spec.prompt_ids.begin(), spec.prompt_ids.end());
    p.sent_prompt_ids = true;
  }
  message.add_token_ids(token);
  if (spec.logprobs) {
    v1::GeneratedTokenLogprobs* lp = message.add_logprobs();
    lp->set_token_id(token);
    lp->set_logprob(result.logprob);
    for (const worker::v1::TokenLogprob& t : *result.top_logprobs) {
      v1::TokenLogprob* out = lp->add_top_logprobs();
      out->set_token_id(t.token_id());
      out->set_logprob(t.logprob());
    }
  }
  // ignore_eos skips the model's EOS tokens only; the request's own stop_token_ids still stop it.
  const bool stop_token =
      (!spec.ignore_eos && config.IsEos(token)) ||
      std::find(spec.stop_token_ids.begin(), spec.stop_token_ids.end(), token) !=
          spec.stop_token_ids.end();
  absl::StatusOr<std::string> piece = request.detokenizer().Push(token);
  if (!piece.ok()) {  // the worker sampled an id outside the tokenizer: a model/tokenizer mismatch
    request.Fail(absl::InternalError(absl::StrCat("detokenizer: ", piece.status().message())));
    metrics->RequestFinished("internal");
    return true;
  }
  text::StopMatcher::Result stop = request.stops().Push(*piece);
  std::string text = std::move(stop.emit);
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  if (stop_token) {
    reason = v1::FINISH_REASON_STOP_TOKEN;
  } else if (stop.stopped) {
    reason = v1::FINISH_REASON_STOP_SEQUENCE;
  } else if (static_cast<int32_t>(p.generated.size()) >= spec.max_new_tokens) {
    reason = v1::FINISH_REASON_LENGTH;
  }
  if (reason != v1::FINISH_REASON_UNSPECIFIED && reason != v1::FINISH_REASON_STOP_SEQUENCE) {
    text += request.stops().Push(request.detokenizer().Flush()).emit;
    text += request.stops().Flush();
  }
  message.set_text_delta(std::move(text));
  const bool finished = reason != v1::FINISH_REASON_UNSPECIFIED;
  if (finished) {
    message.set_finish_reason(reason);
    v1::Usage* usage = message.mutable_usage();
    usage->set_prompt_tokens(static_cast<uint32_t>(spec.prompt_ids.size()));
    usage->set_generated_tokens(static_cast<uint32_t>(p.generated.size()));
    usage->set_cached_prompt_tokens(static_cast<uint32_t>(p.cached_prompt_tokens));
    v1::Timing* timing = message.mutable_timing();
    timing->set_queue_seconds(Seconds(p.first_scheduled.value_or(now) - request.arrival()));
    timing->set_time_to_first_token_seconds(Seconds(*p.first_token - request.arrival()));
    timing->set_total_seconds(Seconds(now - request.arrival()));
    metrics->ObserveRequestDuration(timing->total_seconds());
    metrics->RequestFinished("ok");
  }
  request.Push(std::move(message), finished);
  return finished;
}

}  // namespace caduceus::router
