#include "worker/server/tp_group.h"

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace caduceus::worker {

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int64_t TokenCount(const v1::StepPlan& plan) {
  int64_t n = 0;
  for (const v1::SequencePlan& s : plan.sequences()) n += s.token_ids_size();
  return n;
}

void ReportGraphs(const GroupParts& parts) {
  const model::StepGraphStats g = parts.model->graph_stats();
  parts.metrics->SetCudaGraphs(g.captures, g.replays, g.failures, g.graphs);
}

}  // namespace

GroupLeader::GroupLeader(GroupParts parts, StepLimits limits, absl::Duration heartbeat_interval)
    : parts_(parts), table_(limits), heartbeat_interval_(heartbeat_interval) {
  if (parts_.control != nullptr) heartbeat_ = std::thread([this] { HeartbeatLoop(); });
}

GroupLeader::~GroupLeader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

absl::Status GroupLeader::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

absl::Status GroupLeader::Break(const absl::Status& cause) {
  if (broken_.ok()) {
    broken_ = absl::UnavailableError(absl::StrCat(
        "tensor-parallel group is broken (", cause.message(),
        "); the worker group must be restarted"));
    LogError(broken_.ToString());
    if (parts_.metrics) parts_.metrics->SetGroupHealthy(false);
    if (on_broken_) on_broken_(broken_);
  }
  return broken_;
}

absl::Status GroupLeader::Step(v1::StepPlan& plan, v1::StepResult* result) {
  const auto start = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.ok()) return broken_;
  if (stopping_) return absl::UnavailableError("worker is shutting down");
  table_.Release(plan.release_sequence_ids());
  RETURN_IF_ERROR(table_.ResolveSampledTokens(&plan));
  RETURN_IF_ERROR(table_.Validate(plan));
  const model::StepBatch batch = BatchFromPlan(plan);
  RETURN_IF_ERROR(parts_.model->ValidateBatch(batch, *parts_.cache));

  double control_seconds = 0;
  if (parts_.control != nullptr) {
    const auto t = std::chrono::steady_clock::now();
    absl::Status sent = ControlPlane(parts_.control).Send(ControlKind::kStep, plan.SerializeAsString());
    if (!sent.ok()) return Break(sent);
    last_send_ = absl::Now();
    control_seconds = SecondsSince(t);
  }
  if (parts_.timed) parts_.timed->TakeSeconds();
  const auto forward_start = std::chrono::steady_clock::now();
  absl::Status forward = parts_.model->Forward(batch, *parts_.cache, &logits_);
  const double forward_seconds = SecondsSince(forward_start);
  const double collective_seconds = parts_.timed ? parts_.timed->TakeSeconds() : 0;
  if (!forward.ok()) {
    // The batch was validated: a failure here is a collective (or the device).
    return Break(forward);
  }
  const auto sample_start = std::chrono::steady_clock::now();
  result->set_step_id(plan.step_id());
  RETURN_IF_ERROR(table_.Commit(plan, logits_, result));
  const double sample_seconds = SecondsSince(sample_start);

  v1::StepTimings* timings = result->mutable_timings();
  timings->set_control_seconds(control_seconds);
  timings->set_forward_seconds(forward_seconds);
  timings->set_collective_seconds(collective_seconds);
  timings->set_sample_seconds(sample_seconds);
  timings->set_total_seconds(SecondsSince(start));
  const int32_t used = table_.BlocksInUse();
  result->set_kv_blocks_used(used);
  result->set_draining(draining_);
  if (parts_.metrics) {
    parts_.metrics->ObserveStep(timings->total_seconds(), forward_seconds, collective_seconds,
                                TokenCount(plan));
    parts_.metrics->SetKvBlocks(used, parts_.cache->num_blocks());
    ReportGraphs(parts_);
  }
  return absl::OkStatus();
}

int32_t GroupLeader::Release(const v1::ReleaseRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  int32_t n;
  if (request.all()) {
    n = table_.size();
    table_.Clear();
  } else {
    n = table_.Release(request.sequence_ids());
  }
  if (parts_.metrics) parts_.metrics->SetKvBlocks(table_.BlocksInUse(), parts_.cache->num_blocks());
  return n;
}

void GroupLeader::StartDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

bool GroupLeader::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

int32_t GroupLeader::live_sequences() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_.size();
}

void GroupLeader::Shutdown() {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return;
  stopping_ = true;
  if (parts_.control != nullptr && broken_.ok()) {
    absl::Status s = ControlPlane(parts_.control).Send(ControlKind::kShutdown);
    if (!s.ok()) LogWarning(absl::StrCat("could not tell followers to stop: ", s.message()));
  }
  lock.unlock();
  wake_.notify_all();
}

void GroupLeader::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const absl::Time due = last_send_ + heartbeat_interval_;
    const absl::Time now = absl::Now();
    if (now < due) {
      wake_.wait_for(lock, absl::ToChronoNanoseconds(due - now));
      continue;
    }
    if (!broken_.ok()) {
      last_send_ = now;
      continue;
    }
    absl::Status s = ControlPlane(parts_.control).Send(ControlKind::kHeartbeat);
    last_send_ = absl::Now();
    if (!s.ok()) Break(s).IgnoreError();
  }
}

absl::Status RunFollower(const GroupParts& parts) {
  ControlPlane control(parts.control);
  v1::StepPlan plan;
  while (true) {
    ASSIGN_OR_RETURN(ControlMessage message, control.Receive());
    if (message.kind == ControlKind::kShutdown) return absl::OkStatus();
    if (message.kind == ControlKind::kHeartbeat) continue;
    if (!plan.ParseFromString(message.payload)) {
      return absl::DataLossError("control plane: step plan does not parse");
    }
    const auto start = std::chrono::steady_clock::now();
    if (parts.timed) parts.timed->TakeSeconds();
    // The leader validated the plan; a failure here is a collective (or the device). Only the
    // leader samples: a follower takes part in the collectives and copies nothing back.
    RETURN_IF_ERROR(parts.model->Forward(BatchFromPlan(plan), *parts.cache, /*logits=*/nullptr));
    if (parts.metrics) {
      const double total = SecondsSince(start);
      parts.metrics->ObserveStep(total, total, parts.timed ? parts.timed->TakeSeconds() : 0,
                                 TokenCount(plan));
      ReportGraphs(parts);
    }
  }
}

}  // namespace caduceus::worker
