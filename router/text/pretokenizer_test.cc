#include "router/text/pretokenizer.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/text/tokenizer_test_util.h"

namespace caduceus::text {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : Llama3PreTokenize(text)) out.emplace_back(p);
  return out;
}

// Expectations worked out by hand from the regex's leftmost-first backtracking semantics.
TEST(PreTokenizerTest, WordsNumbersPunctuation) {
  EXPECT_THAT(Split("Hello world"), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split("1234567"), ElementsAre("123", "456", "7"));
  EXPECT_THAT(Split("x12y"), ElementsAre("x", "12", "y"));
  EXPECT_THAT(Split("hello!!\n\nworld"), ElementsAre("hello", "!!\n\n", "world"));
  EXPECT_THAT(Split("a, b."), ElementsAre("a", ",", " b", "."));
  EXPECT_THAT(Split(" ?!"), ElementsAre(" ?!"));
  EXPECT_THAT(Split("\t?"), ElementsAre("\t", "?"));
  EXPECT_THAT(Split("(hi)"), ElementsAre("(hi", ")"));
  EXPECT_THAT(Split("3.14"), ElementsAre("3", ".", "14"));
  EXPECT_THAT(Split(""), ElementsAre());
}

TEST(PreTokenizerTest, Contractions) {
  EXPECT_THAT(Split("don't"), ElementsAre("don", "'t"));
  EXPECT_THAT(Split("DON'T"), ElementsAre("DON", "'T"));
  EXPECT_THAT(Split("we'll"), ElementsAre("we", "'ll"));
  EXPECT_THAT(Split("We'Ll"), ElementsAre("We", "'Ll"));
  EXPECT_THAT(Split("they've"), ElementsAre("they", "'ve"));
  EXPECT_THAT(Split("o'clock"), ElementsAre("o", "'clock"));
  EXPECT_THAT(Split("'x"), ElementsAre("'x"));
  // (?i) in Oniguruma/Rust folds U+017F LONG S to 's' (JavaScript's rewrite of the regex does not).
  EXPECT_THAT(Split("x'\u017Ft"), ElementsAre("x", "'\u017F", "t"));
}

TEST(PreTokenizerTest, Whitespace) {
  EXPECT_THAT(Split("a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Split("a b"), ElementsAre("a", " b"));
  EXPECT_THAT(Split("a\tb"), ElementsAre("a", "\tb"));
  EXPECT_THAT(Split("a \tb"), ElementsAre("a", " ", "\tb"));
  EXPECT_THAT(Split(" \n \n  x"), ElementsAre(" \n \n", " ", " x"));
  EXPECT_THAT(Split("a\r\n\r\nb"), ElementsAre("a", "\r\n\r\n", "b"));
  EXPECT_THAT(Split("end   "), ElementsAre("end", "   "));
  EXPECT_THAT(Split("x\n  "), ElementsAre("x", "\n", "  "));
  EXPECT_THAT(Split("   "), ElementsAre("   "));
  EXPECT_THAT(Split(" 1"), ElementsAre(" ", "1"));
}

TEST(PreTokenizerTest, UnicodeClasses) {
  // U+0085 NEXT LINE is \s for Oniguruma/Rust (White_Space) but not for JavaScript.
  EXPECT_THAT(Split("a\u0085\u0085b"), ElementsAre("a", "\u0085", "\u0085b"));
  // U+FEFF is \s for JavaScript only; here it is a format character, so punctuation-like.
  EXPECT_THAT(Split("a\uFEFF\uFEFF b"), ElementsAre("a", "\uFEFF\uFEFF", " b"));
  EXPECT_THAT(Split("caf\u00e9 na\u00efve"), ElementsAre("caf\u00e9", " na\u00efve"));
  // Combining marks are not \p{L}: they prefix the next letter run.
  EXPECT_THAT(Split("e\u0301t"), ElementsAre("e", "\u0301t"));
  EXPECT_THAT(Split("\u0663\u0664\u0665\u0666"), ElementsAre("\u0663\u0664\u0665", "\u0666"));
  EXPECT_THAT(Split("\u00bd\u00be"), ElementsAre("\u00bd\u00be"));  // vulgar fractions are \p{N}
  EXPECT_THAT(Split("a\u3000\u3000b"), ElementsAre("a", "\u3000", "\u3000b"));
}

TEST(PreTokenizerTest, IllFormedUtf8KeepsBytes) {
  EXPECT_THAT(Split("ab\xff" "cd"), ElementsAre("ab", "\xff" "cd"));
  EXPECT_THAT(Split("x\xe2\x82"), ElementsAre("x", "\xe2\x82"));
}

TEST(PreTokenizerTest, PiecesConcatenateToInputForCorpus) {
  const nlohmann::json corpus = testing::ReadJson(testing::FixturesDir() + "/tokenizer/corpus.json");
  for (const auto& c : corpus) {
    const std::string text = c.get<std::string>();
    std::string joined;
    for (std::string_view p : Llama3PreTokenize(text)) {
      EXPECT_FALSE(p.empty());
      joined.append(p);
    }
    EXPECT_EQ(joined, text);
  }
}

}  // namespace
}  // namespace caduceus::text
