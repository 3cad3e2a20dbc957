// UTF-8 scanning shared by the pre-tokenizer and the incremental detokenizer. Both must treat
// malformed input the same way: an ill-formed sequence is replaced by U+FFFD per "maximal subpart"
// (Unicode ch. 3, the WHATWG decoder's rule), so byte streams cut mid-character behave predictably.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace caduceus::text {

enum class Utf8Kind {
  kValid,       // a complete, well-formed scalar value of `length` bytes
  kInvalid,     // an ill-formed maximal subpart of `length` (>= 1) bytes
  kIncomplete,  // a well-formed prefix that the end of the buffer cut short
};

struct Utf8Step {
  Utf8Kind kind;
  size_t length;
  char32_t code_point;  // U+FFFD unless kind == kValid
};

// Looks at the sequence starting at s[pos] (pos < s.size()).
Utf8Step NextUtf8(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of `c` (a scalar value) to `out`.
void AppendUtf8(char32_t c, std::string& out);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Copies `s`, replacing every ill-formed or truncated subpart with U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// Whether `s` is well-formed UTF-8 (the same notion as the pre-tokenizer's).
bool IsValidUtf8(std::string_view s);

}  // namespace caduceus::text
