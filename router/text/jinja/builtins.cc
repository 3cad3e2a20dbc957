#include "router/text/jinja/builtins.h"

#include <cctype>
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "router/text/jinja/names.h"

namespace caduceus::text::jinja {
namespace {

size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;  // stray continuation byte: step over it alone
}

// Decodes the code point starting at s[i] (invalid bytes decode as themselves).
uint32_t DecodeAt(std::string_view s, size_t i, size_t* len) {
  const unsigned char lead = s[i];
  size_t n = Utf8Length(lead);
  if (i + n > s.size()) n = 1;
  *len = n;
  if (n == 1) return lead;
  uint32_t cp = lead & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

bool IsUnicodeSpace(uint32_t cp) {
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return true;
  if (cp < 0x80) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 ||
         cp == 0xFEFF;
}

absl::Status ArgError(std::string_view kind, std::string_view name, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(kind), " '", std::string(name), "': ", std::string(what)));
}

const Value* Kwarg(const KwArgs& kwargs, std::string_view key) {
  for (const auto& [k, v] : kwargs) {
    if (k == key) return &v;
  }
  return nullptr;
}

// Argument `index` given positionally or as keyword `key`; nullptr when absent.
const Value* Arg(const std::vector<Value>& args, const KwArgs& kwargs, size_t index,
                 std::string_view key) {
  if (index < args.size()) return &args[index];
  return Kwarg(kwargs, key);
}

std::string AsciiMap(std::string_view s, int (*fn)(int)) {
  std::string out(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(fn(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string Capitalize(std::string_view s) {
  std::string out = AsciiMap(s, [](int c) { return std::tolower(c); });
  if (!out.empty() && static_cast<unsigned char>(out[0]) < 0x80) out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

std::string Title(std::string_view s) {
  std::string out(s);
  bool start = true;
  for (char& c : out) {
    const unsigned char u = c;
    if (u < 0x80 && std::isalpha(u)) {
      c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
      start = false;
    } else {
      start = !(u >= 0x80 || std::isdigit(u));
    }
  }
  return out;
}

absl::StatusOr<std::string> RequireString(const Value& v, std::string_view kind, std::string_view name) {
  if (!v.is_string()) return ArgError(kind, name, absl::StrCat("expected a string, got ", v.TypeName()));
  return v.AsString();
}

// Python str.split(sep=None, maxsplit=-1).
Value Split(std::string_view s, const Value* sep, int64_t maxsplit) {
  ValueList parts;
  if (sep == nullptr || sep->is_none() || sep->is_undefined()) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        std::string_view rest = s.substr(i);
        while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.back()))) rest.remove_suffix(1);
        parts.push_back(Value::String(std::string(rest)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      parts.push_back(Value::String(std::string(s.substr(i, j - i))));
      i = j;
    }
    return Value::List(std::move(parts));
  }
  const std::string& d = sep->AsString();
  size_t start = 0;
  while (true) {
    size_t at = d.empty() ? std::string_view::npos : s.find(d, start);
    if (at == std::string_view::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) {
      parts.push_back(Value::String(std::string(s.substr(start))));
      break;
    }
    parts.push_back(Value::String(std::string(s.substr(start, at - start))));
    start = at + d.size();
  }
  return Value::List(std::move(parts));
}

Value Items(const Value& v) {
  ValueList out;
  for (const auto& [k, item] : v.AsDict()) out.push_back(Value::List({Value::String(k), item}));
  return Value::List(std::move(out));
}

}  // namespace

std::string_view TrimWhitespace(std::string_view s, bool left, bool right) {
  if (left) {
    while (!s.empty()) {
      size_t len = 0;
      if (!IsUnicodeSpace(DecodeAt(s, 0, &len))) break;
      s.remove_prefix(len);
    }
  }
  if (right) {
    while (!s.empty()) {
      size_t start = s.size() - 1;
      while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && s.size() - start < 4) --start;
      size_t len = 0;
      const uint32_t cp = DecodeAt(s, start, &len);
      if (start + len != s.size() || !IsUnicodeSpace(cp)) break;
      s.remove_suffix(len);
    }
  }
  return s;
}

size_t CodePointCount(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) {
    size_t len = 0;
    DecodeAt(s, i, &len);
    i += len;
  }
  return n;
}

