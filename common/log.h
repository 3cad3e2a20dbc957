// Minimal logging facade: one line to stderr with a level and timestamp. Kept tiny so that it
// can be swapped for absl logging once Debian's Abseil ships it completely.
#pragma once

#include <string_view>

namespace caduceus {
enum class LogLevel { kInfo, kWarning, kError };
void LogLine(LogLevel level, std::string_view message);
inline void LogInfo(std::string_view m) { LogLine(LogLevel::kInfo, m); }
inline void LogWarning(std::string_view m) { LogLine(LogLevel::kWarning, m); }
inline void LogError(std::string_view m) { LogLine(LogLevel::kError, m); }
}  // namespace caduceus
