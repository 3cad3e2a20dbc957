// Command-line helpers shared by every executable. Our flags are spelled with dashes
// (--max-new-tokens, the documented contract) while absl flag names use underscores; this parses
// argv with either spelling.
#pragma once

#include <string>
#include <vector>

namespace caduceus {

// Parses argv with absl flags after turning "--foo-bar[=v]" into "--foo_bar[=v]". Returns the
// positional arguments (argv[0] first), like absl::ParseCommandLine. Exits on unknown flags.
std::vector<std::string> ParseFlags(int argc, char** argv, const char* usage);

// Same, and every flag defined by this program (not absl's own) may also come from the
// environment: --tp-size from <env_prefix>TP_SIZE, e.g. CADUCEUS_TP_SIZE=2 (Kubernetes sets
// env vars more easily than arguments). The command line wins over the environment.
std::vector<std::string> ParseFlagsWithEnv(int argc, char** argv, const char* usage,
                                           const std::string& env_prefix);

}  // namespace caduceus
