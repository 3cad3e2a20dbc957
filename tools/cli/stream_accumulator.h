// Folds the messages of a GenerateStream/ChatStream call into the GenerateResponse the unary call
// would have returned, so both paths share one output format.
#pragma once

#include "caduceus/v1/generation.pb.h"

namespace caduceus::tools {

class StreamAccumulator {
 public:
  void Add(const caduceus::v1::GenerateStreamResponse& message);

  // The stream messages carry no replica; the caller may know it from call metadata.
  void SetReplica(const std::string& replica) { response_.set_replica(replica); }

  const caduceus::v1::GenerateResponse& response() const { return response_; }

 private:
  caduceus::v1::GenerateResponse response_;
};

}  // namespace caduceus::tools
