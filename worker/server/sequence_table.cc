#include "worker/server/sequence_table.h"

#include <cmath>
#include <span>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::worker {

sampling::SamplingParams FromProto(const v1::SamplingParams& p) {
  sampling::SamplingParams s;
  s.temperature = p.temperature();
  s.top_k = p.top_k();
  s.top_p = p.top_p();
  s.min_p = p.min_p();
  s.repetition_penalty = p.repetition_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.presence_penalty = p.presence_penalty();
  s.seed = p.seed();
  s.top_logprobs = p.top_logprobs();
  s.skip_logprob = p.skip_logprob();
  s.logit_bias.reserve(p.logit_bias_size());
  for (const v1::TokenBias& b : p.logit_bias()) s.logit_bias.emplace_back(b.token_id(), b.bias());
  return s;
}

model::StepBatch BatchFromPlan(const v1::StepPlan& plan) {
  model::StepBatch batch;
  batch.sequences.reserve(plan.sequences_size());
  for (const v1::SequencePlan& s : plan.sequences()) {
    // A scored sequence needs the logits of its scored rows (and of its last, to sample); one
    // with draft tokens those of its last known token and of every guess.
    const bool scored = s.score_targets_size() > 0;
    const bool drafted = s.draft_tokens() > 0;
    const int32_t logits_from =
        scored ? s.score_from() : drafted ? s.token_ids_size() - s.draft_tokens() - 1 : 0;
    batch.sequences.push_back(model::SequenceStep{
        std::span<const int32_t>(s.token_ids().data(), s.token_ids_size()), s.start_pos(),
        std::span<const int32_t>(s.block_table().data(), s.block_table_size()),
        /*all_logits=*/scored || drafted,
        /*argmax_only=*/!scored && s.argmax_only() && s.sample(), logits_from});
  }
  return batch;
}

namespace {

absl::Status Invalid(uint64_t id, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("sequence ", id, ": ", what));
}

