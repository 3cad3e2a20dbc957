// A minimal ordered JSON value for caduceus-bench-kernels' report (the benchmark must build on
// machines that have only a compiler and CUDA, so no JSON library). Objects keep insertion order;
// non-finite numbers are written as null (the report checker flags them).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace caduceus::kernels::bench {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Json() = default;
  Json(bool v) : type_(Type::kBool), bool_(v) {}  // NOLINT(google-explicit-constructor)
  template <typename T,
            std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Json(T v) : type_(Type::kNumber), number_(static_cast<double>(v)) {}  // NOLINT
  Json(const char* v) : type_(Type::kString), string_(v) {}             // NOLINT
  Json(std::string v) : type_(Type::kString), string_(std::move(v)) {}  // NOLINT

  static Json Object() {
    Json j;
    j.type_ = Type::kObject;
    return j;
  }
  static Json Array() {
    Json j;
    j.type_ = Type::kArray;
    return j;
  }

  // Object member (replaced when the key exists). Returns the stored value.
  Json& Set(const std::string& key, Json value) {
    for (auto& [k, v] : members_) {
      if (k == key) return v = std::move(value);
    }
    members_.emplace_back(key, std::move(value));
    return members_.back().second;
  }
  Json& Push(Json value) {
    items_.push_back(std::move(value));
    return items_.back();
  }
  const Json* Find(const std::string& key) const {
    for (const auto& [k, v] : members_) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  Json* FindMutable(const std::string& key) {
    for (auto& [k, v] : members_) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  Type type() const { return type_; }
  double number() const { return number_; }

  std::string Dump() const {
    std::string out;
    Write(out);
    return out;
  }

 private:
  static void WriteString(std::string& out, const std::string& s) {
    out += '"';
    for (const char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            out += buf;
          } else {
            out += c;
          }
      }
    }
    out += '"';
  }

  void Write(std::string& out) const {
    switch (type_) {
      case Type::kNull: out += "null"; break;
      case Type::kBool: out += bool_ ? "true" : "false"; break;
      case Type::kNumber: {
        char buf[40];
        if (!std::isfinite(number_)) {
          out += "null";
          break;
        }
        // Integers (byte counts, sizes) exactly; everything else to 6 significant digits.
        if (number_ == std::floor(number_) && std::fabs(number_) < 9.007199254740992e15) {
          std::snprintf(buf, sizeof(buf), "%.0f", number_);
        } else {
          std::snprintf(buf, sizeof(buf), "%.6g", number_);
        }
        out += buf;
        break;
      }
      case Type::kString: WriteString(out, string_); break;
      case Type::kArray:
        out += '[';
        for (size_t i = 0; i < items_.size(); ++i) {
          if (i > 0) out += ',';
          items_[i].Write(out);
        }
        out += ']';
        break;
      case Type::kObject:
        out += '{';
        for (size_t i = 0; i < members_.size(); ++i) {
          if (i > 0) out += ',';
          WriteString(out, members_[i].first);
          out += ':';
          members_[i].second.Write(out);
        }
        out += '}';
        break;
    }
  }

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

}  // namespace caduceus::kernels::bench
