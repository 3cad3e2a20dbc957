#include "router/text/jinja/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace caduceus::text::jinja {

Value Value::List(ValueList items) {
  return Value(Kind::kList, std::make_shared<ValueList>(std::move(items)));
}
Value Value::Dict(ValueDict items) {
  return Value(Kind::kDict, std::make_shared<ValueDict>(std::move(items)));
}
bool Value::Reaches(const Value& ns) const {
  switch (kind_) {
    case Kind::kList:
      for (const Value& v : AsList()) {
        if (v.Reaches(ns)) return true;
      }
      return false;
    case Kind::kNamespace:
      if (&AsDict() == &ns.AsDict()) return true;
      [[fallthrough]];
    case Kind::kDict:
      for (const auto& [k, v] : AsDict()) {
        if (v.Reaches(ns)) return true;
      }
      return false;
    default:
      return false;
  }
}

Value Value::Namespace(ValueDict items) {
  return Value(Kind::kNamespace, std::make_shared<ValueDict>(std::move(items)));
}

template <typename Json>
absl::StatusOr<Value> Value::FromJson(const Json& json, int max_depth) {
  if (max_depth <= 0) return absl::InvalidArgumentError("template context nests too deeply");
  switch (json.type()) {
    case nlohmann::detail::value_t::null:
    case nlohmann::detail::value_t::discarded:
      return None();
    case nlohmann::detail::value_t::boolean:
      return Bool(json.template get<bool>());
    case nlohmann::detail::value_t::number_integer:
      return Int(json.template get<int64_t>());
    case nlohmann::detail::value_t::number_unsigned:
      return Int(static_cast<int64_t>(json.template get<uint64_t>()));
    case nlohmann::detail::value_t::number_float:
      return Float(json.template get<double>());
    case nlohmann::detail::value_t::string:
      return String(json.template get<std::string>());
    case nlohmann::detail::value_t::array: {
      ValueList items;
      items.reserve(json.size());
      for (const auto& item : json) {
        ASSIGN_OR_RETURN(Value v, FromJson(item, max_depth - 1));
        items.push_back(std::move(v));
      }
      return List(std::move(items));
    }
    case nlohmann::detail::value_t::object: {
      ValueDict items;
      items.reserve(json.size());
      for (const auto& [key, item] : json.items()) {
        ASSIGN_OR_RETURN(Value v, FromJson(item, max_depth - 1));
        items.emplace_back(key, std::move(v));
      }
      return Dict(std::move(items));
    }
    case nlohmann::detail::value_t::binary:
      break;
  }
  return absl::InvalidArgumentError("unsupported JSON value in template context");
}

template absl::StatusOr<Value> Value::FromJson(const nlohmann::json&, int);
template absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json&, int);

double Value::AsNumber() const {
  return kind_ == Kind::kInt ? static_cast<double>(AsInt()) : std::get<double>(data_);
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return AsBool();
    case Kind::kInt:
      return AsInt() != 0;
    case Kind::kFloat:
      return AsNumber() != 0.0;
    case Kind::kString:
      return !AsString().empty();
    case Kind::kList:
      return !AsList().empty();
    case Kind::kDict:
      return !AsDict().empty();
    case Kind::kNamespace:
      return true;
  }
  return false;
}

const Value* Value::Find(std::string_view key) const {
  if (!is_mapping()) return nullptr;
  for (const auto& [k, v] : AsDict()) {
    if (k == key) return &v;
  }
  return nullptr;
}

namespace {

// Shortest round-trip form, which is what JavaScript's Number#toString prints for everyday
// magnitudes; integral floats print as "2.0" like Python (and @huggingface/jinja's FloatValue).
void AppendFloat(std::string& out, double d, bool json) {
  if (std::isnan(d)) {
    out += json ? "null" : "nan";
    return;
  }
  if (std::isinf(d)) {
    out += json ? "null" : (d > 0 ? "inf" : "-inf");
    return;
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
  std::string_view text(buf, end - buf);
  out += text;
  if (!json && text.find_first_of(".e") == std::string_view::npos) out += ".0";
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void Value::AppendTo(std::string& out) const {
  switch (kind_) {
    case Kind::kUndefined:
      return;
    // @huggingface/jinja prints JavaScript spellings here (Python Jinja would print None/True).
    case Kind::kNone:
      out += "null";
      return;
    case Kind::kBool:
      out += AsBool() ? "true" : "false";
      return;
    case Kind::kInt:
      out += std::to_string(AsInt());
      return;
    case Kind::kFloat:
      AppendFloat(out, AsNumber(), /*json=*/false);
      return;
    case Kind::kString:
      out += AsString();
      return;
    case Kind::kList:
    case Kind::kDict:
    case Kind::kNamespace:
      // Containers print as one-line JSON, as @huggingface/jinja does. Depth is bounded by how
      // the value was built (FromJson caps it), so the status can only be OK here.
      (void)AppendJson(out, 0);
      return;
  }
}

std::string Value::ToString() const {
  std::string out;
  AppendTo(out);
  return out;
}

absl::Status Value::AppendJson(std::string& out, int indent, int depth) const {
  if (depth > 256) return absl::InvalidArgumentError("tojson: value nests too deeply");
  const std::string item_sep = indent > 0 ? "," : ", ";
  auto newline = [&](int level) {
    if (indent <= 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * level, ' ');
  };
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      out += "null";
      return absl::OkStatus();
    case Kind::kBool:
      out += AsBool() ? "true" : "false";
      return absl::OkStatus();
    case Kind::kInt:
      out += std::to_string(AsInt());
      return absl::OkStatus();
    case Kind::kFloat:
      AppendFloat(out, AsNumber(), /*json=*/true);
      return absl::OkStatus();
    case Kind::kString:
      AppendJsonString(out, AsString());
      return absl::OkStatus();
    case Kind::kList: {
      const ValueList& items = AsList();
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += item_sep;
        newline(depth + 1);
        RETURN_IF_ERROR(items[i].AppendJson(out, indent, depth + 1));
      }
      if (!items.empty()) newline(depth);
      out += ']';
      return absl::OkStatus();
    }
    case Kind::kDict:
    case Kind::kNamespace: {
      const ValueDict& items = AsDict();
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += item_sep;
        newline(depth + 1);
        AppendJsonString(out, items[i].first);
        out += ": ";
        RETURN_IF_ERROR(items[i].second.AppendJson(out, indent, depth + 1));
      }
      if (!items.empty()) newline(depth);
      out += '}';
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (kind_ == Kind::kInt && other.kind_ == Kind::kInt) return AsInt() == other.AsInt();
    return AsNumber() == other.AsNumber();
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return AsBool() == other.AsBool();
    case Kind::kString:
      return AsString() == other.AsString();
    case Kind::kList: {
      const ValueList& a = AsList();
      const ValueList& b = other.AsList();
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].Equals(b[i])) return false;
      }
      return true;
    }
    case Kind::kDict:
    case Kind::kNamespace: {
      const ValueDict& a = AsDict();
      if (a.size() != other.AsDict().size()) return false;
      for (const auto& [k, v] : a) {
        const Value* w = other.Find(k);
        if (w == nullptr || !v.Equals(*w)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNone: return "none";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "string";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "namespace";
  }
  return "?";
}

}  // namespace caduceus::text::jinja
