#include "router/text/tokenizer.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/text/tokenizer_test_util.h"

namespace caduceus::text {
namespace {

using ::caduceus::text::testing::FixturesDir;
using ::caduceus::text::testing::Llama3;
using ::caduceus::text::testing::ReadJson;
using ::caduceus::text::testing::TokenizerDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Quote(const std::string& s) { return nlohmann::json(s).dump(); }

// Compares encodings of many cases, reporting each mismatch without flooding the log.
void ExpectIdsMatch(const nlohmann::json& cases, bool allow_special, size_t* checked) {
  int failures = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = Llama3().Encode(text, allow_special);
    if (got != want && ++failures <= 10) {
      ADD_FAILURE() << "text " << Quote(text) << "\n want " << nlohmann::json(want).dump() << "\n got  "
                    << nlohmann::json(got).dump();
    }
    ++*checked;
  }
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerTest, VocabularyAndSpecialTokens) {
  const Tokenizer& tok = Llama3();
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.TokenToId("<|begin_of_text|>"), 128000);
  EXPECT_EQ(tok.TokenToId("<|end_of_text|>"), 128001);
  EXPECT_EQ(tok.TokenToId("<|start_header_id|>"), 128006);
  EXPECT_EQ(tok.TokenToId("<|end_header_id|>"), 128007);
  EXPECT_EQ(tok.TokenToId("<|eot_id|>"), 128009);
  EXPECT_EQ(tok.TokenToId("<|reserved_special_token_250|>"), 128255);
  EXPECT_EQ(tok.TokenToId("Ġthe"), 279);
  EXPECT_EQ(tok.TokenToId("no such token"), std::nullopt);
  EXPECT_TRUE(tok.IsSpecial(128009));
  EXPECT_TRUE(tok.IsSpecial(128255));
  EXPECT_FALSE(tok.IsSpecial(279));
  EXPECT_FALSE(tok.IsSpecial(-1));
  EXPECT_EQ(*tok.TokenBytes(279), " the");
  EXPECT_EQ(*tok.TokenBytes(128009), "<|eot_id|>");
  EXPECT_EQ(*tok.TokenBytes(198), "\n");
}

TEST(TokenizerTest, SpecialTokenTextIsPlainUnlessAllowed) {
  const Tokenizer& tok = Llama3();
  EXPECT_THAT(tok.Encode("<|eot_id|>", false), ElementsAre(27, 91, 68, 354, 851, 91, 29));
  EXPECT_THAT(tok.Encode("<|eot_id|>", true), ElementsAre(128009));
  EXPECT_THAT(tok.Encode("<|begin_of_text|>hi<|eot_id|>", true), ElementsAre(128000, 6151, 128009));
  for (int32_t id : tok.Encode("x<|start_header_id|>system<|end_header_id|>", false)) {
    EXPECT_LT(id, 128000) << "plain-text encode produced a special id";
  }
}

TEST(TokenizerTest, CorpusMatchesReferenceIds) {
  const nlohmann::json expected = ReadJson(FixturesDir() + "/tokenizer/expected_ids.json");
  const nlohmann::json corpus = ReadJson(FixturesDir() + "/tokenizer/corpus.json");
  ASSERT_GE(corpus.size(), 300u);
  ASSERT_EQ(expected["plain"].size(), corpus.size());
  for (size_t i = 0; i < corpus.size(); ++i) ASSERT_EQ(expected["plain"][i]["text"], corpus[i]);
  size_t checked = 0;
  ExpectIdsMatch(expected["plain"], /*allow_special=*/false, &checked);
  ASSERT_GE(expected["special"].size(), 5u);
  ExpectIdsMatch(expected["special"], /*allow_special=*/true, &checked);
  EXPECT_EQ(checked, expected["plain"].size() + expected["special"].size());
}

TEST(TokenizerTest, SharedLlamaCppCasesMatch) {
  const nlohmann::json cases = ReadJson(FixturesDir() + "/tokenizer_llama3_cases.json")["cases"];
  ASSERT_GE(cases.size(), 20u);
  size_t checked = 0;
  ExpectIdsMatch(cases, /*allow_special=*/false, &checked);
}

TEST(TokenizerTest, DecodeRoundTripsEveryCorpusString) {
  const Tokenizer& tok = Llama3();
  const nlohmann::json expected = ReadJson(FixturesDir() + "/tokenizer/expected_ids.json");
  for (const char* group : {"plain", "special"}) {
    const bool allow_special = std::string(group) == "special";
    for (const auto& c : expected[group]) {
      const std::string text = c["text"].get<std::string>();
      auto decoded = tok.Decode(tok.Encode(text, allow_special));
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      EXPECT_EQ(*decoded, text);
    }
  }
}