std::vector<std::string> SplitCodePoints(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t len = 0;
    DecodeAt(s, i, &len);
    out.emplace_back(s.substr(i, len));
    i += len;
  }
  return out;
}

absl::StatusOr<Value> ApplyFilter(Filter filter, std::string_view name, const Value& input,
                                  const std::vector<Value>& args, const KwArgs& kwargs) {
  constexpr std::string_view kKind = "filter";
  switch (filter) {
    case Filter::kTrim: {
      ASSIGN_OR_RETURN(std::string s, RequireString(input, kKind, name));
      return Value::String(std::string(TrimWhitespace(s)));
    }
    case Filter::kLength:
      if (input.is_string()) return Value::Int(static_cast<int64_t>(CodePointCount(input.AsString())));
      if (input.is_list()) return Value::Int(static_cast<int64_t>(input.AsList().size()));
      if (input.is_mapping()) return Value::Int(static_cast<int64_t>(input.AsDict().size()));
      if (input.is_undefined()) return Value::Int(0);
      return ArgError(kKind, name, absl::StrCat("no length for ", input.TypeName()));
    case Filter::kToJson: {
      const Value* indent = Arg(args, kwargs, 0, "indent");
      int width = 0;
      if (indent != nullptr && indent->kind() == Value::Kind::kInt) width = static_cast<int>(indent->AsInt());
      else if (indent != nullptr && !indent->is_none()) return ArgError(kKind, name, "indent must be an integer");
      std::string out;
      RETURN_IF_ERROR(input.AppendJson(out, width));
      return Value::String(std::move(out));
    }
    case Filter::kUpper:
    case Filter::kLower:
    case Filter::kCapitalize:
    case Filter::kTitle: {
      ASSIGN_OR_RETURN(std::string s, RequireString(input, kKind, name));
      if (filter == Filter::kUpper) return Value::String(AsciiMap(s, [](int c) { return std::toupper(c); }));
      if (filter == Filter::kLower) return Value::String(AsciiMap(s, [](int c) { return std::tolower(c); }));
      if (filter == Filter::kCapitalize) return Value::String(Capitalize(s));
      return Value::String(Title(s));
    }
    case Filter::kDefault: {
      const Value* fallback = Arg(args, kwargs, 0, "default_value");
      const Value* boolean = Arg(args, kwargs, 1, "boolean");
      const bool use_fallback = input.is_undefined() || (boolean != nullptr && boolean->Truthy() && !input.Truthy());
      if (!use_fallback) return input;
      return fallback != nullptr ? *fallback : Value::String("");
    }
    case Filter::kFirst:
    case Filter::kLast: {
      const bool first = filter == Filter::kFirst;
      if (input.is_list()) {
        const ValueList& l = input.AsList();
        if (l.empty()) return Value();
        return first ? l.front() : l.back();
      }
      if (input.is_string()) {
        std::vector<std::string> chars = SplitCodePoints(input.AsString());
        if (chars.empty()) return Value();
        return Value::String(first ? chars.front() : chars.back());
      }
      return ArgError(kKind, name, absl::StrCat("expected a list or string, got ", input.TypeName()));
    }
    case Filter::kJoin: {
      const Value* sep = Arg(args, kwargs, 0, "d");
      std::string separator = sep != nullptr ? sep->ToString() : "";
      if (input.is_string()) return Value::String(absl::StrJoin(SplitCodePoints(input.AsString()), separator));
      if (!input.is_list()) return ArgError(kKind, name, absl::StrCat("expected a list, got ", input.TypeName()));
      std::string out;
      for (size_t i = 0; i < input.AsList().size(); ++i) {
        if (i > 0) out += separator;
        input.AsList()[i].AppendTo(out);
      }
      return Value::String(std::move(out));
    }
    case Filter::kString:
      return Value::String(input.ToString());
    case Filter::kItems:
      if (input.is_undefined()) return Value::List({});
      if (!input.is_mapping()) return ArgError(kKind, name, absl::StrCat("expected a mapping, got ", input.TypeName()));
      return Items(input);
    case Filter::kList: {
      if (input.is_list()) return input;
      ValueList out;
      if (input.is_string()) {
        for (auto& c : SplitCodePoints(input.AsString())) out.push_back(Value::String(std::move(c)));
      } else if (input.is_mapping()) {
        for (const auto& [k, v] : input.AsDict()) out.push_back(Value::String(k));
      } else {
        return ArgError(kKind, name, absl::StrCat("cannot make a list of ", input.TypeName()));
      }
      return Value::List(std::move(out));
    }
    case Filter::kInt:
    case Filter::kFloat: {
      double d = 0;
      if (input.is_number()) {
        d = input.AsNumber();
      } else if (input.kind() == Value::Kind::kBool) {
        d = input.AsBool() ? 1 : 0;
      } else if (input.is_string()) {
        std::string s(TrimWhitespace(input.AsString()));
        char* end = nullptr;
        d = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != '\0') d = 0;  // Jinja falls back to the default, 0
      }
      if (filter == Filter::kInt) return Value::Int(static_cast<int64_t>(std::trunc(d)));
      return Value::Float(d);
    }
    case Filter::kReplace: {
      ASSIGN_OR_RETURN(std::string s, RequireString(input, kKind, name));
      if (args.size() < 2 || !args[0].is_string() || !args[1].is_string()) {
        return ArgError(kKind, name, "expects (old, new) strings");
      }
      if (args[0].AsString().empty()) return Value::String(s);
      return Value::String(absl::StrReplaceAll(s, {{args[0].AsString(), args[1].AsString()}}));
    }
    case Filter::kReject:
    case Filter::kSelect: {
      if (!input.is_list()) return ArgError(kKind, name, absl::StrCat("expected a list, got ", input.TypeName()));
      // The parser guaranteed args[0] names a known test.
      const std::string& test_name = args.at(0).AsString();
      const Test test = *LookupTest(test_name);
      std::vector<Value> test_args(args.begin() + 1, args.end());
      ValueList out;
      for (const Value& item : input.AsList()) {
        ASSIGN_OR_RETURN(bool hit, ApplyTest(test, test_name, item, test_args));
        if (hit == (filter == Filter::kSelect)) out.push_back(item);
      }
      return Value::List(std::move(out));
    }
    case Filter::kAbs:
      if (input.kind() == Value::Kind::kInt) return Value::Int(input.AsInt() < 0 ? -input.AsInt() : input.AsInt());
      if (input.is_number()) return Value::Float(std::fabs(input.AsNumber()));
      return ArgError(kKind, name, "expected a number");
    case Filter::kRound: {
      if (!input.is_number()) return ArgError(kKind, name, "expected a number");
      const Value* precision = Arg(args, kwargs, 0, "precision");
      const int64_t p = precision != nullptr && precision->kind() == Value::Kind::kInt ? precision->AsInt() : 0;
      const double scale = std::pow(10.0, static_cast<double>(p));
      return Value::Float(std::round(input.AsNumber() * scale) / scale);
    }
  }
  return ArgError(kKind, name, "not implemented");
}

