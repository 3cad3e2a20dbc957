#include "router/server/replica_set.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace caduceus::router {

ReplicaSet::ReplicaSet(ReplicaOptions options, const ModelTextContext* model, RouterMetrics* metrics)
    : options_(options), model_(model), metrics_(metrics), monitor_([this] { MonitorLoop(); }) {}

ReplicaSet::~ReplicaSet() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  monitor_.join();
  std::lock_guard<std::mutex> lock(mu_);
  replicas_.clear();
}

std::string ReplicaSet::Add(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  return AddLocked(address, /*registered=*/false);
}

absl::StatusOr<std::string> ReplicaSet::Register(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  if (FindLocked(address) != replicas_.end()) return address;
  const auto registered = std::count_if(replicas_.begin(), replicas_.end(),
                                        [](const Entry& e) { return e.registered; });
  if (registered >= options_.max_registered) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the router holds ", registered, " registered replicas, its limit (--max-registered-replicas); "
        "replicas down for --forget-replica-after are dropped"));
  }
  return AddLocked(address, /*registered=*/true);
}

std::vector<ReplicaSet::Entry>::iterator ReplicaSet::FindLocked(const std::string& address) {
  return std::find_if(replicas_.begin(), replicas_.end(),
                      [&](const Entry& e) { return e.replica->address() == address; });
}

std::string ReplicaSet::AddLocked(const std::string& address, bool registered) {
  if (FindLocked(address) != replicas_.end()) return address;
  LogInfo(absl::StrCat("replica ", address, " added", registered ? " (registered)" : ""));
  replicas_.push_back(Entry{std::make_shared<Replica>(
                                address, options_, model_, metrics_,
                                [this](std::shared_ptr<ActiveRequest> r) { return Submit(r).status(); }),
                            registered});
  return address;
}

bool ReplicaSet::Heartbeat(const std::string& id, bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = FindLocked(id);
  if (it == replicas_.end()) return false;
  it->replica->Heartbeat(serving);
  return true;
}

bool ReplicaSet::Deregister(const std::string& address) {
  std::shared_ptr<Replica> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = FindLocked(address);
    if (it != replicas_.end() && it->registered) {
      gone = std::move(it->replica);
      replicas_.erase(it);
    }
  }
  if (gone == nullptr) return false;
  LogInfo(absl::StrCat("replica ", address, " deregistered (it is leaving)"));
  gone->Retire(absl::UnavailableError(
      absl::StrCat("replica ", address, " left before it finished the request (its drain timed out)")));
  metrics_->RemoveReplica(address);
  return true;
}

void ReplicaSet::WarnOnMixedRevisions() {
  std::set<std::string> revisions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Entry& e : replicas_) {
      std::optional<worker::v1::InfoResponse> info = e.replica->info();
      if (info) revisions.insert(absl::StrCat(info->model_id(), "@", info->revision()));
    }
  }
  const std::string mix = revisions.size() > 1 ? absl::StrJoin(revisions, ", ") : "";
  if (mix == revisions_warned_) return;
  revisions_warned_ = mix;
  if (!mix.empty()) {
    LogWarning(absl::StrCat("replicas up with different models or revisions (", mix,
                            "): the same request gets different answers depending on the replica"));
  }
}

void ReplicaSet::ForgetLongDown() {
  std::vector<std::shared_ptr<Replica>> forgotten;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = replicas_.begin(); it != replicas_.end();) {
      const absl::Duration down = it->registered ? it->replica->DownFor() : absl::ZeroDuration();
      if (down > options_.forget_after) {
        LogWarning(absl::StrCat("replica ", it->replica->address(), " down for ",
                                absl::FormatDuration(down), "; forgetting it (it registers again if it returns)"));
        forgotten.push_back(std::move(it->replica));
        it = replicas_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const std::shared_ptr<Replica>& r : forgotten) metrics_->RemoveReplica(r->address());
  // Destroyed here, outside mu_ (a destructor joins the replica's thread); a Submit that still
  // holds one finishes with it first.
}

absl::StatusOr<std::string> ReplicaSet::Submit(const std::shared_ptr<ActiveRequest>& request) {
  // Set for a request that streamed output and is moving off a failed or departed replica.
  const std::string& pinned = request->progress().pinned_revision;
  // A request that ran (or waited) on a replica that failed or left: it was valid there.
  const bool moving = request->progress().failovers > 0 || request->progress().first_scheduled.has_value();
  std::vector<std::pair<double, std::shared_ptr<Replica>>> ranked;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Entry& e : replicas_) {
      Replica::Load load = e.replica->load();
      if (!load.up || load.draining) continue;
      if (!pinned.empty()) {
        std::optional<worker::v1::InfoResponse> info = e.replica->info();
        if (!info || info->revision() != pinned) continue;
      }
      ranked.emplace_back(load.FreeCapacity(), e.replica);
    }
  }
  if (ranked.empty()) {
    return absl::UnavailableError(
        pinned.empty() ? std::string("no worker replica is up (or all are draining); retry later")
                       : absl::StrCat("no other replica serving model revision ", pinned, " is up"));
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  absl::Status last;
  for (const auto& [capacity, replica] : ranked) {
    last = replica->Submit(request);
    if (last.ok()) return replica->address();
    // A full queue or a replica that just went down: try the next one. Anything else (a request
    // that can never fit) would fail the same way everywhere, except for a request moving off a
    // failed replica: it was valid there, and a replica with a larger KV cache may take it.
    if (!moving && last.code() != absl::StatusCode::kResourceExhausted &&
        last.code() != absl::StatusCode::kUnavailable) {
      return last;
    }
  }
  return last;
}

ReplicaSet::Summary ReplicaSet::Summarize() const {
  std::lock_guard<std::mutex> lock(mu_);
  Summary s;
  for (const Entry& e : replicas_) {
    const std::shared_ptr<Replica>& r = e.replica;
    Replica::Load load = r->load();
    (load.up ? s.up : s.down) += 1;
    s.waiting += load.waiting;
    s.running += load.running;
    s.in_flight += r->in_flight();
    if (load.up) {
      s.kv_blocks_total += load.num_blocks;
      if (!s.first_info) s.first_info = r->info();
    }
  }
  return s;
}

int64_t ReplicaSet::MinKvTokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t smallest = 0;
  for (const Entry& e : replicas_) {
    const Replica::Load load = e.replica->load();
    const int64_t tokens = load.num_blocks * load.block_size;
    if (load.up && (smallest == 0 || tokens < smallest)) smallest = tokens;
  }
  return smallest;
}

void ReplicaSet::MonitorLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    ForgetLongDown();
    WarnOnMixedRevisions();
    Summary s = Summarize();
    metrics_->SetQueue(s.waiting, s.running);
    metrics_->SetReplicas(s.up, s.down);
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_; });
  }
}

}  // namespace caduceus::router
