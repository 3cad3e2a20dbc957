#include "router/http/openai_response.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "router/text/tokenizer_test_util.h"

namespace caduceus::router::http {
namespace {

using nlohmann::json;

ResponseContext Context(Endpoint endpoint) {
  ResponseContext c;
  c.endpoint = endpoint;
  c.id = "chatcmpl-req-1";
  c.model = "med42-v2-70b";
  c.created = 1764547200;
  c.tokenizer = &text::testing::Llama3();
  return c;
}

v1::GenerateResponse Finished(const std::vector<int32_t>& ids) {
  v1::GenerateResponse r;
  r.set_request_id("req-1");
  r.set_text("Hello world");
  for (int32_t id : ids) {
    r.add_token_ids(id);
    v1::GeneratedTokenLogprobs* lp = r.add_logprobs();
    lp->set_token_id(id);
    lp->set_logprob(-0.5f);
    v1::TokenLogprob* alt = lp->add_top_logprobs();
    alt->set_token_id(id);
    alt->set_logprob(-0.5f);
  }
  r.set_finish_reason(v1::FINISH_REASON_LENGTH);
  r.mutable_usage()->set_prompt_tokens(10);
  r.mutable_usage()->set_generated_tokens(static_cast<uint32_t>(ids.size()));
  r.mutable_usage()->set_cached_prompt_tokens(4);
  return r;
}

std::vector<int32_t> HelloWorld() { return text::testing::Llama3().Encode("Hello world", false); }

TEST(OpenAiResponse, ChatCompletion) {
  const std::vector<int32_t> ids = HelloWorld();
  ASSERT_EQ(ids.size(), 2u);
  const json j = json::parse(CompletionBody(Context(Endpoint::kChatCompletions), Finished(ids)));
  EXPECT_EQ(j["id"], "chatcmpl-req-1");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 1764547200);
  EXPECT_EQ(j["model"], "med42-v2-70b");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& choice = j["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Hello world");
  EXPECT_EQ(choice["finish_reason"], "length");
  const json& content = choice["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "Hello");
  EXPECT_EQ(content[1]["token"], " world");
  EXPECT_EQ(content[1]["bytes"], json::array({32, 119, 111, 114, 108, 100}));
  EXPECT_DOUBLE_EQ(content[1]["logprob"].get<double>(), -0.5);
  EXPECT_EQ(content[1]["top_logprobs"][0]["token"], " world");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_EQ(j["usage"]["total_tokens"], 12);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

TEST(OpenAiResponse, SeveralChoicesShareThePromptInUsage) {
  const std::vector<int32_t> ids = HelloWorld();
  std::vector<v1::GenerateResponse> responses = {Finished(ids), Finished({ids[0]}), Finished(ids)};
  responses[1].set_text("Hello");
  responses[1].set_finish_reason(v1::FINISH_REASON_STOP_TOKEN);
  const json j = json::parse(CompletionBody(Context(Endpoint::kCompletions), responses));
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  EXPECT_EQ(j["choices"][0]["text"], "Hello world");
  EXPECT_EQ(j["choices"][1]["text"], "Hello");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 10);  // once, not three times
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], 15);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

TEST(OpenAiResponse, NoLogprobsAskedGivesNull) {
  v1::GenerateResponse r = Finished({});
  r.set_finish_reason(v1::FINISH_REASON_STOP_TOKEN);
  const json j = json::parse(CompletionBody(Context(Endpoint::kChatCompletions), r));
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

TEST(OpenAiResponse, TextCompletionWithLegacyLogprobs) {
  const std::vector<int32_t> ids = HelloWorld();
  ResponseContext c = Context(Endpoint::kCompletions);
  const json j = json::parse(CompletionBody(c, Finished(ids)));
  EXPECT_EQ(j["object"], "text_completion");
  const json& choice = j["choices"][0];
  EXPECT_EQ(choice["text"], "Hello world");
  EXPECT_EQ(choice["logprobs"]["tokens"], json::array({"Hello", " world"}));
  EXPECT_EQ(choice["logprobs"]["text_offset"], json::array({0, 5}));
  EXPECT_DOUBLE_EQ(choice["logprobs"]["top_logprobs"][1][" world"].get<double>(), -0.5);
}

TEST(OpenAiResponse, TokensAsIdsAndPartialCharacters) {
  // Byte-level token for the lone byte 0xE6 (the first byte of many CJK characters).
  const std::optional<int32_t> byte_token = text::testing::Llama3().TokenToId("\xC3\xA6");
  ASSERT_TRUE(byte_token.has_value());
  ResponseContext c = Context(Endpoint::kChatCompletions);
  json j = json::parse(CompletionBody(c, Finished({*byte_token})));
  const json& entry = j["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(entry["token"], "\xEF\xBF\xBD");  // U+FFFD: the JSON string stays valid UTF-8
  EXPECT_EQ(entry["bytes"], json::array({0xE6}));  // the exact byte
  c.tokens_as_ids = true;
  j = json::parse(CompletionBody(c, Finished({*byte_token})));
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["token"],
            "token_id:" + std::to_string(*byte_token));
}

TEST(OpenAiResponse, StreamChunks) {
  ResponseContext c = Context(Endpoint::kChatCompletions);
  json role = json::parse(RoleChunk(c));
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());

  v1::GenerateStreamResponse m;
  m.add_prompt_token_ids(1);
  EXPECT_EQ(StreamChunk(c, m), "");  // nothing a client would see
  m.set_text_delta("Hel");
  json delta = json::parse(StreamChunk(c, m));
  EXPECT_EQ(delta["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(delta["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(delta["choices"][0]["logprobs"].is_null());

  v1::GenerateStreamResponse last;
  last.set_finish_reason(v1::FINISH_REASON_STOP_SEQUENCE);
  json end = json::parse(StreamChunk(c, last));
  EXPECT_EQ(end["choices"][0]["delta"], json::object());
  EXPECT_EQ(end["choices"][0]["finish_reason"], "stop");

  c.endpoint = Endpoint::kCompletions;
  json text = json::parse(StreamChunk(c, m));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hel");

  v1::Usage usage;
  usage.set_prompt_tokens(3);
  usage.set_generated_tokens(2);
  json u = json::parse(UsageChunk(c, usage));
  EXPECT_EQ(u["choices"], json::array());
  EXPECT_EQ(u["usage"]["total_tokens"], 5);
}

TEST(OpenAiResponse, ErrorsCarryTheHttpStatusAndOpenAiShape) {
  HttpError e = ErrorFor(absl::InvalidArgumentError("max_tokens: must be >= 1, got 0"));
  EXPECT_EQ(e.http_status, 400);
  json j = json::parse(e.body);
  EXPECT_EQ(j["error"]["message"], "max_tokens: must be >= 1, got 0");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["code"], "invalid_argument");
  EXPECT_TRUE(j["error"]["param"].is_null());
  EXPECT_EQ(ErrorFor(absl::ResourceExhaustedError("queue full")).http_status, 429);
  EXPECT_EQ(ErrorFor(absl::UnavailableError("draining")).http_status, 503);
  EXPECT_EQ(ErrorFor(absl::DeadlineExceededError("late")).http_status, 504);
  EXPECT_EQ(ErrorFor(absl::UnauthenticatedError("token")).http_status, 401);
  EXPECT_EQ(ErrorFor(absl::NotFoundError("model")).http_status, 404);
  EXPECT_EQ(ErrorFor(absl::FailedPreconditionError("no template")).http_status, 400);
  EXPECT_EQ(ErrorFor(absl::InternalError("bug")).http_status, 500);
  // A message with invalid UTF-8 (echoing a client's bytes) still makes valid JSON.
  EXPECT_NO_THROW(json::parse(ErrorFor(absl::InvalidArgumentError("bad \xff byte")).body));
}

}  // namespace
}  // namespace caduceus::router::http