absl::Status CheckIds(uint64_t id, const char* field,
                      const google::protobuf::RepeatedField<int32_t>& ids, int32_t limit) {
  for (int32_t t : ids) {
    if (t < 0 || t >= limit) {
      return Invalid(id, absl::StrCat(field, " ", t, " out of range [0, ", limit, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckScoring(const v1::SequencePlan& s, int32_t vocab_size) {
  if (s.score_targets_size() == 0) return absl::OkStatus();
  if (s.return_logits()) return Invalid(s.sequence_id(), "score_targets and return_logits conflict");
  if (s.score_from() < 0 || s.score_from() + s.score_targets_size() > s.token_ids_size()) {
    return Invalid(s.sequence_id(),
                   absl::StrCat("score_from ", s.score_from(), " with ", s.score_targets_size(),
                                " score_targets does not fit the ", s.token_ids_size(), " new tokens"));
  }
  return CheckIds(s.sequence_id(), "score target", s.score_targets(), vocab_size);
}

// Draft tokens (speculative decoding) are verified by sampling at every row before them.
absl::Status CheckDrafts(const v1::SequencePlan& s) {
  if (s.draft_tokens() == 0) return absl::OkStatus();
  const uint64_t id = s.sequence_id();
  if (s.draft_tokens() < 0) return Invalid(id, absl::StrCat("negative draft_tokens ", s.draft_tokens()));
  if (s.draft_tokens() >= s.token_ids_size()) {
    return Invalid(id, absl::StrCat(s.draft_tokens(), " draft tokens leave none of the ",
                                    s.token_ids_size(), " new tokens known"));
  }
  if (!s.sample()) return Invalid(id, "draft tokens without sample");
  if (s.score_targets_size() > 0) return Invalid(id, "draft tokens and score_targets conflict");
  if (s.return_logits()) return Invalid(id, "draft tokens and return_logits conflict");
  return absl::OkStatus();
}

// The log-softmax of `row` at `target` (in double: a 128k-entry sum), and the row's argmax.
v1::TargetScore ScoreRow(std::span<const float> row, int32_t target) {
  int32_t best = 0;
  for (int32_t v = 1; v < static_cast<int32_t>(row.size()); ++v) {
    if (row[v] > row[best]) best = v;
  }
  const double max = row[best];
  double sum = 0;
  for (float x : row) sum += std::exp(static_cast<double>(x) - max);
  v1::TargetScore score;
  score.set_logprob(static_cast<float>(static_cast<double>(row[target]) - max - std::log(sum)));
  score.set_greedy_token_id(best);
  return score;
}

// argmax_only drops the logits row, so it is refused where the row is needed.
absl::Status CheckArgmaxOnly(const v1::SequencePlan& s, const sampling::SamplingParams& params) {
  if (!s.argmax_only() || s.score_targets_size() > 0) return absl::OkStatus();
  if (s.return_logits()) return Invalid(s.sequence_id(), "argmax_only and return_logits conflict");
  if (!params.ArgmaxSuffices()) {
    return Invalid(s.sequence_id(),
                   "argmax_only, but its sampling needs the logits row (it is not greedy, has "
                   "penalties, or reports logprobs)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SequenceTable::ResolveSampledTokens(v1::StepPlan* plan) const {
  for (v1::SequencePlan& s : *plan->mutable_sequences()) {
    if (s.token_ids_size() != 1 || s.token_ids(0) != kSampledToken) continue;
    auto it = sequences_.find(s.sequence_id());
    const int64_t pos = s.start_pos();
    // The previous step sampled position ids.size() (and nothing has been fed since).
    if (s.first_step() || it == sequences_.end() ||
        static_cast<int64_t>(it->second.ids.size()) != pos ||
        it->second.accepted_until != pos + 1 || it->second.last_sampled < 0) {
      return Invalid(s.sequence_id(),
                     absl::StrCat("token ", kSampledToken, " (the sampled-token placeholder) at "
                                  "position ", pos, ", but the worker sampled no token there in "
                                  "its previous step"));
    }
    s.set_token_ids(0, it->second.last_sampled);
  }
  return absl::OkStatus();
}

absl::Status SequenceTable::Validate(const v1::StepPlan& plan) const {
  if (plan.sequences_size() == 0) {
    return absl::InvalidArgumentError("step plan has no sequences");
  }
  if (plan.sequences_size() > limits_.max_step_sequences) {
    return absl::InvalidArgumentError(
        absl::StrCat("step plan has ", plan.sequences_size(), " sequences; this worker accepts at most ",
                     limits_.max_step_sequences, " per step (max_step_sequences in Info)"));
  }
  int64_t total_tokens = 0;
  absl::flat_hash_set<uint64_t> seen;
  for (const v1::SequencePlan& s : plan.sequences()) {
    const uint64_t id = s.sequence_id();
    if (!seen.insert(id).second) return Invalid(id, "appears twice in the step plan");
    const int64_t n = s.token_ids_size();
    if (n == 0) return Invalid(id, "no new tokens");
    total_tokens += n;
    if (s.start_pos() < 0) return Invalid(id, absl::StrCat("negative start_pos ", s.start_pos()));
    const int64_t end = s.start_pos() + n;
    if (end > limits_.max_context) {
      return Invalid(id, absl::StrCat("positions up to ", end, " exceed the model's context of ",
                                      limits_.max_context, " tokens"));
    }
    RETURN_IF_ERROR(CheckIds(id, "token id", s.token_ids(), limits_.vocab_size));
    RETURN_IF_ERROR(CheckIds(id, "block id", s.block_table(), limits_.num_kv_blocks));
    const int64_t blocks_needed = (end + limits_.block_size - 1) / limits_.block_size;
    if (s.block_table_size() < blocks_needed) {
      return Invalid(id, absl::StrCat("block table has ", s.block_table_size(),
                                      " blocks; positions [0, ", end, ") need ", blocks_needed));
    }
    if (s.prompt_len() < 1) return Invalid(id, "prompt_len must be >= 1");
    RETURN_IF_ERROR(CheckScoring(s, limits_.vocab_size));
    RETURN_IF_ERROR(CheckDrafts(s));
    // Draft tokens are generated tokens: the known ones must complete the prompt.
    const int64_t known_end = end - s.draft_tokens();
    if (s.sample() && known_end < s.prompt_len()) {
      return Invalid(id, absl::StrCat("sample set at position ", known_end, " before the prompt (",
                                      s.prompt_len(), " tokens) is complete"));
    }
    if (s.first_step()) {
      if (s.prefix_ids_size() != s.start_pos()) {
        return Invalid(id, absl::StrCat("first step: prefix_ids has ", s.prefix_ids_size(),
                                        " ids but start_pos is ", s.start_pos()));
      }
      RETURN_IF_ERROR(CheckIds(id, "prefix id", s.prefix_ids(), limits_.vocab_size));
      if (absl::Status st = FromProto(s.sampling()).Validate(); !st.ok()) {
        return Invalid(id, std::string(st.message()));
      }
      RETURN_IF_ERROR(CheckArgmaxOnly(s, FromProto(s.sampling())));
    } else {
      auto it = sequences_.find(id);
      if (it == sequences_.end()) {
        return Invalid(id, "unknown sequence (its first step must set first_step and sampling "
                           "parameters; it may have been released)");
      }
      if (s.start_pos() != static_cast<int64_t>(it->second.ids.size())) {
        return Invalid(id, absl::StrCat("start_pos ", s.start_pos(), " but the worker has ",
                                        it->second.ids.size(), " tokens of it"));
      }
      RETURN_IF_ERROR(CheckArgmaxOnly(s, it->second.params));
    }
  }
  if (total_tokens > limits_.max_step_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("step plan has ", total_tokens, " new tokens; this worker accepts at most ",
                     limits_.max_step_tokens, " per step (max_step_tokens in Info)"));
  }
  return absl::OkStatus();
}

namespace {

// The logits row to sample from: the last new token's (its only row, or the last of its scored
// rows), or with draft tokens the last known token's (the first of its rows).
int32_t SampleRow(const v1::SequencePlan& s, int32_t first_row) {
  if (s.score_targets_size() == 0) return first_row;
  return first_row + s.token_ids_size() - s.score_from() - 1;
}

}  // namespace

absl::Status SequenceTable::Commit(const v1::StepPlan& plan, const model::StepLogits& logits,
                                   v1::StepResult* result) {
  // Pass 1 (serial): record the new tokens and prepare the samplers. Pass 2 (parallel): sample,
  // one sequence per thread; Sample is const and keeps its scratch thread_local, and at batch 32
  // the serial loop cost ~5 ms a step (150 us per 128k-vocabulary row). Pass 3 (serial): accept
  // the tokens and fill the result in plan order.
  struct Pending {
    int entry = 0;
    Sequence* seq = nullptr;
    int32_t len = 0;  // known tokens before sampling (grows by each accepted draft)
    int32_t row = 0;  // its logits row: the last known token's
    absl::StatusOr<sampling::SampleResult> sample = absl::UnknownError("not sampled");
    std::span<const int32_t> drafts;  // guesses after the known tokens, each with its own row
    std::vector<sampling::SampleResult> accepted;  // drafts the sampler agreed with
  };
  std::vector<Pending> pending;
  for (int b = 0; b < plan.sequences_size(); ++b) {
    const v1::SequencePlan& s = plan.sequences(b);
    Sequence* seq;  // node_hash_map: stable while other sequences are inserted
    if (s.first_step()) {
      Sequence fresh;
      fresh.ids.assign(s.prefix_ids().begin(), s.prefix_ids().end());
      fresh.prompt_len = s.prompt_len();
      fresh.params = FromProto(s.sampling());
      seq = &(sequences_[s.sequence_id()] = std::move(fresh));
    } else {
      seq = &sequences_.at(s.sequence_id());  // Validate checked it exists
    }
    // Draft tokens join ids only once verified (pass 2).
    const int known = s.token_ids_size() - s.draft_tokens();
    for (int32_t t : std::span<const int32_t>(s.token_ids().data(), known)) {
      const int32_t pos = static_cast<int32_t>(seq->ids.size());
      seq->ids.push_back(t);
      if (seq->sampler && pos >= seq->accepted_until) {
        seq->sampler->Accept(t);
        seq->accepted_until = pos + 1;
      }
    }
    seq->block_table.assign(s.block_table().begin(), s.block_table().end());
    if (!s.sample()) continue;
    const int32_t len = static_cast<int32_t>(seq->ids.size());
    if (!seq->sampler) {
      seq->sampler.emplace(seq->params, std::span<const int32_t>(seq->ids.data(), seq->prompt_len));
      for (int32_t q = seq->prompt_len; q < len; ++q) seq->sampler->Accept(seq->ids[q]);
      seq->accepted_until = len;
    }
    Pending& added = pending.emplace_back();
    added.entry = b;
    added.seq = seq;
    added.len = len;
    added.row = SampleRow(s, logits.row_begin[b]);
    added.drafts = std::span<const int32_t>(s.token_ids().data() + known, s.draft_tokens());
    const int32_t row = added.row;
    if (!logits.HasValues(row)) {  // argmax_only: the lm_head took the greedy token
      pending.back().sample = sampling::GreedyResult(logits.greedy_token[row]);
    }
  }

  // Scored rows: a log-sum-exp over the vocabulary each (0.25 ms for 128k entries), so a
  // 512-token continuation takes them in parallel too.
  std::vector<std::pair<int, int>> scored;  // (plan entry, score index)
  for (int b = 0; b < plan.sequences_size(); ++b) {
    for (int i = 0; i < plan.sequences(b).score_targets_size(); ++i) scored.emplace_back(b, i);
  }
  std::vector<v1::TargetScore> scores(scored.size());
  const int num_scored = static_cast<int>(scored.size());
#pragma omp parallel for schedule(static) if (num_scored > 1)
  for (int j = 0; j < num_scored; ++j) {
    const auto [b, i] = scored[j];
    scores[j] = ScoreRow(logits.Row(logits.row_begin[b] + i), plan.sequences(b).score_targets(i));
  }

  const int n = static_cast<int>(pending.size());
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int i = 0; i < n; ++i) {
    Pending& p = pending[i];
    // The index of the token being generated seeds the draw (same as the single-process
    // engine), so a recomputed sequence samples the same tokens. Rows without logits are
    // argmax_only ones: the lm_head took their greedy token.
    auto draw = [&]() -> absl::StatusOr<sampling::SampleResult> {
      if (!logits.HasValues(p.row)) return sampling::GreedyResult(logits.greedy_token[p.row]);
      return p.seq->sampler->Sample(logits.Row(p.row), p.len - p.seq->prompt_len);
    };
    if (logits.HasValues(p.row)) p.sample = draw();
    // Speculative decoding: a guess the draw agrees with is exactly the token a one-token decode
    // would have produced, so it is kept and the next row (computed with the guess as input) is
    // sampled the same way, with the penalties counting the guess. The first disagreement ends
    // it: that draw is the sequence's next token.
    for (int32_t draft : p.drafts) {
      if (!p.sample.ok() || p.sample->token != draft) break;
      p.seq->sampler->Accept(draft);  // this sequence's sampler only: one thread per sequence
      p.seq->ids.push_back(draft);
      p.accepted.push_back(*std::move(p.sample));
      ++p.len;
      ++p.row;
      p.sample = draw();
    }
  }

  size_t next = 0, next_score = 0;
  for (int b = 0; b < plan.sequences_size(); ++b) {
    const v1::SequencePlan& s = plan.sequences(b);
    v1::SequenceResult* r = result->add_results();
    r->set_sequence_id(s.sequence_id());
    // Scored rows come first among the sequence's rows (its logits start at score_from).
    for (int i = 0; i < s.score_targets_size(); ++i) *r->add_target_scores() = scores[next_score++];
    if (next == pending.size() || pending[next].entry != b) continue;
    Pending& p = pending[next++];
    if (!p.sample.ok()) return Invalid(s.sequence_id(), std::string(p.sample.status().message()));
    p.seq->sampler->Accept(p.sample->token);
    p.seq->accepted_until = p.len + 1;
    p.seq->last_sampled = p.sample->token;
    for (const sampling::SampleResult& a : p.accepted) {
      v1::SampledToken* out = r->add_accepted_drafts();
      out->set_token_id(a.token);
      out->set_logprob(a.logprob);
      for (const sampling::TokenLogprob& t : a.top_logprobs) {
        v1::TokenLogprob* top = out->add_top_logprobs();
        top->set_token_id(t.token);
        top->set_logprob(t.logprob);
      }
    }
    r->set_sampled(true);
    r->set_token_id(p.sample->token);
    r->set_logprob(p.sample->logprob);
    for (const sampling::TokenLogprob& t : p.sample->top_logprobs) {
      v1::TokenLogprob* out = r->add_top_logprobs();
      out->set_token_id(t.token);
      out->set_logprob(t.logprob);
    }
    if (s.return_logits()) {
      std::span<const float> row = logits.Row(p.row);
      r->mutable_logits()->Add(row.begin(), row.end());
    }
  }
  return absl::OkStatus();
}

int32_t SequenceTable::Release(const google::protobuf::RepeatedField<uint64_t>& ids) {
  int32_t known = 0;
  for (uint64_t id : ids) known += static_cast<int32_t>(sequences_.erase(id));
  return known;
}

int32_t SequenceTable::BlocksInUse() const {
  absl::flat_hash_set<int32_t> blocks;
  for (const auto& [id, seq] : sequences_) blocks.insert(seq.block_table.begin(), seq.block_table.end());
  return static_cast<int32_t>(blocks.size());
}

}  // namespace caduceus::worker
