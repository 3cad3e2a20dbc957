// The translation between the scheduler and the worker protocol for one replica: a scheduled
// step becomes a StepPlan (sampling parameters on first steps, scored rows, guesses), and a
// StepResult's tokens go to the scheduler and to each request's output (accepted guesses first).
// Split from replica.cc, which runs the loop, health and connection of the replica.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "router/server/replica.h"
#include "router/server/score_rows.h"
#include "router/server/token_output.h"

namespace caduceus::router {

namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

worker::v1::StepPlan Replica::BuildPlan(const ScheduledStep& step) {
  worker::v1::StepPlan plan;
  plan.set_step_id(next_step_id_++);
  // Sent while earlier steps are in flight, it was planned on their outcome: the worker must run
  // it right after the last of them, even if the calls reach it in another order.
  if (!in_flight_.empty()) plan.set_previous_step_id(plan.step_id() - 1);
  const absl::Time now = absl::Now();
  for (const StepEntry& e : step.entries) {
    ActiveRequest& request = *requests_.at(e.seq_id);
    ActiveRequest::Progress& p = request.progress();
    if (!p.first_scheduled) {
      p.first_scheduled = now;
      p.cached_prompt_tokens = e.start_pos;
      metrics_->ObserveQueueTime(Seconds(now - request.arrival()));
    } else if (p.recount_cached && e.first_step) {
      p.cached_prompt_tokens = std::min(e.start_pos, e.prompt_len);
      p.recount_cached = false;
    }
    worker::v1::SequencePlan* s = plan.add_sequences();
    s->set_sequence_id(e.seq_id);
    s->mutable_token_ids()->Add(e.tokens.begin(), e.tokens.end());
    s->set_start_pos(e.start_pos);
    s->mutable_block_table()->Add(e.block_table.begin(), e.block_table.end());
    s->set_sample(e.sample);
    s->set_prompt_len(e.prompt_len);
    // What the worker samples with: the request's parameters, without the logprob unless asked.
    sampling::SamplingParams sp = request.spec().sampling;
    sp.skip_logprob = !request.spec().logprobs;
    const ScoredRows scored = RowsToScore(e, request.spec());
    if (scored.first < scored.end) {
      s->set_score_from(scored.first - e.start_pos);
      for (int32_t pos = scored.first; pos < scored.end; ++pos) {
        s->add_score_targets(request.spec().prompt_ids[static_cast<size_t>(pos) + 1]);
      }
    }
    // A greedy token without logprobs comes from the lm_head's argmax: no logits row is made.
    // With guesses: the argmax of every guessed row, verified against them.
    s->set_argmax_only(e.sample && sp.ArgmaxSuffices() && scored.first >= scored.end);
    s->set_draft_tokens(e.draft_tokens);
    if (e.first_step) {
      s->set_first_step(true);
      s->mutable_prefix_ids()->Add(e.prefix_ids.begin(), e.prefix_ids.end());
      worker::v1::SamplingParams* out = s->mutable_sampling();
      out->set_temperature(sp.temperature);
      out->set_top_k(sp.top_k);
      out->set_top_p(sp.top_p);
      out->set_min_p(sp.min_p);
      out->set_repetition_penalty(sp.repetition_penalty);
      out->set_frequency_penalty(sp.frequency_penalty);
      out->set_presence_penalty(sp.presence_penalty);
      out->set_seed(sp.seed);
      out->set_top_logprobs(sp.top_logprobs);
      out->set_skip_logprob(sp.skip_logprob);
      for (const auto& [token, bias] : sp.logit_bias) {
        worker::v1::TokenBias* b = out->add_logit_bias();
        b->set_token_id(token);
        b->set_bias(bias);
      }
    }
  }
  return plan;
}

std::vector<uint64_t> Replica::ApplyResult(const ScheduledStep& step,
                                           const worker::v1::StepResult& result) {
  std::vector<uint64_t> release;
  for (size_t i = 0; i < step.entries.size(); ++i) {
    const StepEntry& e = step.entries[i];
    auto it = requests_.find(e.seq_id);
    if (it == requests_.end()) continue;
    const bool has_result = static_cast<int>(i) < result.results_size() &&
                            result.results(i).sequence_id() == e.seq_id;
    if (has_result) RecordScores(e, result.results(i), *it->second);
    if (!e.sample) continue;
    const bool answered = has_result && result.results(i).sampled();
    if (!answered) {
      // A sequence that asked for a token and got none would wait forever: fail it.
      DropRequest(e.seq_id, absl::InternalError("the worker returned no token for this request"),
                  &release);
      continue;
    }
    const worker::v1::SequenceResult& r = result.results(i);
    // Accepted guesses (speculative decoding), then the sampled token; a worker reporting more
    // guesses than it was sent is broken, and the request fails rather than emit made-up text.
    const int accepted = r.accepted_drafts_size();
    std::vector<int32_t> tokens;
    tokens.reserve(static_cast<size_t>(accepted) + 1);
    for (const worker::v1::SampledToken& a : r.accepted_drafts()) tokens.push_back(a.token_id());
    tokens.push_back(r.token_id());
    if (absl::Status s = scheduler_->OnSampled(r.sequence_id(), tokens); !s.ok()) {
      DropRequest(e.seq_id, absl::InternalError(absl::StrCat("the worker's answer: ", s.message())),
                  &release);
      continue;
    }
    if (e.draft_tokens > 0) metrics_->AddDraftTokens(e.draft_tokens, accepted);
    // Emitted one by one: a stop (token, string, length) among them ends the request there.
    bool finished = false;
    for (int t = 0; t <= accepted && !finished; ++t) {
      finished = EmitToken(*it->second,
                           t < accepted ? TokenView::Of(r.accepted_drafts(t)) : TokenView::Of(r),
                           *model_->config, metrics_);
    }
    if (finished) {
      scheduler_->Finish(r.sequence_id()).IgnoreError();
      release.push_back(r.sequence_id());
      requests_.erase(it);
    }
  }
  return release;
}

}  // namespace caduceus::router
