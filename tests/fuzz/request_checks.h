// What the request fuzz targets (gRPC messages, OpenAI JSON) share: a Llama-3-shaped config and
// the invariant every validated request must meet.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "router/server/request_spec.h"
#include "tests/fuzz/fuzz_support.h"
#include "worker/model/model_config.h"

namespace caduceus::fuzz {

inline const caduceus::model::ModelConfig& Config() {
  static const caduceus::model::ModelConfig* config = [] {
    auto c = caduceus::model::ModelConfig::FromJson(R"({
      "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000,
      "eos_token_id": [128001, 128009], "hidden_act": "silu", "hidden_size": 256,
      "intermediate_size": 768, "max_position_embeddings": 8192, "model_type": "llama",
      "num_attention_heads": 8, "num_hidden_layers": 4, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "vocab_size": 128256})", "config.json");
    if (!c.ok()) std::abort();
    return new caduceus::model::ModelConfig(*c);
  }();
  return *config;
}

// A request that passes validation must be one the scheduler can run: a non-empty prompt of
// in-vocabulary ids that, with max_new_tokens, fits the context; a request_id within its limit.
inline void CheckRunnable(const caduceus::router::RequestSpec& spec) {
  const caduceus::model::ModelConfig& config = Config();
  if (spec.prompt_ids.empty() || spec.max_new_tokens < 1 ||
      static_cast<int64_t>(spec.prompt_ids.size()) + spec.max_new_tokens >
          config.max_position_embeddings) {
    __builtin_trap();
  }
  for (int32_t id : spec.prompt_ids) {
    if (id < 0 || id >= config.vocab_size) __builtin_trap();
  }
  if (spec.request_id.size() > caduceus::router::kMaxRequestIdBytes) __builtin_trap();
}

// What request validation needs: the real tokenizer and chat template, and Config(). The first
// call loads them (seconds under ASan): call it from LLVMFuzzerInitialize, so that it does not
// count against the first input's -timeout.
inline const router::ModelTextContext& RequestModel() {
  static const router::ModelTextContext model{&Llama3Tokenizer(), &Llama3ChatTemplate(), &Config()};
  return model;
}

}  // namespace caduceus::fuzz
