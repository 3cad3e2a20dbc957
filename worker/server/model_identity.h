// What the worker tells the router about the model it serves: a name and a revision that changes
// whenever the configuration or any tensor's layout changes (so a router can refuse to mix
// replicas of different models).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace caduceus::worker {

struct ModelIdentity {
  std::string id;        // the model directory's name, e.g. "Med42-v2-70B"
  std::string revision;  // 16 hex digits (FNV-1a 64, not cryptographic)
};

// Hashes config.json and the header (tensor names, dtypes, shapes, offsets) of every
// *.safetensors file; the tensor data itself is not read (that would take minutes for 70B).
absl::StatusOr<ModelIdentity> IdentifyModel(const std::string& model_dir);

}  // namespace caduceus::worker
