#include "router/text/jinja/lexer.h"

#include <cctype>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace caduceus::text::jinja {
namespace {

// Source after the environment's whitespace rules, with the original line of every byte so
// errors still point at the line the template author sees.
struct Prepared {
  std::string text;
  std::vector<int> line;
};

// Mirrors what jinja2 does with trim_blocks/lstrip_blocks (and what @huggingface/jinja
// emulates with two regexes): drop spaces/tabs that start a line before `{%` or `{#`, and drop
// the newline right after `%}` or `#}`. One trailing newline of the template is dropped too
// (keep_trailing_newline=False).
Prepared Prepare(std::string_view src) {
  if (!src.empty() && src.back() == '\n') src.remove_suffix(1);
  Prepared lstripped;
  lstripped.text.reserve(src.size());
  int line = 1;
  size_t i = 0;
  while (i < src.size()) {
    if (i == 0 || src[i - 1] == '\n') {
      size_t j = i;
      while (j < src.size() && (src[j] == ' ' || src[j] == '\t')) ++j;
      if (j > i && j + 1 < src.size() && src[j] == '{' &&
          (src[j + 1] == '%' || src[j + 1] == '#' || src[j + 1] == '-')) {
        i = j;
      }
    }
    lstripped.text += src[i];
    lstripped.line.push_back(line);
    if (src[i] == '\n') ++line;
    ++i;
  }
  Prepared out;
  out.text.reserve(lstripped.text.size());
  const std::string& s = lstripped.text;
  for (size_t k = 0; k < s.size(); ++k) {
    if (s[k] == '\n' && k >= 2 && s[k - 1] == '}' &&
        (s[k - 2] == '%' || s[k - 2] == '#' || s[k - 2] == '-')) {
      continue;
    }
    out.text += s[k];
    out.line.push_back(lstripped.line[k]);
  }
  return out;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsWordStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsWord(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : p_(Prepare(source)), s_(p_.text) {}

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < s_.size()) {
      if (!AtTagStart()) {
        size_t start = pos_;
        while (pos_ < s_.size() && !AtTagStart()) ++pos_;
        Push(TokenKind::kText, std::string(s_.substr(start, pos_ - start)), start);
        continue;
      }
      const char second = s_[pos_ + 1];
      const size_t tag_start = pos_;
      pos_ += 2;
      const bool strip_before = pos_ < s_.size() && s_[pos_] == '-';
      if (strip_before) {
        ++pos_;
        StripTrailingText();
      }
      absl::Status status;
      if (second == '#') {
        status = SkipComment(tag_start);
      } else {
        status = LexTag(second == '%', tag_start);
      }
      if (!status.ok()) return status;
    }
    tokens_.push_back(Token{TokenKind::kEnd, "", LineAt(s_.size())});
    return std::move(tokens_);
  }

