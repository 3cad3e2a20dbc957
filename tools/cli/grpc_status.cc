#include "tools/cli/grpc_status.h"

namespace caduceus::tools {

std::string StatusCodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace caduceus::tools