absl::StatusOr<bool> ApplyTest(Test test, std::string_view name, const Value& input,
                               const std::vector<Value>& args) {
  using K = Value::Kind;
  switch (test) {
    case Test::kDefined: return !input.is_undefined();
    case Test::kUndefined: return input.is_undefined();
    case Test::kNone: return input.is_none();
    case Test::kString: return input.is_string();
    case Test::kNumber: return input.is_number();
    case Test::kInteger: return input.kind() == K::kInt;
    case Test::kFloat: return input.kind() == K::kFloat;
    case Test::kBoolean: return input.kind() == K::kBool;
    case Test::kTrue: return input.kind() == K::kBool && input.AsBool();
    case Test::kFalse: return input.kind() == K::kBool && !input.AsBool();
    case Test::kMapping: return input.is_mapping();
    case Test::kIterable: return input.is_list() || input.is_string() || input.is_mapping();
    case Test::kSequence: return input.is_list() || input.is_string() || input.is_mapping();
    case Test::kOdd:
    case Test::kEven:
      if (input.kind() != K::kInt) return ArgError("test", name, "expected an integer");
      return (input.AsInt() % 2 != 0) == (test == Test::kOdd);
    case Test::kEqualTo:
      if (args.empty()) return ArgError("test", name, "needs a value to compare with");
      return input.Equals(args[0]);
    case Test::kLower:
    case Test::kUpper: {
      if (!input.is_string()) return false;
      const std::string& s = input.AsString();
      const std::string mapped = test == Test::kLower ? AsciiMap(s, [](int c) { return std::tolower(c); })
                                                      : AsciiMap(s, [](int c) { return std::toupper(c); });
      return mapped == s;
    }
  }
  return ArgError("test", name, "not implemented");
}

