#include "router/server/replica.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "router/server/worker_features.h"

namespace caduceus::router {

namespace {

std::chrono::system_clock::time_point DeadlineIn(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(d);
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

double Replica::Load::FreeCapacity() const {
  if (!up || num_blocks == 0) return -1e300;
  const double free_blocks = (1.0 - kv_usage) * static_cast<double>(num_blocks);
  return free_blocks - static_cast<double>(waiting_tokens) / std::max<int64_t>(block_size, 1);
}

Replica::Replica(std::string address, ReplicaOptions options, const ModelTextContext* model,
                 RouterMetrics* metrics, Resubmit resubmit)
    : address_(std::move(address)),
      options_(options),
      model_(model),
      metrics_(metrics),
      stub_(worker::v1::Worker::NewStub(grpc::CreateCustomChannel(
          address_, grpc::InsecureChannelCredentials(), [] {
            grpc::ChannelArguments args;
            args.SetMaxReceiveMessageSize(256 << 20);
            args.SetMaxSendMessageSize(256 << 20);
            return args;
          }()))),
      resubmit_(std::move(resubmit)),
      loop_([this] { Loop(); }) {}

Replica::~Replica() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    FailAll(absl::UnavailableError("router is shutting down"));
  }
  cv_.notify_all();
  loop_.join();  // the loop abandons its steps in flight before it returns
  cq_.Shutdown();
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
  }
}

absl::Status Replica::Submit(std::shared_ptr<ActiveRequest> request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!up_ || scheduler_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("replica ", address_, " is down"));
  }
  if (draining_) {
    return absl::UnavailableError(absl::StrCat("replica ", address_, " is draining"));
  }
  const RequestSpec& spec = request->spec();
  // UNAVAILABLE: the replica set tries the next replica (an upgraded one, during a rollout).
  if (!spec.sampling.logit_bias.empty() && info_ && !WorkerHas(*info_, kFeatureLogitBias)) {
    return absl::UnavailableError(absl::StrCat(
        "replica ", address_, " runs an older worker that cannot apply logit_bias; retry when "
        "the upgrade is done, or send the request without logit_bias"));
  }
  // A request moving off a failed replica brings what it generated there: recomputed with the
  // prompt, so that it goes on where it stopped.
  // A scored request computes every row it scores: the one before the continuation on.
  const int32_t max_reused = spec.score_from > 0 ? spec.score_from - 1
                                                 : std::numeric_limits<int32_t>::max();
  if (absl::Status s = scheduler_->Add(request->seq_id(), spec.prompt_ids, spec.max_new_tokens,
                                       request->arrival(), request->progress().generated,
                                       max_reused, spec.priority);
      !s.ok()) {
    return s;
  }
  if (options_.log_payloads) {
    LogInfo(absl::StrCat("request ", spec.request_id, " on ", address_, ": prompt ids [",
                         absl::StrJoin(spec.prompt_ids, ","), "]"));
  }
  if (!request->progress().first_scheduled) {
    metrics_->AddPromptTokens(static_cast<int64_t>(spec.prompt_ids.size()));
  }
  request->set_replica(address_, info_ ? info_->model_id() : "", info_ ? info_->revision() : "");
  requests_[request->seq_id()] = std::move(request);
  cv_.notify_all();
  return absl::OkStatus();
}

void Replica::Heartbeat(bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  if (serving) last_ok_ = absl::Now();
}

Replica::Load Replica::load() const {
  std::lock_guard<std::mutex> lock(mu_);
  Load l;
  l.up = up_ && scheduler_ != nullptr;
  l.draining = draining_;
  if (scheduler_) {
    l.waiting = scheduler_->num_waiting();
    l.running = scheduler_->num_running();
    l.waiting_tokens = scheduler_->waiting_tokens();
    l.kv_usage = scheduler_->kv_usage();
    l.num_blocks = scheduler_->config().num_blocks;
    l.block_size = scheduler_->config().block_size;
  }
  return l;
}

