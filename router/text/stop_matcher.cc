#include "router/text/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace caduceus::text {

StopMatcher::StopMatcher(std::vector<std::string> stop_sequences) {
  for (auto& s : stop_sequences) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

StopMatcher::Result StopMatcher::Push(std::string_view text) {
  Result result;
  if (stopped_) return result;
  pending_.append(text);
  // Earliest complete stop sequence wins; everything before it is emitted.
  size_t first_stop = std::string::npos;
  for (const std::string& s : stops_) {
    first_stop = std::min(first_stop, pending_.find(s));
  }
  if (first_stop != std::string::npos) {
    result.emit = pending_.substr(0, first_stop);
    result.stopped = true;
    stopped_ = true;
    pending_.clear();
    return result;
  }
  // Hold back the longest suffix of pending_ that is a proper prefix of some stop sequence.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, pending_.size());
    for (size_t len = max_len; len > hold; --len) {
      if (std::string_view(pending_).substr(pending_.size() - len) ==
          std::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  result.emit = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopMatcher::Flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

}  // namespace caduceus::text
