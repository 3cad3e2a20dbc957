#include "common/read_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace caduceus {

absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view what) {
  const std::string prefix = what.empty() ? std::string() : absl::StrCat(std::string(what), ": ");
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return absl::NotFoundError(absl::StrCat(prefix, path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return absl::InternalError(absl::StrCat(prefix, path, ": read error"));
  return ss.str();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path, std::string_view flag) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> text = ReadFile(path, flag);
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(std::string(flag), " is empty"));
  return token;
}

}  // namespace caduceus