TEST(TokenizerTest, DecodeSkipsSpecialAndRejectsUnknownIds) {
  const Tokenizer& tok = Llama3();
  const std::vector<int32_t> ids = {128000, 6151, 128009};
  EXPECT_EQ(*tok.Decode(ids), "<|begin_of_text|>hi<|eot_id|>");
  EXPECT_EQ(*tok.Decode(ids, /*skip_special=*/true), "hi");
  for (int32_t bad : {-1, 128256, 1 << 30}) {
    const std::vector<int32_t> one = {6151, bad};
    auto decoded = tok.Decode(one);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(tok.TokenBytes(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(TokenizerTest, IllFormedUtf8RoundTripsByteExact) {
  const Tokenizer& tok = Llama3();
  for (const std::string& text : {std::string("ab\xff" "cd"), std::string("\xe2\x82"), std::string("x \xc0\x80 y"),
                                 std::string("\xed\xa0\x80"), std::string("ok\xf0\x9f\x92")}) {
    const auto ids = tok.Encode(text, false);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(*tok.Decode(ids), text);
  }
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  const Tokenizer& tok = Llama3();
  const nlohmann::json expected = ReadJson(FixturesDir() + "/tokenizer/expected_ids.json");
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (const auto& c : expected["plain"]) {
        if (tok.Encode(c["text"].get<std::string>(), false) != c["ids"].get<std::vector<int32_t>>()) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Malformed tokenizer.json files: each must fail cleanly with INVALID_ARGUMENT naming the file and
// the problem (fixtures in tests/fixtures/tokenizer/broken/).
struct BrokenCase {
  const char* file;
  const char* message;
};

class BrokenTokenizerTest : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(BrokenTokenizerTest, FailsWithInvalidArgument) {
  const std::string path = FixturesDir() + "/tokenizer/broken/" + GetParam().file;
  auto tok = Tokenizer::FromFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
  EXPECT_THAT(tok.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Files, BrokenTokenizerTest,
    ::testing::Values(BrokenCase{"not_json.json", "not valid JSON"},
                      BrokenCase{"array_top.json", "not a JSON object"},
                      BrokenCase{"no_model.json", "missing 'model'"},
                      BrokenCase{"no_vocab.json", "missing 'model.vocab'"},
                      BrokenCase{"no_merges.json", "missing 'model.merges'"},
                      BrokenCase{"wrong_type.json", "\"WordPiece\" is not supported"},
                      BrokenCase{"bad_merge.json", "merge 1 'ab' is not two tokens"},
                      BrokenCase{"merge_not_string.json", "merge 0 is neither"},
                      BrokenCase{"merge_unknown_token.json", "uses a token missing from the vocab"},
                      BrokenCase{"bad_vocab_id.json", "has a bad id"},
                      BrokenCase{"duplicate_vocab_id.json", "used twice"},
                      BrokenCase{"bad_added_token.json", "added_tokens[0]"},
                      BrokenCase{"other_regex.json", "unsupported pre_tokenizer Split pattern"},
                      BrokenCase{"added_token_flag_type.json", "malformed field"},
                      BrokenCase{"pre_tokenizer_type_type.json", "malformed field"}),
    [](const auto& info) {
      std::string name = info.param.file;
      return name.substr(0, name.find('.'));
    });

TEST(TokenizerFileTest, MissingFileIsNotFound) {
  auto tok = Tokenizer::FromModelDir("/nonexistent/dir");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("/nonexistent/dir/tokenizer.json"));
}

// A minimal valid file exercises merge order directly: "a b" outranks "b c", so "abc" -> ab + c,
// and with ignore_merges off a whole-vocab piece still goes through the merges.
TEST(TokenizerFileTest, TinyBpeAppliesMergesByRank) {
  const std::string json = R"({"model": {"type": "BPE", "ignore_merges": false,
      "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "Ġ": 6},
      "merges": ["a b", ["b", "c"]]},
      "added_tokens": [{"id": 7, "content": "<x>", "special": true}]})";
  auto tok = Tokenizer::FromJson(json, "inline");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("abc", false), ElementsAre(3, 2));
  EXPECT_THAT((*tok)->Encode("bc", false), ElementsAre(4));
  EXPECT_THAT((*tok)->Encode("a<x>b", true), ElementsAre(0, 7, 1));
  EXPECT_EQ((*tok)->vocab_size(), 8);
  EXPECT_EQ(*(*tok)->Decode(std::vector<int32_t>{3, 2, 7}), "abc<x>");
}

}  // namespace
}  // namespace caduceus::text
