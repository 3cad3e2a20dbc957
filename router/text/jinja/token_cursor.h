// Read position over the token list for the parser, with the small lookahead/expect helpers
// and error formatting (every message carries the template line).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "router/text/jinja/lexer.h"

namespace caduceus::text::jinja {

class TokenCursor {
 protected:
  // `tokens` ends with a kEnd token (as Tokenize produces); reads past it keep returning it.
  explicit TokenCursor(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  const Token& Peek(size_t ahead = 0) const {
    const size_t i = pos_ + ahead;
    return i < t_.size() ? t_[i] : t_.back();
  }
  const Token& Next() {
    const Token& tok = Peek();
    if (pos_ < t_.size() - 1) ++pos_;
    return tok;
  }
  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kOperator && Peek(ahead).text == op;
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kName && Peek(ahead).text == name;
  }
  absl::Status Error(int line, std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("template line ", line, ": ", std::string(what)));
  }
  absl::Status Error(std::string_view what) const { return Error(Peek().line, what); }
  std::string Describe(const Token& tok) const {
    switch (tok.kind) {
      case TokenKind::kEnd: return "end of template";
      case TokenKind::kText: return "template text";
      case TokenKind::kOpenStatement: return "'{%'";
      case TokenKind::kCloseStatement: return "'%}'";
      case TokenKind::kOpenExpression: return "'{{'";
      case TokenKind::kCloseExpression: return "'}}'";
      case TokenKind::kString: return "a string literal";
      default: return absl::StrCat("'", tok.text, "'");
    }
  }
  absl::Status ExpectOp(std::string_view op) {
    if (!IsOp(op)) return Error(absl::StrCat("expected '", std::string(op), "' but found ", Describe(Peek())));
    Next();
    return absl::OkStatus();
  }
  absl::Status ExpectKind(TokenKind kind, std::string_view what) {
    if (Peek().kind != kind) return Error(absl::StrCat("expected ", std::string(what), " but found ", Describe(Peek())));
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != TokenKind::kName) {
      return Error(absl::StrCat("expected a name but found ", Describe(Peek())));
    }
    return Next().text;
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
};

}  // namespace caduceus::text::jinja