absl::Duration Replica::DownFor() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (up_ && scheduler_ != nullptr) return absl::ZeroDuration();
  return absl::Now() - std::max(last_ok_, added_);
}

std::optional<worker::v1::InfoResponse> Replica::info() const {
  std::lock_guard<std::mutex> lock(mu_);
  return info_;
}

int64_t Replica::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(requests_.size());
}

bool Replica::Connect() {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(5)));
  worker::v1::InfoResponse info;
  grpc::Status status = stub_->Info(&context, worker::v1::InfoRequest(), &info);
  if (!status.ok()) return false;
  const model::ModelConfig& config = *model_->config;
  if (info.vocab_size() != config.vocab_size || info.max_context() != config.max_position_embeddings) {
    LogError(absl::StrCat("replica ", address_, " serves another model (vocab ", info.vocab_size(),
                          ", context ", info.max_context(), "; the router's --model has vocab ",
                          config.vocab_size, ", context ", config.max_position_embeddings,
                          "); not using it"));
    return false;
  }
  {
    // This router owns the replica's KV blocks from now on: drop any sequence state a previous
    // router (before a restart) left on the worker.
    grpc::ClientContext release_context;
    release_context.set_deadline(DeadlineIn(absl::Seconds(5)));
    worker::v1::ReleaseRequest release_all;
    release_all.set_all(true);
    worker::v1::ReleaseResponse released;
    if (stub_->Release(&release_context, release_all, &released).ok() && released.released() > 0) {
      LogInfo(absl::StrCat("replica ", address_, ": dropped ", released.released(),
                           " sequences left by a previous router"));
    }
  }
  std::vector<std::string> warnings;
  const SchedulerConfig sc = SchedulerConfigFor(options_.scheduler, info, &warnings);
  for (const std::string& w : warnings) LogWarning(absl::StrCat("replica ", address_, " ", w));
  auto scheduler = Scheduler::Create(sc);
  if (!scheduler.ok()) {
    LogError(absl::StrCat("replica ", address_, ": ", scheduler.status().ToString()));
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  scheduler_ = std::move(*scheduler);
  info_ = info;
  up_ = true;
  draining_ = false;
  last_ok_ = absl::Now();
  preemptions_seen_ = prefix_hits_seen_ = 0;
  LogInfo(absl::StrCat("replica ", address_, " up: ", info.model_id(), " (revision ",
                       info.revision(), "), tp ", info.tp_size(), " on ", info.device(), ", ",
                       info.num_kv_blocks(), " KV blocks of ", info.block_size(), " tokens"));
  return true;
}

Replica::Health Replica::ProbeHealth() {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(2)));
  worker::v1::HealthResponse health;
  grpc::Status status = stub_->Health(&context, worker::v1::HealthRequest(), &health);
  if (!status.ok()) return Health::kUnreachable;
  if (health.draining()) return Health::kDraining;
  return health.serving() ? Health::kServing : Health::kUnreachable;
}

void Replica::FailAll(const absl::Status& status) {
  for (auto& [id, request] : requests_) {
    request->Fail(status);
    metrics_->RequestFinished(absl::AsciiStrToLower(absl::StatusCodeToString(status.code())));
  }
  requests_.clear();
}

void Replica::HandleCancellations(std::vector<uint64_t>* release) {
  for (auto it = requests_.begin(); it != requests_.end();) {
    ActiveRequest& request = *it->second;
    const CancelReason reason = request.cancel_reason();
    if (reason == CancelReason::kNone) {
      ++it;
      continue;
    }
    scheduler_->Finish(request.seq_id()).IgnoreError();
    release->push_back(request.seq_id());
    const bool deadline = reason == CancelReason::kDeadline;
    request.Fail(deadline ? absl::DeadlineExceededError("deadline exceeded")
                          : absl::CancelledError("cancelled by the client"));
    metrics_->RequestFinished(deadline ? "deadline_exceeded" : "cancelled");
    metrics_->ObserveRequestDuration(Seconds(absl::Now() - request.arrival()));
    requests_.erase(it++);
  }
}