absl::StatusOr<Value> CallMethod(Method method, std::string_view name, const Value& object,
                                 const std::vector<Value>& args) {
  constexpr std::string_view kKind = "method";
  auto string_arg = [&](size_t i) -> absl::StatusOr<std::string> {
    if (i >= args.size() || !args[i].is_string()) {
      return ArgError(kKind, name, absl::StrCat("argument ", i + 1, " must be a string"));
    }
    return args[i].AsString();
  };
  switch (method) {
    case Method::kItems:
    case Method::kKeys:
    case Method::kValues:
    case Method::kGet: {
      if (!object.is_mapping()) {
        return ArgError(kKind, name, absl::StrCat("needs a mapping, got ", object.TypeName()));
      }
      if (method == Method::kItems) return Items(object);
      if (method == Method::kGet) {
        ASSIGN_OR_RETURN(std::string key, string_arg(0));
        const Value* found = object.Find(key);
        if (found != nullptr) return *found;
        return args.size() > 1 ? args[1] : Value::None();
      }
      ValueList out;
      for (const auto& [k, v] : object.AsDict()) {
        out.push_back(method == Method::kKeys ? Value::String(k) : v);
      }
      return Value::List(std::move(out));
    }
    default:
      break;
  }
  if (!object.is_string()) {
    return ArgError(kKind, name, absl::StrCat("needs a string, got ", object.TypeName()));
  }
  const std::string& s = object.AsString();
  switch (method) {
    case Method::kStrip:
    case Method::kLstrip:
    case Method::kRstrip: {
      const bool left = method != Method::kRstrip;
      const bool right = method != Method::kLstrip;
      if (args.empty() || args[0].is_none()) return Value::String(std::string(TrimWhitespace(s, left, right)));
      ASSIGN_OR_RETURN(std::string chars, string_arg(0));
      std::string_view v = s;
      while (left && !v.empty() && chars.find(v.front()) != std::string::npos) v.remove_prefix(1);
      while (right && !v.empty() && chars.find(v.back()) != std::string::npos) v.remove_suffix(1);
      return Value::String(std::string(v));
    }
    case Method::kStartsWith:
    case Method::kEndsWith: {
      ASSIGN_OR_RETURN(std::string affix, string_arg(0));
      const bool hit = method == Method::kStartsWith
                           ? std::string_view(s).substr(0, affix.size()) == affix
                           : s.size() >= affix.size() && s.compare(s.size() - affix.size(), affix.size(), affix) == 0;
      return Value::Bool(hit);
    }
    case Method::kSplit: {
      const Value* sep = args.empty() ? nullptr : &args[0];
      if (sep != nullptr && !sep->is_string() && !sep->is_none()) return ArgError(kKind, name, "separator must be a string");
      if (sep != nullptr && sep->is_string() && sep->AsString().empty()) return ArgError(kKind, name, "empty separator");
      int64_t maxsplit = -1;
      if (args.size() > 1 && args[1].kind() == Value::Kind::kInt) maxsplit = args[1].AsInt();
      return Split(s, sep, maxsplit);
    }
    case Method::kUpper: return Value::String(AsciiMap(s, [](int c) { return std::toupper(c); }));
    case Method::kLower: return Value::String(AsciiMap(s, [](int c) { return std::tolower(c); }));
    case Method::kTitle: return Value::String(Title(s));
    case Method::kCapitalize: return Value::String(Capitalize(s));
    case Method::kReplace: {
      ASSIGN_OR_RETURN(std::string from, string_arg(0));
      ASSIGN_OR_RETURN(std::string to, string_arg(1));
      if (from.empty()) return Value::String(s);
      return Value::String(absl::StrReplaceAll(s, {{from, to}}));
    }
    default:
      break;
  }
  return ArgError(kKind, name, "not implemented");
}

}  // namespace caduceus::text::jinja
