// Score requests inside a replica's steps: which rows of a prefill entry are scored, and keeping
// what the worker answered for them (RequestSpec::score_from; docs/architecture.md, "Score").
#pragma once

#include <cstdint>

#include "caduceus/worker/v1/worker.pb.h"
#include "router/scheduler/scheduled_step.h"
#include "router/server/active_request.h"

namespace caduceus::router {

// The positions of a score request's entry whose rows are scored, [first, end): each predicts
// the prompt token after it, from the one before the continuation to the one before the last.
// Empty (first >= end) for generations and for entries past them.
struct ScoredRows {
  int32_t first = 0, end = 0;
};
ScoredRows RowsToScore(const StepEntry& e, const RequestSpec& spec);

// Keeps what the worker answered for an entry's scored rows in the request's progress (a
// recomputed row overwrites its entry).
void RecordScores(const StepEntry& e, const worker::v1::SequenceResult& r, ActiveRequest& request);

}  // namespace caduceus::router
