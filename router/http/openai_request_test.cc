#include "router/http/openai_request.h"

#include <gtest/gtest.h>

namespace caduceus::router::http {
namespace {

OpenAiCall ParseOk(Endpoint endpoint, std::string_view body) {
  absl::StatusOr<OpenAiCall> call = ParseOpenAiRequest(endpoint, body);
  EXPECT_TRUE(call.ok()) << call.status();
  return call.ok() ? *std::move(call) : OpenAiCall();
}

// The error message, which must name the field so a person can fix the request.
std::string ParseError(Endpoint endpoint, std::string_view body) {
  absl::StatusOr<OpenAiCall> call = ParseOpenAiRequest(endpoint, body);
  EXPECT_FALSE(call.ok()) << body;
  if (call.ok()) return "";
  EXPECT_EQ(call.status().code(), absl::StatusCode::kInvalidArgument) << call.status();
  return std::string(call.status().message());
}

constexpr Endpoint kChat = Endpoint::kChatCompletions;
constexpr Endpoint kCompletions = Endpoint::kCompletions;

TEST(OpenAiRequest, ChatMessagesAndEveryParameter) {
  OpenAiCall call = ParseOk(kChat, R"({
    "model": "med42", "stream": true, "stream_options": {"include_usage": true},
    "messages": [{"role": "developer", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                              {"type": "text", "text": "doctor"}]},
                 {"role": "assistant", "content": "Hi."}],
    "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 40, "min_p": 0.1,
    "repetition_penalty": 1.1, "frequency_penalty": 0.5, "presence_penalty": -0.5,
    "seed": 42, "logprobs": true, "top_logprobs": 3, "stop": ["\n\n", "END"],
    "stop_token_ids": [128009], "ignore_eos": true, "user": "ward-7", "n": 1,
    "return_tokens_as_token_ids": true, "priority": -3, "tool_choice": "none", "response_format": {"type": "text"},
    "some_future_field": {"x": 1}})");
  EXPECT_EQ(call.model, "med42");
  EXPECT_TRUE(call.stream);
  EXPECT_TRUE(call.include_usage);
  EXPECT_TRUE(call.tokens_as_ids);
  ASSERT_EQ(call.chat.messages_size(), 3);
  EXPECT_EQ(call.chat.messages(0).role(), "system");  // OpenAI's "developer"
  EXPECT_EQ(call.chat.messages(1).content(), "Hello, doctor");
  EXPECT_EQ(call.chat.messages(2).role(), "assistant");
  const v1::GenerationParameters& p = call.chat.params();
  EXPECT_EQ(p.max_new_tokens(), 7u);
  EXPECT_EQ(p.sampling().temperature_set_case(), v1::SamplingParameters::kTemperature);
  EXPECT_EQ(p.sampling().temperature(), 0.f);  // 0 is set, not "unset"
  EXPECT_FLOAT_EQ(p.sampling().top_p(), 0.5f);
  EXPECT_EQ(p.sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(p.sampling().min_p(), 0.1f);
  EXPECT_FLOAT_EQ(p.sampling().repetition_penalty(), 1.1f);
  EXPECT_FLOAT_EQ(p.sampling().frequency_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(p.sampling().presence_penalty(), -0.5f);
  EXPECT_EQ(p.sampling().seed(), 42u);
  EXPECT_TRUE(p.logprobs());
  EXPECT_EQ(p.sampling().top_logprobs(), 3);
  ASSERT_EQ(p.stop_size(), 2);
  EXPECT_EQ(p.stop(1), "END");
  ASSERT_EQ(p.stop_token_ids_size(), 1);
  EXPECT_EQ(p.stop_token_ids(0), 128009);
  EXPECT_TRUE(p.ignore_eos());
  EXPECT_EQ(p.priority(), -3);
}

TEST(OpenAiRequest, UnsetFieldsStayUnsetForTheRouterDefaults) {
  OpenAiCall call = ParseOk(kChat, R"({"messages": [{"role": "user", "content": "hi"}],
                                       "temperature": null, "max_tokens": null, "stop": null})");
  EXPECT_EQ(call.model, "");
  EXPECT_FALSE(call.stream);
  const v1::GenerationParameters& p = call.chat.params();
  EXPECT_EQ(p.max_new_tokens(), 0u);  // --default-max-new-tokens
  EXPECT_EQ(p.sampling().temperature_set_case(), v1::SamplingParameters::TEMPERATURE_SET_NOT_SET);
  EXPECT_EQ(p.sampling().top_p_set_case(), v1::SamplingParameters::TOP_P_SET_NOT_SET);
  EXPECT_EQ(p.sampling().seed_set_case(), v1::SamplingParameters::SEED_SET_NOT_SET);
  EXPECT_FALSE(p.logprobs());
  EXPECT_EQ(p.stop_size(), 0);
}

TEST(OpenAiRequest, MaxCompletionTokensWinsOverTheDeprecatedMaxTokens) {
  OpenAiCall call = ParseOk(kChat, R"({"messages": [{"role": "user", "content": "hi"}],
                                       "max_tokens": 100, "max_completion_tokens": 5})");
  EXPECT_EQ(call.chat.params().max_new_tokens(), 5u);
}

