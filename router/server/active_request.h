// One request in flight, shared between the RPC handler that relays its output and the replica
// loop that produces it.
//
// The replica loop owns the generation state (detokenizer, stop matcher, tokens); it pushes
// stream messages into the request's outbox. The handler takes them out, and asks for
// cancellation (client cancel, disconnect, deadline) through RequestCancel, which the loop
// honours at its next step boundary (the scheduler must not drop a sequence while a step runs).
//
// Two kinds of handler: a unary one blocks in PopAll and is woken by every message; a streaming
// one registers a StreamListener, which
// the replica loop calls after every message so that the write starts at once, on the loop's
// thread, without a thread hand-off per token.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "caduceus/v1/generation.pb.h"
#include "router/server/request_spec.h"
#include "router/text/stop_matcher.h"
#include "router/text/tokenizer.h"

namespace caduceus::router {

enum class CancelReason : int { kNone = 0, kCancelled = 1, kDeadline = 2 };

class StreamListener {
 public:
  virtual ~StreamListener() = default;
  // Called after each Push and Fail, outside the request's lock, on the pushing thread.
  virtual void OnOutput() = 0;
};

class ActiveRequest {
 public:
  ActiveRequest(RequestSpec spec, const text::Tokenizer* tokenizer, uint64_t seq_id, absl::Time arrival)
      : spec_(std::move(spec)),
        seq_id_(seq_id),
        arrival_(arrival),
        detokenizer_(tokenizer, /*skip_special=*/true),
        stops_(spec_.stop) {}

  const RequestSpec& spec() const { return spec_; }
  uint64_t seq_id() const { return seq_id_; }
  absl::Time arrival() const { return arrival_; }

  // --- handler side ---
  // Waits up to `wait` for a message or an error, then takes all queued messages (none after an
  // error). After the final message (or an error) `done()` is true once the outbox is
  // empty.
  std::vector<v1::GenerateStreamResponse> PopAll(absl::Duration wait);
  // The oldest queued message, without waiting.
  std::optional<v1::GenerateStreamResponse> TryPop();
  // Streaming handlers: `listener` is called after every Push and Fail; nullptr removes it.
  void SetListener(std::shared_ptr<StreamListener> listener);
  bool done() const;
  absl::Status error() const;  // set when the request failed (not for normal finishes)
  // The replica serving it (it may move: off a draining replica before it starts, or off a
  // failed one).
  std::string replica() const {
    std::lock_guard<std::mutex> lock(mu_);
    return replica_;
  }
  // The model id and revision the serving replica reported (for the audit record).
  std::pair<std::string, std::string> model() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {model_id_, revision_};
  }
  void set_replica(std::string r, std::string model_id = "", std::string revision = "") {
    std::lock_guard<std::mutex> lock(mu_);
    replica_ = std::move(r);
    model_id_ = std::move(model_id);
    revision_ = std::move(revision);
  }
  void RequestCancel(CancelReason reason) {
    int expected = 0;
    cancel_.compare_exchange_strong(expected, static_cast<int>(reason));
  }

  // --- replica-loop side ---
  CancelReason cancel_reason() const { return static_cast<CancelReason>(cancel_.load()); }
  void Push(v1::GenerateStreamResponse message, bool final);
  void Fail(absl::Status status);

  // Generation state, touched only by whoever holds the request: the loop of the replica that
  // runs it, or the code moving it to another replica.
  struct Progress {
    std::vector<int32_t> generated;
    std::optional<absl::Time> first_scheduled, first_token, last_token;
    int32_t cached_prompt_tokens = 0;
    bool sent_prompt_ids = false;
    int32_t failovers = 0;        // moves off failed replicas so far
    // Moved after it started: cached_prompt_tokens is re-read from its first step on the new
    // replica, whose prefix cache served (or did not serve) the recomputed prompt.
    bool recount_cached = false;
    // Set once it has sent output and moves: only replicas serving this revision may take it.
    std::string pinned_revision;
    // A Score request's continuation tokens, by position from spec().score_from: the
    // log-probability and the greedy token of each (a recomputed row overwrites its entry); -1
    // greedy until its row has run.
    std::vector<double> score_logprobs;
    std::vector<int32_t> score_greedy;
  };
  Progress& progress() { return progress_; }
  text::IncrementalDetokenizer& detokenizer() { return detokenizer_; }
  text::StopMatcher& stops() { return stops_; }

 private:
  const RequestSpec spec_;
  const uint64_t seq_id_;
  const absl::Time arrival_;
  text::IncrementalDetokenizer detokenizer_;
  text::StopMatcher stops_;
  Progress progress_;
  std::atomic<int> cancel_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::GenerateStreamResponse> outbox_;
  bool final_pushed_ = false;
  std::shared_ptr<StreamListener> listener_;
  std::string replica_, model_id_, revision_;
  absl::Status error_;
};

}  // namespace caduceus::router
