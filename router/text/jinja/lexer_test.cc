#include "router/text/jinja/lexer.h"

#include "gtest/gtest.h"

namespace caduceus::text::jinja {
namespace {

std::vector<Token> Lex(std::string_view src) {
  auto tokens = Tokenize(src);
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  return tokens.ok() ? *tokens : std::vector<Token>{};
}

std::string TextOf(const std::vector<Token>& tokens) {
  std::string out;
  for (const Token& t : tokens) {
    if (t.kind == TokenKind::kText) out += t.text;
  }
  return out;
}

TEST(LexerTest, TrimBlocksDropsNewlineAfterBlockTag) {
  EXPECT_EQ(TextOf(Lex("{% if x %}\nA\n{% endif %}\nB")), "A\nB");
  // Expression tags keep their newline.
  EXPECT_EQ(TextOf(Lex("{{ x }}\nA")), "\nA");
}

TEST(LexerTest, LstripBlocksDropsIndentBeforeBlockTagOnly) {
  EXPECT_EQ(TextOf(Lex("  \t{% if x %}A{% endif %}")), "A");
  EXPECT_EQ(TextOf(Lex("  {{ x }}")), "  ");
  EXPECT_EQ(TextOf(Lex("text  {% if x %}A{% endif %}")), "text  A");  // not at line start
}

TEST(LexerTest, DashStripsAllWhitespaceIncludingNewlines) {
  EXPECT_EQ(TextOf(Lex("A \n\t {{- x -}} \n B")), "AB");
  EXPECT_EQ(TextOf(Lex("A \n {#- c -#} \n B")), "AB");
}

TEST(LexerTest, OneTrailingNewlineDropped) {
  EXPECT_EQ(TextOf(Lex("A\n\n")), "A\n");
}

TEST(LexerTest, StringEscapesAndLines) {
  auto tokens = Lex("line1\n{{ 'a\\n\\t\\'\\\\\\u00e9' }}");
  ASSERT_GE(tokens.size(), 3u);
  EXPECT_EQ(tokens[2].kind, TokenKind::kString);
  EXPECT_EQ(tokens[2].text, "a\n\t'\\\xc3\xa9");
  EXPECT_EQ(tokens[2].line, 2);
}

TEST(LexerTest, DictClosingBracesAreNotExpressionEnd) {
  auto tokens = Lex("{{ {'a': {'b': 1}} }}");
  ASSERT_FALSE(tokens.empty());
  EXPECT_EQ(tokens[tokens.size() - 2].kind, TokenKind::kCloseExpression);
}

TEST(LexerTest, ErrorsNameTheLine) {
  for (const char* bad : {"a\n{{ 'open", "a\nb\n{% if", "{# never closed", "{{ 1 ? 2 }}", "{{ '\\q' }}"}) {
    auto tokens = Tokenize(bad);
    ASSERT_FALSE(tokens.ok()) << bad;
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(tokens.status().message().find("line "), absl::string_view::npos) << tokens.status();
  }
  EXPECT_NE(Tokenize("a\nb\n{% if").status().message().find("line 3"), absl::string_view::npos);
}

}  // namespace
}  // namespace caduceus::text::jinja