void Replica::Release(const std::vector<uint64_t>& ids) {
  if (ids.empty()) return;
  worker::v1::ReleaseRequest request;
  request.mutable_sequence_ids()->Add(ids.begin(), ids.end());
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(5)));
  worker::v1::ReleaseResponse response;
  // Best effort: a worker that missed a release only keeps a little sampler state, and a
  // recomputed sequence restarts its state with first_step anyway.
  stub_->Release(&context, request, &response);
}

void Replica::DropRequest(uint64_t seq, const absl::Status& error, std::vector<uint64_t>* release) {
  auto it = requests_.find(seq);
  if (it == requests_.end()) return;
  it->second->Fail(error);
  metrics_->RequestFinished(absl::AsciiStrToLower(absl::StatusCodeToString(error.code())));
  scheduler_->Finish(seq).IgnoreError();
  release->push_back(seq);
  requests_.erase(it);
}

void Replica::CountSchedulerEvents() {
  if (scheduler_->preemptions_total() > preemptions_seen_) {
    metrics_->AddPreemptions(scheduler_->preemptions_total() - preemptions_seen_);
    preemptions_seen_ = scheduler_->preemptions_total();
  }
  if (scheduler_->prefix_hits_total() > prefix_hits_seen_) {
    metrics_->AddPrefixCacheHits(scheduler_->prefix_hits_total() - prefix_hits_seen_);
    prefix_hits_seen_ = scheduler_->prefix_hits_total();
  }
}

void Replica::CheckIdleHealth(std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  const Health health = ProbeHealth();
  lock.lock();
  const absl::Time now = absl::Now();
  if (health == Health::kDraining) {
    last_ok_ = now;
    std::vector<std::shared_ptr<ActiveRequest>> moved = BeginDraining();
    lock.unlock();
    Reroute(std::move(moved));
    lock.lock();
  } else if (health == Health::kServing) {
    last_ok_ = now;
    up_ = true;
  } else if (now - last_ok_ > options_.heartbeat_timeout && up_) {
    LogWarning(absl::StrCat("replica ", address_, " missed its health checks for ",
                            absl::FormatDuration(now - last_ok_), "; marking it down"));
    // Requests submitted while the probe ran have not started here: they go elsewhere (a
    // fresh scheduler would not know them, and they would wait forever).
    std::vector<std::shared_ptr<ActiveRequest>> moved = TakeForMove(/*failed=*/false);
    MarkDownLocked();
    lock.unlock();
    Reroute(std::move(moved));
    lock.lock();
  }
}

void Replica::MarkDownLocked() {
  up_ = false;
  scheduler_.reset();
  info_.reset();
  metrics_->RemoveReplica(address_);  // its KV usage is unknown now, not the last value
}

