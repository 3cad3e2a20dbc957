#include "worker/model/thread_communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::model {

ThreadCommunicatorGroup::ThreadCommunicatorGroup(int size, std::chrono::milliseconds timeout)
    : size_(size), timeout_(timeout), slots_(size) {
  for (int r = 0; r < size; ++r) {
    comms_.push_back(std::unique_ptr<ThreadCommunicator>(new ThreadCommunicator(this, r)));
  }
}

absl::Status ThreadCommunicatorGroup::Barrier() {
  std::unique_lock<std::mutex> lock(mu_);
  if (broken_) return absl::UnavailableError("thread communicator group is broken");
  const uint64_t generation = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  const bool done = cv_.wait_for(lock, timeout_,
                                 [&] { return generation_ != generation || broken_; });
  if (generation_ != generation) return absl::OkStatus();
  if (!done) {
    broken_ = true;
    cv_.notify_all();
    return absl::DeadlineExceededError(absl::StrCat(
        "thread communicator: a peer did not reach the collective within ", timeout_.count(),
        " ms"));
  }
  return absl::UnavailableError("thread communicator group is broken");
}

absl::Status ThreadCommunicatorGroup::Enter(int r, const Slot& slot) {
  // Safe to overwrite: every collective ends with a barrier after the last read of the slots.
  slots_[r] = slot;
  RETURN_IF_ERROR(Barrier());
  for (int i = 0; i < size_; ++i) {
    const Slot& s = slots_[i];
    if (s.op != slot.op || s.count != slot.count || s.root != slot.root) {
      // Every rank sees the same slots, so every rank fails here together and none waits.
      return absl::InvalidArgumentError(absl::StrCat(
          "thread communicator: rank ", r, " and rank ", i,
          " called different collectives or sizes (", slot.count, " vs ", s.count, ")"));
    }
  }
  return absl::OkStatus();
}

int ThreadCommunicator::size() const { return group_->size(); }

absl::Status ThreadCommunicator::AllReduceSum(float* data, size_t count) {
  using Group = ThreadCommunicatorGroup;
  RETURN_IF_ERROR(group_->Enter(rank_, {Group::Op::kAllReduce, data, count, 0}));
  sum_.resize(count);
  const auto src = [&](int r) { return static_cast<const float*>(group_->slots_[r].src); };
  // Fixed order: ((x0 + x1) + x2) + ...; every rank computes the same bits.
  std::memcpy(sum_.data(), src(0), count * sizeof(float));
  for (int r = 1; r < size(); ++r) {
    const float* x = src(r);
    for (size_t i = 0; i < count; ++i) sum_[i] += x[i];
  }
  // Nobody may still be reading `data` when we overwrite it.
  RETURN_IF_ERROR(group_->Barrier());
  std::memcpy(data, sum_.data(), count * sizeof(float));
  return absl::OkStatus();
}

absl::Status ThreadCommunicator::AllGather(const float* in, size_t count, float* out) {
  using Group = ThreadCommunicatorGroup;
  RETURN_IF_ERROR(group_->Enter(rank_, {Group::Op::kAllGather, in, count, 0}));
  for (int r = 0; r < size(); ++r) {
    std::memcpy(out + r * count, group_->slots_[r].src, count * sizeof(float));
  }
  // The senders may reuse `in` only once every rank has copied it.
  return group_->Barrier();
}

absl::Status ThreadCommunicator::Broadcast(void* data, size_t bytes, int root) {
  using Group = ThreadCommunicatorGroup;
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " outside the group"));
  }
  RETURN_IF_ERROR(group_->Enter(rank_, {Group::Op::kBroadcast, data, bytes, root}));
  if (rank_ != root) std::memcpy(data, group_->slots_[root].src, bytes);
  return group_->Barrier();
}

}  // namespace caduceus::model
