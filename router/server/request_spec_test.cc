// Request validation: every bad input is INVALID_ARGUMENT with a message naming the field.
#include "router/server/request_spec.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace caduceus::router {
namespace {

class RequestSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
    ASSERT_NE(dir, nullptr);
    const std::string model_dir = std::string(dir) + "/tiny-seed1";
    auto config = model::ModelConfig::LoadFromDir(model_dir);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    auto tok = text::Tokenizer::FromModelDir(model_dir);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok);
    auto tmpl = text::ChatTemplate::FromTokenizerConfig(model_dir + "/tokenizer_config.json");
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    template_ = std::move(*tmpl);
    model_ = {tokenizer_.get(), template_.get(), &config_};
  }

  void ExpectInvalid(const v1::GenerateRequest& r, const std::string& words) {
    auto spec = SpecFromGenerate(r, model_, limits_);
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << spec.status();
    EXPECT_NE(spec.status().message().find(words), std::string::npos) << spec.status().message();
  }

  model::ModelConfig config_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<text::ChatTemplate> template_;
  ModelTextContext model_;
  RequestLimits limits_;
};

TEST_F(RequestSpecTest, TextPromptGetsBosAndDefaults) {
  v1::GenerateRequest r;
  r.set_prompt("Hello <|eot_id|>");
  auto spec = SpecFromGenerate(r, model_, limits_);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->prompt_ids.front(), config_.bos_token_id);
  // The special-token text stays plain text (no injection of the control token).
  for (size_t i = 1; i < spec->prompt_ids.size(); ++i) EXPECT_LT(spec->prompt_ids[i], 128000);
  EXPECT_EQ(spec->max_new_tokens, 128);
  EXPECT_TRUE(spec->max_new_tokens_defaulted);  // the router may shorten it to fit a KV cache
  r.mutable_params()->set_max_new_tokens(128);
  spec = SpecFromGenerate(r, model_, limits_);
  ASSERT_TRUE(spec.ok());
  EXPECT_FALSE(spec->max_new_tokens_defaulted);
}

TEST_F(RequestSpecTest, ExplicitZeroTemperatureIsGreedy) {
  v1::GenerateRequest r;
  r.add_prompt_ids(1);
  r.mutable_params()->mutable_sampling()->set_temperature(0);
  auto spec = SpecFromGenerate(r, model_, limits_);
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(spec->sampling.IsGreedy());
}

TEST_F(RequestSpecTest, PriorityIsCarriedForGenerationAndScore) {
  v1::GenerateRequest r;
  r.add_prompt_ids(1);
  auto spec = SpecFromGenerate(r, model_, limits_);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->priority, 0);
  r.mutable_params()->set_priority(-7);
  spec = SpecFromGenerate(r, model_, limits_);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->priority, -7);
  v1::ScoreRequest score;
  score.add_context_ids(1);
  score.add_continuation_ids(2);
  score.set_priority(12);
  auto scored = SpecFromScore(score, model_, limits_);
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(scored->priority, 12);
}

TEST_F(RequestSpecTest, LogitBiasIsSortedAndChecked) {
  v1::GenerateRequest r;
  r.add_prompt_ids(1);
  auto& bias = *r.mutable_params()->mutable_sampling()->mutable_logit_bias();
  bias[9642] = 100;
  bias[15] = -2.5;
  bias[2822] = -100;
  auto spec = SpecFromGenerate(r, model_, limits_);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->sampling.logit_bias,
            (std::vector<std::pair<int32_t, float>>{{15, -2.5f}, {2822, -100.f}, {9642, 100.f}}));
  bias[128256] = 1;
  ExpectInvalid(r, "params.sampling.logit_bias: token 128256 is outside the vocabulary [0, 128256)");
  bias.erase(128256);
  bias[-1] = 1;
  ExpectInvalid(r, "params.sampling.logit_bias: token -1 is outside the vocabulary");
  bias.erase(-1);
  bias[7] = 101;
  ExpectInvalid(r, "params.sampling: logit_bias of token 7 must be in [-100, 100], got 101");
}

