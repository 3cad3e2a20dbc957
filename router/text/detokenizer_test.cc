#include "router/text/detokenizer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/text/byte_level_bpe.h"
#include "router/text/tokenizer_test_util.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::text {
namespace {

using ::caduceus::text::testing::Llama3;

bool IsValidUtf8(std::string_view s) { return SanitizeUtf8(s) == s; }

// Id of the single-byte token for `b`.
int32_t ByteId(uint8_t b) {
  auto id = Llama3().TokenToId(ByteLevelEncode(std::string(1, static_cast<char>(b))));
  EXPECT_TRUE(id.has_value()) << int(b);
  return id.value_or(0);
}

TEST(Utf8Test, MaximalSubparts) {
  EXPECT_EQ(SanitizeUtf8("a\xc0\x80" "b"), "a\uFFFD\uFFFD" "b");  // overlong: C0 is never valid
  EXPECT_EQ(SanitizeUtf8("\xed\xa0\x80"), "\uFFFD\uFFFD\uFFFD");   // surrogate
  EXPECT_EQ(SanitizeUtf8("\xf0\x9f\x92"), "\uFFFD");               // truncated 4-byte sequence
  EXPECT_EQ(SanitizeUtf8("\xf4\x90\x80\x80"), "\uFFFD\uFFFD\uFFFD\uFFFD");  // above U+10FFFF
  EXPECT_EQ(SanitizeUtf8("\xe2\x82" "x"), "\uFFFD" "x");
  EXPECT_EQ(SanitizeUtf8("ok \U0001F48A"), "ok \U0001F48A");
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacter) {
  IncrementalDetokenizer detok(&Llama3());
  EXPECT_EQ(*detok.Push(ByteId(0xF0)), "");
  EXPECT_EQ(*detok.Push(ByteId(0x9F)), "");
  EXPECT_EQ(*detok.Push(ByteId(0x92)), "");
  EXPECT_EQ(detok.pending_bytes(), 3u);
  EXPECT_EQ(*detok.Push(ByteId(0x8A)), "\U0001F48A");
  EXPECT_EQ(detok.pending_bytes(), 0u);
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, IllFormedBytesBecomeReplacementChars) {
  IncrementalDetokenizer detok(&Llama3());
  EXPECT_EQ(*detok.Push(ByteId(0xFF)), "\uFFFD");
  EXPECT_EQ(*detok.Push(ByteId(0xE2)), "");
  EXPECT_EQ(*detok.Push(Llama3().Encode("a", false)[0]), "\uFFFD" "a");
  EXPECT_EQ(*detok.Push(ByteId(0xF0)), "");
  EXPECT_EQ(*detok.Push(ByteId(0x9F)), "");
  EXPECT_EQ(detok.Flush(), "\uFFFD");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, SpecialTokensAndErrors) {
  const std::vector<int32_t> ids = {128000, 6151, 128009};
  IncrementalDetokenizer keep(&Llama3());
  IncrementalDetokenizer skip(&Llama3(), /*skip_special=*/true);
  std::string kept, skipped;
  for (int32_t id : ids) {
    kept += *keep.Push(id);
    skipped += *skip.Push(id);
  }
  EXPECT_EQ(kept, "<|begin_of_text|>hi<|eot_id|>");
  EXPECT_EQ(skipped, "hi");
  EXPECT_EQ(keep.Push(128256).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(keep.Push(-5).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IncrementalDetokenizerTest, StreamEqualsDecodeForCorpus) {
  const Tokenizer& tok = Llama3();
  const nlohmann::json expected = testing::ReadJson(testing::FixturesDir() + "/tokenizer/expected_ids.json");
  int held_back = 0;
  for (const char* group : {"plain", "special"}) {
    for (const auto& c : expected[group]) {
      const auto ids = c["ids"].get<std::vector<int32_t>>();
      IncrementalDetokenizer detok(&tok);
      std::string streamed;
      for (int32_t id : ids) {
        auto piece = detok.Push(id);
        ASSERT_TRUE(piece.ok()) << piece.status();
        ASSERT_TRUE(IsValidUtf8(*piece)) << "invalid UTF-8 emitted for " << c["text"].dump();
        held_back += detok.pending_bytes() > 0;
        streamed += *piece;
      }
      const std::string rest = detok.Flush();
      EXPECT_TRUE(IsValidUtf8(rest));
      streamed += rest;
      EXPECT_EQ(streamed, *tok.Decode(ids)) << c["text"].dump();
      EXPECT_EQ(streamed, c["text"].get<std::string>());
    }
  }
  EXPECT_GT(held_back, 10) << "corpus should exercise characters split across tokens";
}

}  // namespace
}  // namespace caduceus::text
