// Replica: taking requests off a replica so that they go on elsewhere (drain, departure,
// failure). The rest of the replica's loop is in replica.cc.
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "router/server/replica.h"

namespace caduceus::router {

void Replica::Retire(const absl::Status& why) {
  std::vector<std::shared_ptr<ActiveRequest>> moved;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    // What its drain did not finish goes on elsewhere. Taken under mu_, so the loop never
    // touches these requests again (a result still in flight finds them gone).
    moved = TakeForMove(/*failed=*/false);
    FailAll(why);
  }
  cv_.notify_all();
  if (!moved.empty()) {
    LogInfo(absl::StrCat("moving ", moved.size(), " requests off ", address_, " (it left)"));
  }
  Reroute(std::move(moved), why);
}

std::vector<std::shared_ptr<ActiveRequest>> Replica::BeginDraining() {
  if (!draining_) {
    LogInfo(absl::StrCat("replica ", address_, " is draining: no new requests; finishing ",
                         requests_.size(), " in flight"));
  }
  draining_ = true;
  return TakeUnstarted();
}

std::vector<std::shared_ptr<ActiveRequest>> Replica::TakeWhere(
    absl::FunctionRef<bool(ActiveRequest&)> take) {
  std::vector<std::shared_ptr<ActiveRequest>> moved;
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (!take(*it->second)) {
      ++it;
      continue;
    }
    if (scheduler_ != nullptr) scheduler_->Finish(it->first).IgnoreError();
    moved.push_back(std::move(it->second));
    requests_.erase(it++);
  }
  return moved;
}

std::vector<std::shared_ptr<ActiveRequest>> Replica::TakeUnstarted() {
  return TakeWhere([](ActiveRequest& r) { return !r.progress().first_scheduled.has_value(); });
}

std::vector<std::shared_ptr<ActiveRequest>> Replica::TakeForMove(bool failed) {
  return TakeWhere([&](ActiveRequest& r) {
    ActiveRequest::Progress& p = r.progress();
    if (failed && p.failovers >= options_.max_failovers) return false;
    if (failed) ++p.failovers;
    p.recount_cached = p.first_scheduled.has_value();
    // A client that has seen output must get the rest from the same model: another revision
    // would continue someone else's text.
    const bool sent_output = !p.generated.empty() || p.sent_prompt_ids;
    if (sent_output && p.pinned_revision.empty() && info_) p.pinned_revision = info_->revision();
    return true;
  });
}

void Replica::Reroute(std::vector<std::shared_ptr<ActiveRequest>> requests,
                      const absl::Status& failed) {
  if (!failed.ok() && !requests.empty()) metrics_->AddFailovers(static_cast<int64_t>(requests.size()));
  for (std::shared_ptr<ActiveRequest>& r : requests) {
    absl::Status s = resubmit_(r);
    if (s.ok()) continue;
    if (!failed.ok()) {
      s = absl::UnavailableError(absl::StrCat(failed.message(), "; no other replica could take the "
                                              "request over (", s.message(), "); retry the request"));
    }
    r->Fail(s);
    metrics_->RequestFinished(absl::AsciiStrToLower(absl::StatusCodeToString(s.code())));
  }
}

}  // namespace caduceus::router
