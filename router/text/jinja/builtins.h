// Filters, tests and string/dict methods of the supported Jinja subset. Pure functions of
// their arguments; the evaluator resolves the arguments and passes them in.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "router/text/jinja/ast.h"
#include "router/text/jinja/value.h"

namespace caduceus::text::jinja {

using KwArgs = std::vector<std::pair<std::string, Value>>;

absl::StatusOr<Value> ApplyFilter(Filter filter, std::string_view name, const Value& input,
                                  const std::vector<Value>& args, const KwArgs& kwargs);
absl::StatusOr<bool> ApplyTest(Test test, std::string_view name, const Value& input,
                               const std::vector<Value>& args);
absl::StatusOr<Value> CallMethod(Method method, std::string_view name, const Value& object,
                                 const std::vector<Value>& args);

// Whitespace trimming as Python's str.strip() / JavaScript's trim() do it: ASCII whitespace
// plus the Unicode space separators, decoded from UTF-8 at both ends.
std::string_view TrimWhitespace(std::string_view s, bool left = true, bool right = true);
// Number of Unicode code points (Python's len() of a str).
size_t CodePointCount(std::string_view s);
// Splits UTF-8 into one string per code point (iterating a string yields its characters).
std::vector<std::string> SplitCodePoints(std::string_view s);

}  // namespace caduceus::text::jinja