void Replica::OnStepFailed(const grpc::Status& status, std::unique_lock<std::mutex>& lock) {
  // The steps sent after the failed one assumed it would run: they are cancelled and their
  // results, if any, are never applied.
  lock.unlock();
  AbandonInFlight();
  lock.lock();
  const ScheduledStep failed = std::move(in_flight_.front()->step);
  const size_t abandoned = in_flight_.size();
  in_flight_.clear();
  std::vector<uint64_t> release;
  std::vector<std::shared_ptr<ActiveRequest>> moved;
  absl::Status failure;
  const bool refused = status.error_code() == grpc::StatusCode::INVALID_ARGUMENT;
  if (scheduler_ != nullptr && refused && abandoned == 1) {
    // The worker refused a plan: a bug on one side or the other. Fail the requests in it (they
    // are poisoned) and keep the replica.
    LogError(absl::StrCat("replica ", address_, " refused a step: ", status.error_message()));
    scheduler_->AbortStep();
    const absl::Status error = absl::InternalError(
        absl::StrCat("the worker refused this request's step: ", status.error_message()));
    for (const StepEntry& e : failed.entries) DropRequest(e.seq_id, error, &release);
  } else if (scheduler_ != nullptr) {
    // Gone, or refused with later steps already sent. In the second case sequences finished
    // meanwhile may have put blocks in the prefix cache that only the abandoned steps would
    // have written, so the router's view of this replica's cache cannot be trusted: start over
    // as after a loss (the worker's state is dropped when the replica reconnects).
    LogError(absl::StrCat("replica ", address_, refused ? " refused a pipelined step (" : " failed a step (",
                          status.error_code(), ": ", status.error_message(), "); ",
                          refused ? "resetting it" : "marking it down"));
    // Its requests go on elsewhere from the tokens they have (a replica that died while idle
    // fails the first step it is sent, so this also covers requests sent to a dead replica).
    failure = absl::UnavailableError(
        absl::StrCat("replica ", address_, " failed: ", status.error_message()));
    moved = TakeForMove(/*failed=*/true);
    if (!requests_.empty()) {
      LogWarning(absl::StrCat("failing ", requests_.size(), " requests of ", address_,
                              " that already moved ", options_.max_failovers,
                              " times (--max-request-failovers)"));
    }
    FailAll(absl::UnavailableError(absl::StrCat(failure.message(), "; retry the request")));
    MarkDownLocked();
    if (!moved.empty()) {
      size_t streaming = 0;
      for (const auto& r : moved) streaming += r->progress().pinned_revision.empty() ? 0 : 1;
      LogInfo(absl::StrCat("moving ", moved.size(), " requests off ", address_, " (", streaming,
                           " of them had sent output and continue where they stopped)"));
    }
  }
  lock.unlock();
  Release(release);
  Reroute(std::move(moved), failure);
}

void Replica::SendStep(ScheduledStep step, const worker::v1::StepPlan& plan) {
  auto s = std::make_unique<InFlightStep>();
  s->step = std::move(step);
  s->context.set_deadline(DeadlineIn(options_.step_timeout));
  s->sent = absl::Now();
  s->call = stub_->AsyncStep(&s->context, plan, &cq_);
  s->call->Finish(&s->result, &s->status, s.get());
  in_flight_.push_back(std::move(s));
}

void Replica::AwaitDone(InFlightStep& step) {
  void* tag = nullptr;
  bool ok = false;
  // Since when the worker has not answered a health check during this wait (set once the step
  // has run for --heartbeat-timeout: watching starts then).
  std::optional<absl::Time> answered;
  bool abandoned = false;
  while (!step.done) {
    // Completions may come in any order (the worker runs the steps in order anyway): each one
    // marks its own step.
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
    const grpc::CompletionQueue::NextStatus next = cq_.AsyncNext(&tag, &ok, deadline);
    if (next == grpc::CompletionQueue::SHUTDOWN) return;
    if (next == grpc::CompletionQueue::GOT_EVENT) {
      static_cast<InFlightStep*>(tag)->done = true;
      continue;
    }
    // A step may legitimately take long (a big prefill on CPUs), but a worker that stops
    // answering health checks too (stopped, frozen, cut off) will not finish it: abandon the
    // steps after --heartbeat-timeout without an answer instead of waiting for --step-timeout,
    // so that its requests move on. The worker's health service runs on other threads than its
    // step, so a long step alone never looks like this.
    const absl::Time now = absl::Now();
    if (abandoned || now - step.sent < options_.heartbeat_timeout) continue;
    if (!answered) answered = now;
    if (ProbeHealth() != Health::kUnreachable) {
      answered = absl::Now();
    } else if (absl::Now() - *answered > options_.heartbeat_timeout) {
      LogWarning(absl::StrCat("replica ", address_, " has not answered health checks for ",
                              absl::FormatDuration(absl::Now() - *answered), " during a step of ",
                              absl::FormatDuration(now - step.sent), "; abandoning its steps"));
      for (auto& s : in_flight_) {
        if (!s->done) s->context.TryCancel();
      }
      abandoned = true;
    }
  }
}

void Replica::AbandonInFlight() {
  for (auto& s : in_flight_) {
    if (!s->done) s->context.TryCancel();
  }
  for (auto& s : in_flight_) AwaitDone(*s);
}

