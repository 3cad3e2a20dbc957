// What several fuzz targets share: the real Llama-3 tokenizer and chat template, loaded once.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include "router/text/chat_template.h"
#include "router/text/tokenizer.h"

namespace caduceus::fuzz {

// CADUCEUS_TOKENIZER_DIR (the environment) or the build's default: tokenizer.json and
// tokenizer_config.json of the real Llama-3 tokenizer. Aborts when they cannot be loaded: a
// fuzzer without its tokenizer would test nothing.
inline std::string TokenizerDir() {
  const char* env = std::getenv("CADUCEUS_TOKENIZER_DIR");
  return env != nullptr && *env != '\0' ? env : CADUCEUS_DEFAULT_TOKENIZER_DIR;
}

inline const text::Tokenizer& Llama3Tokenizer() {
  static const text::Tokenizer* tokenizer = [] {
    auto t = text::Tokenizer::FromModelDir(TokenizerDir());
    if (!t.ok()) {
      std::fprintf(stderr, "fuzz: %s\n", t.status().ToString().c_str());
      std::abort();
    }
    return t->release();
  }();
  return *tokenizer;
}

inline const text::ChatTemplate& Llama3ChatTemplate() {
  static const text::ChatTemplate* chat_template = [] {
    auto t = text::ChatTemplate::FromTokenizerConfig(TokenizerDir() + "/tokenizer_config.json");
    if (!t.ok()) {
      std::fprintf(stderr, "fuzz: %s\n", t.status().ToString().c_str());
      std::abort();
    }
    return t->release();
  }();
  return *chat_template;
}

}  // namespace caduceus::fuzz
