// Llama-3 model configuration parsed from a Hugging Face config.json (+ generation_config.json).
// Parsing is strict: anything the engine would silently compute wrong with (biases, other
// activations, other rope scalings, inconsistent head counts) is rejected with an error naming
// the file and the field.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/quantization_config.h"

namespace caduceus::model {

// Llama-3.1 "llama3" rope_scaling.
struct RopeScaling {
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int original_max_position_embeddings = 8192;
};

// Sampling defaults from generation_config.json; every field is optional there.
struct GenerationDefaults {
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int> top_k;
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM"
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // config "head_dim" when given, else hidden_size / num_heads
  int intermediate_size = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rope_theta = 0;
  double rms_norm_eps = 0;
  bool tie_word_embeddings = false;
  std::optional<RopeScaling> rope_scaling;
  std::string torch_dtype;  // "bfloat16", ... ("dtype" in newer configs); empty if absent
  // The checkpoint's quantization ("quantization_config"; quantization_config.h).
  Quantization quantization = Quantization::kNone;
  int bos_token_id = 0;
  // Union of config.json eos_token_id (int or list) and generation_config.json eos_token_id,
  // in first-seen order without duplicates.
  std::vector<int> eos_token_ids;
  GenerationDefaults generation;

  // Parses config.json text; source_name (usually the path) prefixes every error message.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view config_json,
                                              std::string_view source_name);
  // Merges a generation_config.json into this config (eos ids, sampling defaults).
  absl::Status MergeGenerationConfig(std::string_view generation_json, std::string_view source_name);
  // config.json plus, when present, generation_config.json from a model directory.
  static absl::StatusOr<ModelConfig> LoadFromDir(const std::string& model_dir);

  bool IsEos(int token_id) const;
};

// The model's name as the whole cluster reports it: the model directory's own name, resolved
// (".", a trailing "/" and symlinks name the real directory). Workers report it as their
// model id; the router's HTTP API serves it by default.
std::string ModelDirName(const std::string& model_dir);

}  // namespace caduceus::model
