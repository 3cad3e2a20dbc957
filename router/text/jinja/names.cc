#include "router/text/jinja/names.h"

#include "absl/container/flat_hash_map.h"

namespace caduceus::text::jinja {
namespace {

template <typename E>
std::optional<E> Lookup(const absl::flat_hash_map<std::string_view, E>& table, std::string_view name) {
  auto it = table.find(name);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

const absl::flat_hash_map<std::string_view, Filter>& Filters() {
  static const auto* table = new absl::flat_hash_map<std::string_view, Filter>{
      {"trim", Filter::kTrim},       {"length", Filter::kLength},   {"count", Filter::kLength},
      {"tojson", Filter::kToJson},   {"upper", Filter::kUpper},     {"lower", Filter::kLower},
      {"default", Filter::kDefault}, {"d", Filter::kDefault},       {"first", Filter::kFirst},
      {"last", Filter::kLast},       {"join", Filter::kJoin},       {"string", Filter::kString},
      {"items", Filter::kItems},     {"list", Filter::kList},       {"int", Filter::kInt},
      {"float", Filter::kFloat},     {"capitalize", Filter::kCapitalize},
      {"title", Filter::kTitle},     {"replace", Filter::kReplace}, {"reject", Filter::kReject},
      {"select", Filter::kSelect},   {"abs", Filter::kAbs},         {"round", Filter::kRound},
  };
  return *table;
}

const absl::flat_hash_map<std::string_view, Test>& Tests() {
  static const auto* table = new absl::flat_hash_map<std::string_view, Test>{
      {"defined", Test::kDefined},   {"undefined", Test::kUndefined}, {"none", Test::kNone},
      {"string", Test::kString},     {"number", Test::kNumber},       {"integer", Test::kInteger},
      {"float", Test::kFloat},       {"boolean", Test::kBoolean},     {"true", Test::kTrue},
      {"false", Test::kFalse},       {"mapping", Test::kMapping},     {"iterable", Test::kIterable},
      {"sequence", Test::kSequence}, {"odd", Test::kOdd},             {"even", Test::kEven},
      {"equalto", Test::kEqualTo},   {"eq", Test::kEqualTo},          {"lower", Test::kLower},
      {"upper", Test::kUpper},
  };
  return *table;
}

const absl::flat_hash_map<std::string_view, Function>& Functions() {
  static const auto* table = new absl::flat_hash_map<std::string_view, Function>{
      {"raise_exception", Function::kRaiseException},
      {"strftime_now", Function::kStrftimeNow},
      {"namespace", Function::kNamespace},
      {"range", Function::kRange},
  };
  return *table;
}

const absl::flat_hash_map<std::string_view, Method>& Methods() {
  static const auto* table = new absl::flat_hash_map<std::string_view, Method>{
      {"strip", Method::kStrip},     {"lstrip", Method::kLstrip},
      {"rstrip", Method::kRstrip},   {"startswith", Method::kStartsWith},
      {"endswith", Method::kEndsWith}, {"split", Method::kSplit},
      {"upper", Method::kUpper},     {"lower", Method::kLower},
      {"title", Method::kTitle},     {"capitalize", Method::kCapitalize},
      {"replace", Method::kReplace}, {"items", Method::kItems},
      {"keys", Method::kKeys},       {"values", Method::kValues},
      {"get", Method::kGet},
  };
  return *table;
}

}  // namespace

bool IsUnsupportedTag(std::string_view name) {
  static constexpr std::string_view kTags[] = {
      "macro", "endmacro", "call", "endcall", "include", "import", "from", "extends", "block",
      "endblock", "filter", "endfilter", "with", "endwith", "raw", "endraw", "autoescape",
      "endautoescape", "generation", "endgeneration", "do", "endset", "trans", "pluralize"};
  for (std::string_view t : kTags) {
    if (t == name) return true;
  }
  return false;
}

std::optional<Filter> LookupFilter(std::string_view name) { return Lookup(Filters(), name); }
std::optional<Test> LookupTest(std::string_view name) { return Lookup(Tests(), name); }
std::optional<Function> LookupFunction(std::string_view name) { return Lookup(Functions(), name); }
std::optional<Method> LookupMethod(std::string_view name) { return Lookup(Methods(), name); }

}  // namespace caduceus::text::jinja
