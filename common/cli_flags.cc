#include "common/cli_flags.h"

#include <cctype>
#include <cstdlib>
#include <cstring>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"

namespace caduceus {

namespace {

std::vector<std::string> Parse(int argc, char** argv, const char* usage,
                               const std::vector<std::string>& env_args) {
  absl::SetProgramUsageMessage(usage);
  std::vector<std::string> storage;
  storage.reserve(argc + env_args.size());
  bool after_terminator = false;
  for (int i = 0; i < argc; ++i) {
    // Environment values go right after argv[0]: absl keeps the last value of a repeated flag,
    // so the command line overrides them.
    if (i == 1) storage.insert(storage.end(), env_args.begin(), env_args.end());
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
  if (argc == 1) {
    for (const std::string& e : env_args) storage.push_back(e);
  }
  std::vector<char*> args;
  for (auto& s : storage) args.push_back(s.data());
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  return std::vector<std::string>(rest.begin(), rest.end());
}

}  // namespace

std::vector<std::string> ParseFlags(int argc, char** argv, const char* usage) {
  return Parse(argc, argv, usage, {});
}

std::vector<std::string> ParseFlagsWithEnv(int argc, char** argv, const char* usage,
                                           const std::string& env_prefix) {
  std::vector<std::string> env_args;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    // Only this program's flags: absl's own (--flagfile, --help...) stay command-line only.
    if (flag->Filename().find("absl/") != std::string::npos) continue;
    std::string var = env_prefix;
    for (char c : name) var.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(c)));
    if (const char* value = std::getenv(var.c_str()); value != nullptr) {
      env_args.push_back("--" + std::string(name) + "=" + value);
    }
  }
  return Parse(argc, argv, usage, env_args);
}

}  // namespace caduceus
