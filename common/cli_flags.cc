#include "common/cli_flags.h"

#include <cstring>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"

namespace caduceus {

std::vector<std::string> ParseFlags(int argc, char** argv, const char* usage) {
  absl::SetProgramUsageMessage(usage);
  std::vector<std::string> storage;
  storage.reserve(argc);
  bool after_terminator = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") after_terminator = true;
    if (!after_terminator && i > 0 && arg.size() > 2 && arg[0] == '-' && arg[1] == '-') {
      const size_t end = std::min(arg.find('='), arg.size());
      for (size_t j = 2; j < end; ++j) {
        if (arg[j] == '-') arg[j] = '_';
      }
    }
    storage.push_back(std::move(arg));
  }
  std::vector<char*> args;
  for (auto& s : storage) args.push_back(s.data());
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  return std::vector<std::string>(rest.begin(), rest.end());
}

}  // namespace caduceus
