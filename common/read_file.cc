#include "common/read_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

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

}  // namespace caduceus
