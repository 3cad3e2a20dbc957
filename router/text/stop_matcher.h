// Stop sequences over streamed text. Text that could still turn into a stop sequence is held back
// until it either completes one (it is then dropped, never emitted) or can no longer match.
// Works on the detokenizer's output, so a stop string split across token boundaries is found.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace caduceus::text {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stop_sequences);

  struct Result {
    std::string emit;      // text safe to send to the client now
    bool stopped = false;  // a stop sequence completed; generation should end
  };
  // Appends newly decoded text. After `stopped`, further calls return nothing.
  Result Push(std::string_view text);
  // End of generation without a stop: releases the held-back text.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace caduceus::text
