// Splits Jinja source into text, tags and expression tokens. Applies the Hugging Face
// environment settings (trim_blocks, lstrip_blocks, no trailing newline) and `-` whitespace
// control here, so the parser only ever sees final text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace caduceus::text::jinja {

enum class TokenKind {
  kText,            // literal template text (already whitespace-trimmed)
  kOpenStatement,   // {%
  kCloseStatement,  // %}
  kOpenExpression,  // {{
  kCloseExpression, // }}
  kName,            // identifier or keyword
  kString,          // string literal, escapes resolved
  kInteger,
  kFloat,
  kOperator,        // punctuation: == != <= >= // ** + - * / % ~ | . , : ( ) [ ] { } = < >
  kEnd,
};

struct Token {
  TokenKind kind;
  std::string text;
  int line;
};

// Fails (INVALID_ARGUMENT, with the line) on unterminated tags, strings or comments and on
// characters that cannot start a token.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

}  // namespace caduceus::text::jinja