TEST_F(RequestSpecTest, RefusesBadInput) {
  ExpectInvalid(v1::GenerateRequest(), "empty prompt");
  v1::GenerateRequest both;
  both.set_prompt("a");
  both.add_prompt_ids(1);
  ExpectInvalid(both, "not both");
  v1::GenerateRequest bad_utf8;
  bad_utf8.set_prompt(std::string("ab\xff", 3));
  ExpectInvalid(bad_utf8, "UTF-8");
  v1::GenerateRequest bad_id;
  bad_id.add_prompt_ids(config_.vocab_size);
  ExpectInvalid(bad_id, "outside the vocabulary");
  v1::GenerateRequest too_long;
  too_long.add_prompt_ids(1);
  too_long.mutable_params()->set_max_new_tokens(config_.max_position_embeddings);
  ExpectInvalid(too_long, "exceeds the model's context");
  v1::GenerateRequest top_p;
  top_p.add_prompt_ids(1);
  top_p.mutable_params()->mutable_sampling()->set_top_p(1.5);
  ExpectInvalid(top_p, "top_p");
  v1::GenerateRequest temp;
  temp.add_prompt_ids(1);
  temp.mutable_params()->mutable_sampling()->set_temperature(-1);
  ExpectInvalid(temp, "temperature");
  v1::GenerateRequest stops;
  stops.add_prompt_ids(1);
  for (int i = 0; i < 17; ++i) stops.mutable_params()->add_stop("x");
  ExpectInvalid(stops, "at most 16");
  v1::GenerateRequest long_stop;
  long_stop.add_prompt_ids(1);
  long_stop.mutable_params()->add_stop(std::string(257, 'a'));
  ExpectInvalid(long_stop, "257 bytes");
  v1::GenerateRequest long_id;
  long_id.add_prompt_ids(1);
  long_id.set_request_id(std::string(kMaxRequestIdBytes + 1, 'r'));
  ExpectInvalid(long_id, "request_id: 257 bytes");
  long_id.set_request_id(std::string(kMaxRequestIdBytes, 'r'));
  EXPECT_TRUE(SpecFromGenerate(long_id, model_, limits_).ok());
}

TEST_F(RequestSpecTest, ScoreTextIsSplitAsLmEvalHarnessDoes) {
  v1::ScoreRequest r;
  r.set_context("Answer: ");  // the trailing space belongs to the continuation
  r.set_continuation("yes");
  auto spec = SpecFromScore(r, model_, limits_);
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<int32_t> context = {config_.bos_token_id};
  for (int32_t id : tokenizer_->Encode("Answer:", false)) context.push_back(id);
  std::vector<int32_t> whole = {config_.bos_token_id};
  for (int32_t id : tokenizer_->Encode("Answer: yes", false)) whole.push_back(id);
  EXPECT_EQ(spec->score_from, static_cast<int32_t>(context.size()));
  EXPECT_EQ(spec->prompt_ids, whole);
  EXPECT_EQ(spec->max_new_tokens, 1);
  EXPECT_TRUE(spec->sampling.IsGreedy());

  v1::ScoreRequest ids;
  ids.add_context_ids(config_.bos_token_id);
  ids.add_continuation_ids(5);
  ids.add_continuation_ids(6);
  spec = SpecFromScore(ids, model_, limits_);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->prompt_ids, (std::vector<int32_t>{config_.bos_token_id, 5, 6}));
  EXPECT_EQ(spec->score_from, 1);
}

TEST_F(RequestSpecTest, ScoreRefusesBadInput) {
  auto expect = [&](const v1::ScoreRequest& r, const std::string& words) {
    auto spec = SpecFromScore(r, model_, limits_);
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(words), std::string::npos) << spec.status().message();
  };
  expect(v1::ScoreRequest(), "continuation: empty");
  v1::ScoreRequest mixed;
  mixed.set_context("a");
  mixed.add_continuation_ids(1);
  expect(mixed, "not both");
  v1::ScoreRequest no_context;
  no_context.add_continuation_ids(1);
  expect(no_context, "context_ids: empty");
  v1::ScoreRequest outside;
  outside.add_context_ids(1);
  outside.add_continuation_ids(-3);
  expect(outside, "continuation_ids: -3 is outside the vocabulary");
  v1::ScoreRequest bad_utf8;
  bad_utf8.set_continuation("\xff");
  expect(bad_utf8, "continuation: not valid UTF-8");
  v1::ScoreRequest too_long;
  too_long.add_context_ids(1);
  for (int i = 0; i < config_.max_position_embeddings; ++i) too_long.add_continuation_ids(1);
  expect(too_long, "exceeds the model's context");
}

TEST_F(RequestSpecTest, ChatRendersTheTemplate) {
  v1::ChatRequest r;
  auto* m = r.add_messages();
  m->set_role("user");
  m->set_content("What is sepsis?");
  auto spec = SpecFromChat(r, model_, limits_);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_GT(spec->prompt_ids.size(), 5u);
  m->set_role("doctor");
  EXPECT_EQ(SpecFromChat(r, model_, limits_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Utf8Test, Validation) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
}

}  // namespace
}  // namespace caduceus::router