 private:
  bool AtTagStart() const {
    return pos_ + 1 < s_.size() && s_[pos_] == '{' &&
           (s_[pos_ + 1] == '%' || s_[pos_ + 1] == '{' || s_[pos_ + 1] == '#');
  }
  int LineAt(size_t pos) const {
    if (p_.line.empty()) return 1;
    return pos < p_.line.size() ? p_.line[pos] : p_.line.back();
  }
  void Push(TokenKind kind, std::string text, size_t pos) {
    tokens_.push_back(Token{kind, std::move(text), LineAt(pos)});
  }
  absl::Status Error(size_t pos, std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("template line ", LineAt(pos), ": ", std::string(what)));
  }
  // `{%-` / `{{-` / `{#-`: the text before loses all trailing whitespace, newlines included.
  void StripTrailingText() {
    if (tokens_.empty() || tokens_.back().kind != TokenKind::kText) return;
    std::string& t = tokens_.back().text;
    while (!t.empty() && IsSpace(t.back())) t.pop_back();
    if (t.empty()) tokens_.pop_back();
  }
  void SkipLeadingWhitespace() {
    while (pos_ < s_.size() && IsSpace(s_[pos_])) ++pos_;
  }

  absl::Status SkipComment(size_t tag_start) {
    size_t end = s_.find("#}", pos_);
    if (end == std::string_view::npos) return Error(tag_start, "unclosed comment '{#'");
    const bool strip_after = end > pos_ && s_[end - 1] == '-';
    pos_ = end + 2;
    if (strip_after) SkipLeadingWhitespace();
    return absl::OkStatus();
  }

  absl::Status LexTag(bool statement, size_t tag_start) {
    Push(statement ? TokenKind::kOpenStatement : TokenKind::kOpenExpression, "", tag_start);
    int brace_depth = 0;  // `}}` inside a dict literal in an expression is two braces
    while (true) {
      while (pos_ < s_.size() && IsSpace(s_[pos_])) ++pos_;
      if (pos_ >= s_.size()) {
        return Error(tag_start, statement ? "unclosed tag '{%'" : "unclosed expression '{{'");
      }
      const std::string_view rest = s_.substr(pos_);
      const std::string_view close = statement ? "%}" : "}}";
      const bool may_close = statement || brace_depth == 0;
      if (may_close && rest.size() >= 3 && rest[0] == '-' && rest.substr(1, 2) == close) {
        Push(statement ? TokenKind::kCloseStatement : TokenKind::kCloseExpression, "", pos_);
        pos_ += 3;
        SkipLeadingWhitespace();
        return absl::OkStatus();
      }
      if (may_close && rest.substr(0, 2) == close) {
        Push(statement ? TokenKind::kCloseStatement : TokenKind::kCloseExpression, "", pos_);
        pos_ += 2;
        return absl::OkStatus();
      }
      const char c = s_[pos_];
      if (c == '\'' || c == '"') {
        absl::Status status = LexString(c);
        if (!status.ok()) return status;
        continue;
      }
      if (IsDigit(c)) {
        LexNumber();
        continue;
      }
      if (IsWordStart(c)) {
        size_t start = pos_;
        while (pos_ < s_.size() && IsWord(s_[pos_])) ++pos_;
        Push(TokenKind::kName, std::string(s_.substr(start, pos_ - start)), start);
        continue;
      }
      static constexpr std::string_view kTwoChar[] = {"==", "!=", "<=", ">=", "//", "**"};
      bool matched = false;
      for (std::string_view op : kTwoChar) {
        if (rest.substr(0, 2) == op) {
          Push(TokenKind::kOperator, std::string(op), pos_);
          pos_ += 2;
          matched = true;
          break;
        }
      }
      if (matched) continue;
      if (std::string_view("+-*/%~|.,:()[]{}=<>").find(c) != std::string_view::npos) {
        if (c == '{') ++brace_depth;
        if (c == '}') --brace_depth;
        Push(TokenKind::kOperator, std::string(1, c), pos_);
        ++pos_;
        continue;
      }
      return Error(pos_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
    }
  }

  absl::Status LexString(char quote) {
    const size_t start = pos_++;
    std::string value;
    while (true) {
      if (pos_ >= s_.size()) return Error(start, "unterminated string literal");
      char c = s_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos_ >= s_.size()) return Error(start, "unterminated string literal");
      char e = s_[pos_++];
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '0': value += '\0'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case 'x':
        case 'u': {
          const size_t len = e == 'x' ? 2 : 4;
          if (pos_ + len > s_.size()) return Error(start, "bad escape in string literal");
          uint32_t cp = 0;
          for (size_t k = 0; k < len; ++k) {
            const char h = s_[pos_ + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              return Error(start, "bad escape in string literal");
            }
            cp = cp * 16 + (IsDigit(h) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          pos_ += len;
          AppendUtf8(value, cp);
          break;
        }
        default:
          return Error(start, absl::StrCat("unknown escape '\\", std::string(1, e), "' in string literal"));
      }
    }
    Push(TokenKind::kString, std::move(value), start);
    return absl::OkStatus();
  }

  void LexNumber() {
    const size_t start = pos_;
    while (pos_ < s_.size() && IsDigit(s_[pos_])) ++pos_;
    // `x.0.1` style attribute chains never reach here: a number right after `.` stays integer.
    const bool after_dot = !tokens_.empty() && tokens_.back().kind == TokenKind::kOperator &&
                           tokens_.back().text == ".";
    if (!after_dot && pos_ + 1 < s_.size() && s_[pos_] == '.' && IsDigit(s_[pos_ + 1])) {
      ++pos_;
      while (pos_ < s_.size() && IsDigit(s_[pos_])) ++pos_;
      Push(TokenKind::kFloat, std::string(s_.substr(start, pos_ - start)), start);
      return;
    }
    Push(TokenKind::kInteger, std::string(s_.substr(start, pos_ - start)), start);
  }

  Prepared p_;
  std::string_view s_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) {
  return Lexer(source).Run();
}

}  // namespace caduceus::text::jinja