TEST(OpenAiRequest, CompletionPromptForms) {
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt": "The patient"})").generate.prompt(), "The patient");
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt": ["The patient"]})").generate.prompt(), "The patient");
  OpenAiCall ids = ParseOk(kCompletions, R"({"prompt": [128000, 791, 8893]})");
  ASSERT_EQ(ids.generate.prompt_ids_size(), 3);
  EXPECT_EQ(ids.generate.prompt_ids(2), 8893);
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt": [[128000, 791]]})").generate.prompt_ids_size(), 2);
  // OpenAI's completions default length is 16 tokens.
  EXPECT_EQ(ids.generate.params().max_new_tokens(), 16u);
}

TEST(OpenAiRequest, CompletionLogprobsIsTheNumberOfAlternatives) {
  OpenAiCall call = ParseOk(kCompletions, R"({"prompt": "x", "logprobs": 2})");
  EXPECT_TRUE(call.generate.params().logprobs());
  EXPECT_EQ(call.generate.params().sampling().top_logprobs(), 2);
  OpenAiCall zero = ParseOk(kCompletions, R"({"prompt": "x", "logprobs": 0})");
  EXPECT_TRUE(zero.generate.params().logprobs());
  EXPECT_EQ(zero.generate.params().sampling().top_logprobs(), 0);
  EXPECT_FALSE(ParseOk(kCompletions, R"({"prompt": "x"})").generate.params().logprobs());
}

TEST(OpenAiRequest, TopKMinusOneMeansOff) {
  OpenAiCall call = ParseOk(kCompletions, R"({"prompt": "x", "top_k": -1})");
  EXPECT_EQ(call.generate.params().sampling().top_k(), 0);
}

