// Test helpers: build safetensors bytes by hand (independently of any writer under test) and
// put them in temporary directories.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace caduceus::model::testing {

// 8-byte little-endian header length, the header text, then the data section.
inline std::string SafetensorsBytes(const std::string& header_text, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header_text + data;
}

inline std::string SafetensorsBytes(const nlohmann::json& header, const std::string& data) {
  return SafetensorsBytes(header.dump(), data);
}

inline std::string MakeTempDir(const std::string& tag) {
  std::string tmpl = ::testing::TempDir() + "/" + tag + "_XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  return tmpl;
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

template <typename T>
std::string RawBytes(std::initializer_list<T> values) {
  std::string s(values.size() * sizeof(T), '\0');
  size_t i = 0;
  for (T v : values) std::memcpy(s.data() + sizeof(T) * i++, &v, sizeof(T));
  return s;
}

}  // namespace caduceus::model::testing
