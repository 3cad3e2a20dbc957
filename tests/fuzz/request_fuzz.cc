// Fuzzes public-API request validation, the code every client's bytes reach: the first byte
// picks GenerateRequest, ChatRequest or ScoreRequest (its value mod 3), the rest is the
// serialized message. A request that passes validation must be one the scheduler can run: a
// non-empty prompt of in-vocabulary ids that, with max_new_tokens, fits the model's context; a
// score request's continuation is a non-empty tail of its prompt.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "caduceus/v1/generation.pb.h"
#include "router/server/request_spec.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/request_checks.h"

using caduceus::fuzz::CheckRunnable;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  caduceus::fuzz::RequestModel();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const caduceus::router::ModelTextContext& model = caduceus::fuzz::RequestModel();
  const caduceus::router::RequestLimits limits;
  const void* body = data + 1;
  const int body_size = static_cast<int>(size - 1);
  if (data[0] % 3 == 0) {
    caduceus::v1::GenerateRequest request;
    if (!request.ParseFromArray(body, body_size)) return 0;
    auto spec = caduceus::router::SpecFromGenerate(request, model, limits);
    if (spec.ok()) CheckRunnable(*spec);
  } else if (data[0] % 3 == 1) {
    caduceus::v1::ChatRequest request;
    if (!request.ParseFromArray(body, body_size)) return 0;
    auto spec = caduceus::router::SpecFromChat(request, model, limits);
    if (spec.ok()) CheckRunnable(*spec);
  } else {
    caduceus::v1::ScoreRequest request;
    if (!request.ParseFromArray(body, body_size)) return 0;
    auto spec = caduceus::router::SpecFromScore(request, model, limits);
    if (!spec.ok()) return 0;
    CheckRunnable(*spec);
    if (spec->score_from < 1 || spec->score_from >= static_cast<int32_t>(spec->prompt_ids.size())) {
      __builtin_trap();
    }
  }
  return 0;
}