void Replica::Loop() {
  // Sequences finished or cancelled since the last step. They ride on the next step plan
  // (StepPlan.release_sequence_ids) instead of costing a Release round trip between two steps;
  // only a replica going idle sends them on their own.
  std::vector<uint64_t> release;
  const size_t depth = static_cast<size_t>(std::max(1, options_.pipeline_depth));
  while (true) {
    bool connected;
    {
      std::lock_guard<std::mutex> lock(mu_);
      connected = scheduler_ != nullptr;
      if (stop_) break;
    }
    if (!connected) {
      // Down (or never up): reconnect when its health check passes.
      if (!Connect()) {
        std::unique_lock<std::mutex> lock(mu_);
        up_ = false;
        cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.health_interval), [this] { return stop_; });
      }
      continue;
    }

    std::unique_lock<std::mutex> lock(mu_);
    HandleCancellations(&release);
    metrics_->SetKvUsage(address_, scheduler_->kv_usage());
    if (in_flight_.empty() && scheduler_->num_waiting() == 0 && scheduler_->num_running() == 0) {
      const bool woke = cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.health_interval), [this] {
        return stop_ || scheduler_->num_waiting() > 0;
      });
      if (stop_) break;
      if (!woke) {
        // Idle: check that the group is still alive, so routing does not pick a dead replica.
        lock.unlock();
        Release(std::exchange(release, {}));
        lock.lock();
        CheckIdleHealth(lock);
        continue;
      }
    }

    // Speculating (small batches), each step is planned on the previous one's result: a
    // guessed sequence's next position depends on how many guesses were right.
    if (in_flight_.size() < (scheduler_->speculating() ? 1 : depth)) {
      // With a step in flight this plans ahead of it; with none, it may also preempt.
      ScheduledStep step = in_flight_.empty() ? scheduler_->Schedule() : scheduler_->ScheduleAhead();
      CountSchedulerEvents();
      if (!step.empty()) {
        worker::v1::StepPlan plan = BuildPlan(step);
        plan.mutable_release_sequence_ids()->Add(release.begin(), release.end());
        release.clear();
        lock.unlock();
        SendStep(std::move(step), plan);
        continue;  // plan the next one ahead while this one runs
      }
      if (in_flight_.empty()) {
        // Everything waits (for blocks held by sequences that are finishing): try again shortly.
        lock.unlock();
        Release(std::exchange(release, {}));
        lock.lock();
        cv_.wait_for(lock, std::chrono::milliseconds(5));
        continue;
      }
      // Nothing to plan ahead (or it must wait for the steps in flight): wait for the oldest.
    }

    lock.unlock();
    AwaitDone(*in_flight_.front());
    const absl::Time now = absl::Now();
    InFlightStep& done = *in_flight_.front();
    // The time this step held the head of the pipeline: from when it was sent, or from the
    // previous result if it was sent ahead of that. Unpipelined, the round trip.
    const absl::Duration took = now - std::max(done.sent, last_result_);
    last_result_ = now;
    lock.lock();
    if (!done.status.ok()) {
      // A copy: OnStepFailed clears in_flight_, which owns `done`.
      const grpc::Status status = done.status;
      OnStepFailed(status, lock);
      continue;
    }
    last_ok_ = now;
    std::vector<std::shared_ptr<ActiveRequest>> reroute;
    if (done.result.draining()) reroute = BeginDraining();
    metrics_->ObserveStep(static_cast<int64_t>(done.step.entries.size()), Seconds(took),
                          std::max(0.0, Seconds(took) - done.result.timings().total_seconds()));
    std::vector<uint64_t> finished = ApplyResult(done.step, done.result);
    release.insert(release.end(), finished.begin(), finished.end());
    scheduler_->ConfirmStep();
    metrics_->SetKvUsage(address_, scheduler_->kv_usage());
    in_flight_.pop_front();
    lock.unlock();
    Reroute(std::move(reroute));
  }
  AbandonInFlight();
  in_flight_.clear();
}

}  // namespace caduceus::router