TEST(OpenAiRequest, BadBodiesNameTheProblem) {
  EXPECT_EQ(ParseError(kChat, "{not json"), "the request body is not valid JSON (UTF-8)");
  EXPECT_EQ(ParseError(kChat, "\"a string\""), "the request body must be a JSON object");
  EXPECT_EQ(ParseError(kChat, "{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}"),
            "the request body is not valid JSON (UTF-8)");
  EXPECT_EQ(ParseError(kChat, R"({})"), "messages: required");
  EXPECT_EQ(ParseError(kChat, R"({"messages": "hi"})"), "messages: expected an array, got string");
  EXPECT_EQ(ParseError(kChat, R"({"messages": [{"role": "user"}]})"),
            "messages[0].content: missing (tool calls are not supported)");
  EXPECT_EQ(ParseError(kChat, R"({"messages": [{"content": "x"}]})"), "messages[0].role: expected a string");
  EXPECT_EQ(ParseError(kChat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
            "messages[0].content[0].type: only \"text\" parts are supported (a text-only model)");
  const std::string ok_messages = R"("messages": [{"role": "user", "content": "hi"}])";
  auto chat_with = [&](std::string field) { return ParseError(kChat, "{" + ok_messages + ", " + field + "}"); };
  EXPECT_EQ(chat_with(R"("temperature": "hot")"), "temperature: expected a number, got string");
  EXPECT_EQ(chat_with(R"("max_tokens": 1.5)"), "max_tokens: expected an integer, got number");
  EXPECT_EQ(chat_with(R"("max_tokens": 0)"), "max_tokens: must be >= 1, got 0");
  EXPECT_EQ(chat_with(R"("seed": true)"), "seed: expected an integer, got boolean");
  EXPECT_EQ(chat_with(R"("stream": "yes")"), "stream: expected true or false, got string");
  EXPECT_EQ(chat_with(R"("stop": 5)"), "stop: expected a string or an array of strings, got integer");
  EXPECT_EQ(chat_with(R"("top_logprobs": 2)"), "top_logprobs: needs \"logprobs\": true");
  EXPECT_EQ(chat_with(R"("logprobs": true, "top_logprobs": 21)"), "top_logprobs: must be in [0, 20], got 21");
  EXPECT_EQ(chat_with(R"("model": 3)"), "model: expected a string, got integer");
  EXPECT_EQ(chat_with(R"("top_k": -2)"), "top_k: must be -1 (off) or >= 0, got -2");
  EXPECT_EQ(chat_with(R"("stop_token_ids": [-1])"), "stop_token_ids: -1 is not a token id");
}

TEST(OpenAiRequest, SeveralChoicesWithoutStreaming) {
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt": "x", "n": 3})").n, 3);
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt": "x"})").n, 1);
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt": "x", "n": 1, "stream": true})").n, 1);
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "n": 0})"), "n: must be in [1, 16], got 0");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "n": 17})"), "n: must be in [1, 16], got 17");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "n": 2, "stream": true})"),
            "n: more than one choice is only served without \"stream\" (send several streaming "
            "requests)");
}

TEST(OpenAiRequest, LogitBiasKeysAreTokenIds) {
  OpenAiCall call = ParseOk(kChat, R"({"messages": [{"role": "user", "content": "hi"}],
                                       "logit_bias": {"9642": 100, "2822": -100, "15": 2.5}})");
  const auto& bias = call.chat.params().sampling().logit_bias();
  ASSERT_EQ(bias.size(), 3u);
  EXPECT_EQ(bias.at(9642), 100.f);
  EXPECT_EQ(bias.at(2822), -100.f);
  EXPECT_EQ(bias.at(15), 2.5f);
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "logit_bias": {"yes": 1}})"),
            "logit_bias: keys must be token ids (decimal integers >= 0)");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "logit_bias": {"-3": 1}})"),
            "logit_bias: keys must be token ids (decimal integers >= 0)");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "logit_bias": {"3": "big"}})"),
            "logit_bias values: expected numbers, got string");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "logit_bias": [3]})"),
            "logit_bias: expected an object of token id -> bias, got array");
}

TEST(OpenAiRequest, FeaturesThisServerDoesNotHaveAreRefusedNotIgnored) {
  const std::string ok_messages = R"("messages": [{"role": "user", "content": "hi"}])";
  auto chat_with = [&](std::string field) { return ParseError(kChat, "{" + ok_messages + ", " + field + "}"); };
  EXPECT_EQ(chat_with(R"("tools": [{"type": "function"}])"),
            "tools: not supported by this server; remove the field");
  EXPECT_EQ(chat_with(R"("tool_choice": "auto")"), "tool_choice: not supported by this server (no tools)");
  EXPECT_EQ(chat_with(R"("response_format": {"type": "json_object"})"),
            "response_format: only {\"type\": \"text\"} is supported");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "echo": true})"), "echo: not supported by this server");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": "x", "best_of": 3})"),
            "best_of: 3 candidates asked; this server does not rank candidates (use n and pick yourself)");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": ["a", "b"]})"),
            "prompt: 2 prompts; this server takes one per request (send several requests)");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": []})"), "prompt: empty");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt": [1, "a"]})"),
            "prompt: expected integer token ids, got string");
  // Empty values that mean "off" are accepted.
  ParseOk(kChat, "{" + ok_messages + R"(, "tools": [], "logit_bias": {}, "n": 1, "tool_choice": "none"})");
}

}  // namespace
}  // namespace caduceus::router::http
