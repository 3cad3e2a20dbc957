#include "router/server/score_rows.h"

#include <algorithm>

namespace caduceus::router {

ScoredRows RowsToScore(const StepEntry& e, const RequestSpec& spec) {
  if (spec.score_from <= 0) return {};
  const int32_t prompt = static_cast<int32_t>(spec.prompt_ids.size());
  return {std::max(e.start_pos, spec.score_from - 1),
          std::min(e.start_pos + static_cast<int32_t>(e.tokens.size()), prompt - 1)};
}

void RecordScores(const StepEntry& e, const worker::v1::SequenceResult& r, ActiveRequest& request) {
  const ScoredRows rows = RowsToScore(e, request.spec());
  if (rows.first >= rows.end || r.target_scores_size() != rows.end - rows.first) return;
  ActiveRequest::Progress& p = request.progress();
  const size_t n = request.spec().prompt_ids.size() - static_cast<size_t>(request.spec().score_from);
  p.score_logprobs.resize(n, 0.0);
  p.score_greedy.resize(n, -1);
  for (int32_t pos = rows.first; pos < rows.end; ++pos) {
    const worker::v1::TargetScore& t = r.target_scores(pos - rows.first);
    // Row `pos` scores the token at pos + 1.
    const size_t k = static_cast<size_t>(pos + 1 - request.spec().score_from);
    p.score_logprobs[k] = t.logprob();
    p.score_greedy[k] = t.greedy_token_id();
  }
}

}  // namespace caduceus::router
