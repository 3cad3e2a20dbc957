// Fuzzes config.json and generation_config.json parsing. The first byte picks which: even, the
// rest is a config.json; odd, it is a generation_config.json merged into a valid config. A
// config that parses must be one the model code can use (positive sizes, whole heads).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "worker/model/model_config.h"

namespace {

constexpr std::string_view kTinyConfig = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128009], "head_dim": 32, "hidden_act": "silu", "hidden_size": 256,
  "intermediate_size": 768, "max_position_embeddings": 8192, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 8, "num_hidden_layers": 4,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 500000.0,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256})";

void CheckUsable(const caduceus::model::ModelConfig& c) {
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 ||
      c.head_dim <= 0 || c.intermediate_size <= 0 || c.vocab_size <= 0 ||
      c.max_position_embeddings <= 0 || c.num_heads % c.num_kv_heads != 0) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    auto config = caduceus::model::ModelConfig::FromJson(text, "config.json");
    if (config.ok()) CheckUsable(*config);
  } else {
    auto config = caduceus::model::ModelConfig::FromJson(kTinyConfig, "config.json");
    if (!config.ok()) __builtin_trap();
    if (config->MergeGenerationConfig(text, "generation_config.json").ok()) CheckUsable(*config);
  }
  return 0;
}
