// What the worker tells the router about the model it serves: a name and a revision that changes
// whenever the configuration, any tensor's layout or the weights change (so a router can tell
// replicas of different models apart).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace caduceus::worker {

struct ModelIdentity {
  std::string id;        // the model directory's name, e.g. "Med42-v2-70B"
  std::string revision;  // 16 hex digits (FNV-1a 64, not cryptographic)
};

// Hashes config.json, the header (tensor names, dtypes, shapes, offsets) of every *.safetensors
// file and 16 samples of 4 KiB spread over its tensor data: reading all of it would take minutes
// for 70B, and two different trainings differ in every sample.
absl::StatusOr<ModelIdentity> IdentifyModel(const std::string& model_dir);

}  // namespace caduceus::worker
