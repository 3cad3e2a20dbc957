// Runtime value of the Jinja interpreter: the handful of Python-ish types a chat template sees.
// Lists and dicts are shared by pointer so that passing `messages` around never copies it; only
// namespace() objects are ever mutated after construction (by `{% set ns.x = ... %}`).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace caduceus::text::jinja {

class Value;
using ValueList = std::vector<Value>;
// Insertion-ordered, like a Python dict; templates only ever hold a handful of keys.
using ValueDict = std::vector<std::pair<std::string, Value>>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace };

  Value() = default;  // undefined
  static Value None() { return Value(Kind::kNone, std::monostate{}); }
  static Value Bool(bool b) { return Value(Kind::kBool, b); }
  static Value Int(int64_t i) { return Value(Kind::kInt, i); }
  static Value Float(double d) { return Value(Kind::kFloat, d); }
  static Value String(std::string s) { return Value(Kind::kString, std::move(s)); }
  static Value List(ValueList items);
  static Value Dict(ValueDict items);
  static Value Namespace(ValueDict items);
  // Converts JSON data (conversation, tools, extra variables). Fails past `max_depth` nesting.
  // Instantiated for nlohmann::json and nlohmann::ordered_json; only the latter keeps object
  // keys in document order (nlohmann::json sorts them), which matters for `tojson` output.
  template <typename Json>
  static absl::StatusOr<Value> FromJson(const Json& json, int max_depth = 128);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_mapping() const { return kind_ == Kind::kDict || kind_ == Kind::kNamespace; }

  bool AsBool() const { return std::get<bool>(data_); }
  int64_t AsInt() const { return std::get<int64_t>(data_); }
  double AsNumber() const;  // int or float as double
  const std::string& AsString() const { return std::get<std::string>(data_); }
  const ValueList& AsList() const { return *std::get<std::shared_ptr<ValueList>>(data_); }
  const ValueDict& AsDict() const { return *std::get<std::shared_ptr<ValueDict>>(data_); }
  // Namespaces are the only mutable containers; the pointer is shared by every copy.
  ValueDict& MutableDict() const { return *std::get<std::shared_ptr<ValueDict>>(data_); }

  // Python truthiness: undefined/none/false/0/""/[]/{} are false.
  bool Truthy() const;
  // nullptr when absent.
  const Value* Find(std::string_view key) const;

  // Text as `{{ value }}` prints it. Follows @huggingface/jinja (the reference renderer of the
  // fixtures): undefined prints "", none "null", booleans "true"/"false", containers as JSON.
  void AppendTo(std::string& out) const;
  std::string ToString() const;
  // JSON as the `tojson` filter writes it (indent <= 0: one line with ", " and ": ").
  absl::Status AppendJson(std::string& out, int indent, int depth = 0) const;

  // Whether this value is the namespace `ns`, or contains it at any depth (through lists, dicts
  // and other namespaces). Assigning such a value into `ns` would make a reference cycle, which
  // shared ownership never frees.
  bool Reaches(const Value& ns) const;

  // Python `==` (1 == 1.0, deep list/dict comparison).
  bool Equals(const Value& other) const;
  const char* TypeName() const;

 private:
  using Data = std::variant<std::monostate, bool, int64_t, double, std::string,
                            std::shared_ptr<ValueList>, std::shared_ptr<ValueDict>>;
  Value(Kind kind, Data data) : kind_(kind), data_(std::move(data)) {}

  Kind kind_ = Kind::kUndefined;
  Data data_;
};

// Appends `s` as a JSON string literal with the escapes JSON.stringify uses (UTF-8 kept as is).
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace caduceus::text::jinja
