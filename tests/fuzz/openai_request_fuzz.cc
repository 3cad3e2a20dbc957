// Fuzzes the OpenAI-compatible HTTP API's request bodies, the bytes any HTTP client sends: the
// first byte picks /v1/chat/completions or /v1/completions (its value mod 2), the rest is the
// JSON body. Parsing must never throw or crash (the JSON library is used without exceptions,
// and every value's type is checked before it is read); a body that parses goes on through the
// public API's validation, and one that passes must be runnable (request_checks.h). The
// response side is exercised too: an answer echoing the request's stop strings and ids as
// tokens must serialize to JSON.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "router/http/openai_request.h"
#include "router/http/openai_response.h"
#include "router/server/request_spec.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/request_checks.h"

using caduceus::fuzz::CheckRunnable;
namespace http = caduceus::router::http;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  caduceus::fuzz::RequestModel();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const http::Endpoint endpoint =
      data[0] % 2 == 0 ? http::Endpoint::kChatCompletions : http::Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  absl::StatusOr<http::OpenAiCall> call = http::ParseOpenAiRequest(endpoint, body);
  if (!call.ok()) {
    if (call.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    return 0;
  }
  const caduceus::router::ModelTextContext& model = caduceus::fuzz::RequestModel();
  const caduceus::router::RequestLimits limits;
  auto spec = endpoint == http::Endpoint::kChatCompletions
                  ? caduceus::router::SpecFromChat(call->chat, model, limits)
                  : caduceus::router::SpecFromGenerate(call->generate, model, limits);
  if (!spec.ok()) return 0;
  CheckRunnable(*spec);

  // An answer made of the request's own pieces (any ids, any text) must serialize.
  caduceus::v1::GenerateResponse response;
  response.set_text(call->mutable_params()->stop_size() > 0 ? call->mutable_params()->stop(0) : "");
  for (size_t i = 0; i < spec->prompt_ids.size() && i < 64; ++i) {
    caduceus::v1::GeneratedTokenLogprobs* lp = response.add_logprobs();
    lp->set_token_id(spec->prompt_ids[i]);
    lp->add_top_logprobs()->set_token_id(spec->prompt_ids[i]);
  }
  http::ResponseContext context;
  context.endpoint = endpoint;
  context.model = call->model;
  context.tokens_as_ids = call->tokens_as_ids;
  context.tokenizer = model.tokenizer;
  if (http::CompletionBody(context, response).empty()) __builtin_trap();
  return 0;
}
