// Config parsing: real Llama-3 / Llama-3.1 70B configs (as published on the Hugging Face Hub,
// written from the published files) and every rejection the engine relies on.
#include "worker/model/model_config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace caduceus::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using nlohmann::json;

// meta-llama/Meta-Llama-3-70B-Instruct config.json (Med42-v2 70B is a fine-tune of it).
constexpr char kLlama3_70B[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128009,
  "hidden_act": "silu",
  "hidden_size": 8192,
  "initializer_range": 0.02,
  "intermediate_size": 28672,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 64,
  "num_hidden_layers": 80,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// meta-llama/Llama-3.1-70B-Instruct config.json.
constexpr char kLlama31_70B[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 8192,
  "initializer_range": 0.02,
  "intermediate_size": 28672,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 64,
  "num_hidden_layers": 80,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3",
  "use_cache": true,
  "vocab_size": 128256
})";

constexpr char kLlama3GenerationConfig[] = R"({
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128009],
  "do_sample": true,
  "temperature": 0.6,
  "max_length": 4096,
  "top_p": 0.9,
  "transformers_version": "4.40.0.dev0"
})";

TEST(ModelConfigTest, ParsesLlama3_70B) {
  auto c = ModelConfig::FromJson(kLlama3_70B, "70b/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->hidden_size, 8192);
  EXPECT_EQ(c->num_layers, 80);
  EXPECT_EQ(c->num_heads, 64);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->intermediate_size, 28672);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->max_position_embeddings, 8192);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128009));
  EXPECT_FALSE(c->generation.temperature.has_value());

  ASSERT_TRUE(c->MergeGenerationConfig(kLlama3GenerationConfig, "generation_config.json").ok());
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128009, 128001));
  EXPECT_TRUE(c->IsEos(128001));
  EXPECT_FALSE(c->IsEos(128000));
  EXPECT_EQ(c->generation.temperature, 0.6);
  EXPECT_EQ(c->generation.top_p, 0.9);
  EXPECT_EQ(c->generation.do_sample, true);
  EXPECT_FALSE(c->generation.top_k.has_value());
}

TEST(ModelConfigTest, ParsesLlama31WithRopeScaling) {
  auto c = ModelConfig::FromJson(kLlama31_70B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_position_embeddings, 131072);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->factor, 8.0);
  EXPECT_EQ(c->rope_scaling->low_freq_factor, 1.0);
  EXPECT_EQ(c->rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009));
}

TEST(ModelConfigTest, OptionalFieldsAndAlternateSpellings) {
  json j = json::parse(kLlama31_70B);
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";  // the older key
  j.erase("num_key_value_heads");         // defaults to the head count
  j["head_dim"] = 256;                    // explicit head_dim wins over hidden / heads
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  j["tie_word_embeddings"] = true;
  auto c = ModelConfig::FromJson(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->num_kv_heads, 64);
  EXPECT_EQ(c->head_dim, 256);
  EXPECT_EQ(c->torch_dtype, "float16");
  EXPECT_TRUE(c->tie_word_embeddings);

  j["rope_scaling"] = {{"rope_type", "default"}};
  c = ModelConfig::FromJson(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->rope_scaling.has_value());
}

struct BadCase {
  std::string label;
  std::string field;  // must appear in the message
  std::function<void(json&)> mutate;
};

TEST(ModelConfigTest, RejectsInvalidConfigsNamingFileAndField) {
  const std::vector<BadCase> cases = {
      {"missing hidden_size", "hidden_size", [](json& j) { j.erase("hidden_size"); }},
      {"missing layers", "num_hidden_layers", [](json& j) { j.erase("num_hidden_layers"); }},
      {"missing heads", "num_attention_heads", [](json& j) { j.erase("num_attention_heads"); }},
      {"missing intermediate", "intermediate_size", [](json& j) { j.erase("intermediate_size"); }},
      {"missing vocab", "vocab_size", [](json& j) { j.erase("vocab_size"); }},
      {"missing max pos", "max_position_embeddings",
       [](json& j) { j.erase("max_position_embeddings"); }},
      {"missing rope_theta", "rope_theta", [](json& j) { j.erase("rope_theta"); }},
      {"missing eps", "rms_norm_eps", [](json& j) { j.erase("rms_norm_eps"); }},
      {"missing bos", "bos_token_id", [](json& j) { j.erase("bos_token_id"); }},
      {"missing eos", "eos_token_id", [](json& j) { j.erase("eos_token_id"); }},
      {"missing architectures", "architectures", [](json& j) { j.erase("architectures"); }},
      {"hidden as string", "hidden_size", [](json& j) { j["hidden_size"] = "8192"; }},
      {"hidden as float", "hidden_size", [](json& j) { j["hidden_size"] = 8192.5; }},
      {"hidden too large", "hidden_size", [](json& j) { j["hidden_size"] = 1ull << 40; }},
      {"layers zero", "num_hidden_layers", [](json& j) { j["num_hidden_layers"] = 0; }},
      {"vocab negative", "vocab_size", [](json& j) { j["vocab_size"] = -5; }},
      {"kv heads zero", "num_key_value_heads", [](json& j) { j["num_key_value_heads"] = 0; }},
      {"head_dim zero", "head_dim", [](json& j) { j["head_dim"] = 0; }},
      {"rope_theta negative", "rope_theta", [](json& j) { j["rope_theta"] = -1.0; }},
      {"eps as string", "rms_norm_eps", [](json& j) { j["rms_norm_eps"] = "1e-5"; }},
      {"hidden % heads", "num_attention_heads", [](json& j) { j["num_attention_heads"] = 60; }},
      {"heads % kv", "num_key_value_heads", [](json& j) { j["num_key_value_heads"] = 7; }},
      {"architecture", "architectures",
       [](json& j) { j["architectures"] = {"MistralForCausalLM"}; }},
      {"architectures not list", "architectures",
       [](json& j) { j["architectures"] = "LlamaForCausalLM"; }},
      {"model_type", "model_type", [](json& j) { j["model_type"] = "mistral"; }},
      {"hidden_act", "hidden_act", [](json& j) { j["hidden_act"] = "gelu"; }},
      {"attention bias", "attention_bias", [](json& j) { j["attention_bias"] = true; }},
      {"mlp bias", "mlp_bias", [](json& j) { j["mlp_bias"] = true; }},
      {"bias not bool", "mlp_bias", [](json& j) { j["mlp_bias"] = "no"; }},
      {"tie not bool", "tie_word_embeddings", [](json& j) { j["tie_word_embeddings"] = 0; }},
      {"rope linear", "rope_type",
       [](json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; }},
      {"rope yarn", "rope_type", [](json& j) { j["rope_scaling"]["rope_type"] = "yarn"; }},
      {"rope no type", "rope_type", [](json& j) { j["rope_scaling"].erase("rope_type"); }},
      {"rope not object", "rope_scaling", [](json& j) { j["rope_scaling"] = "llama3"; }},
      {"rope missing factor", "factor", [](json& j) { j["rope_scaling"].erase("factor"); }},
      {"rope low >= high", "high_freq_factor",
       [](json& j) { j["rope_scaling"]["high_freq_factor"] = 1.0; }},
      {"rope orig max", "original_max_position_embeddings",
       [](json& j) { j["rope_scaling"]["original_max_position_embeddings"] = 0; }},
      {"eos out of vocab", "eos_token_id", [](json& j) { j["eos_token_id"] = {128001, 999999}; }},
      {"eos empty list", "eos_token_id", [](json& j) { j["eos_token_id"] = json::array(); }},
      {"eos wrong type", "eos_token_id", [](json& j) { j["eos_token_id"] = "128001"; }},
      {"bos out of vocab", "bos_token_id", [](json& j) { j["bos_token_id"] = 128256; }},
      {"dtype not string", "torch_dtype", [](json& j) { j["torch_dtype"] = 16; }},
      {"gptq", "quant_method",
       [](json& j) { j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}}; }},
      {"quantization not object", "quantization_config",
       [](json& j) { j["quantization_config"] = "fp8"; }},
      {"block-wise fp8", "weight_block_size", [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
       }},
      {"compressed-tensors int4", "format", [](json& j) {
         j["quantization_config"] = {
             {"quant_method", "compressed-tensors"}, {"format", "pack-quantized"}};
       }},
      {"compressed-tensors int8", "config_groups.group_0.weights", [](json& j) {
         j["quantization_config"] = {
             {"quant_method", "compressed-tensors"}, {"format", "float-quantized"},
             {"config_groups", {{"group_0", {{"weights", {{"num_bits", 8}, {"type", "int"},
                                                            {"strategy", "channel"}}}}}}}};
       }},
      {"compressed-tensors group scales", "strategy", [](json& j) {
         j["quantization_config"] = {
             {"quant_method", "compressed-tensors"}, {"format", "float-quantized"},
             {"config_groups", {{"group_0", {{"weights", {{"num_bits", 8}, {"type", "float"},
                                                            {"strategy", "group"}}}}}}}};
       }},
  };
  for (const BadCase& bc : cases) {
    json j = json::parse(kLlama31_70B);
    bc.mutate(j);
    auto c = ModelConfig::FromJson(j.dump(), "/models/x/config.json");
    ASSERT_FALSE(c.ok()) << bc.label;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bc.label;
    EXPECT_THAT(c.status().message(), HasSubstr("/models/x/config.json")) << bc.label;
    EXPECT_THAT(c.status().message(), HasSubstr(bc.field)) << bc.label << ": " << c.status();
  }
}

// FP8 checkpoints as AutoFP8 / Hugging Face and llm-compressor write them
// (quantization_config.h); no quantization_config is a plain checkpoint.
TEST(ModelConfigTest, AcceptsFp8QuantizationConfigs) {
  const json configs[] = {
      {{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}},
      {{"quant_method", "fp8"}, {"activation_scheme", "static"}, {"weight_block_size", nullptr}},
      {{"quant_method", "compressed-tensors"},
       {"format", "float-quantized"},
       {"config_groups",
        {{"group_0",
          {{"targets", {"Linear"}},
           {"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"},
                        {"symmetric", true}, {"dynamic", false}}},
           {"input_activations", {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"},
                                  {"dynamic", true}}}}}}},
       {"ignore", {"lm_head"}}},
      {{"quant_method", "compressed-tensors"},
       {"format", "naive-quantized"},
       {"config_groups",
        {{"group_0", {{"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "tensor"}}}}}}}},
  };
  for (const json& q : configs) {
    json j = json::parse(kLlama31_70B);
    j["quantization_config"] = q;
    auto c = ModelConfig::FromJson(j.dump(), "config.json");
    ASSERT_TRUE(c.ok()) << q.dump() << ": " << c.status();
    EXPECT_EQ(c->quantization, Quantization::kFp8) << q.dump();
  }
  auto plain = ModelConfig::FromJson(kLlama31_70B, "config.json");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->quantization, Quantization::kNone);
  EXPECT_EQ(ParseQuantizationFlag("fp8").value(), Quantization::kFp8);
  EXPECT_EQ(ParseQuantizationFlag("none").value(), Quantization::kNone);
  EXPECT_EQ(ParseQuantizationFlag("int4").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelConfigTest, RejectsOverflowingNumber) {
  std::string text = kLlama3_70B;
  // nlohmann rejects an overflowing literal as invalid JSON; the parser's own finiteness check
  // is a second line of defense. Either way it must be an error naming the file.
  text.replace(text.find("500000.0"), 8, "1e999");
  auto c = ModelConfig::FromJson(text, "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("config.json"));
}

TEST(ModelConfigTest, RejectsNonJsonAndNonObjects) {
  for (const char* text : {"", "{", "not json", "[1, 2]", "42", "{\"a\": }", "\xff\xfe"}) {
    auto c = ModelConfig::FromJson(text, "cfg.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr("cfg.json"));
  }
}

TEST(ModelConfigTest, RejectsBadGenerationConfig) {
  auto base = ModelConfig::FromJson(kLlama3_70B, "config.json");
  ASSERT_TRUE(base.ok());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"temperature": "hot"})", "temperature"},
      {R"({"temperature": -1})", "temperature"},
      {R"({"top_p": 1.5})", "top_p"},
      {R"({"top_k": 2.5})", "top_k"},
      {R"({"do_sample": 1})", "do_sample"},
      {R"({"eos_token_id": [128001, "x"]})", "eos_token_id"},
      {R"({"eos_token_id": 200000})", "eos_token_id"},
      {R"([])", "gen.json"},
  };
  for (const auto& [text, field] : cases) {
    ModelConfig c = *base;
    absl::Status st = c.MergeGenerationConfig(text, "gen.json");
    ASSERT_FALSE(st.ok()) << text;
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(st.message(), HasSubstr("gen.json")) << text;
    EXPECT_THAT(st.message(), HasSubstr(field)) << text;
  }
}

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "/model_config_test_XXXXXX";
  char* d = mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  return tmpl;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(ModelConfigTest, LoadFromDirMergesGenerationConfig) {
  const std::string dir = MakeTempDir();
  auto missing = ModelConfig::LoadFromDir(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("config.json"));

  WriteFile(dir + "/config.json", kLlama3_70B);
  auto only_config = ModelConfig::LoadFromDir(dir);
  ASSERT_TRUE(only_config.ok()) << only_config.status();
  EXPECT_THAT(only_config->eos_token_ids, ElementsAre(128009));

  WriteFile(dir + "/generation_config.json", kLlama3GenerationConfig);
  auto both = ModelConfig::LoadFromDir(dir);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_THAT(both->eos_token_ids, ElementsAre(128009, 128001));
  EXPECT_EQ(both->generation.top_p, 0.9);

  WriteFile(dir + "/generation_config.json", "{oops");
  auto bad = ModelConfig::LoadFromDir(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("generation_config.json"));
  std::filesystem::remove_all(dir);
}

TEST(ModelConfigTest, LoadsGeneratedTinyModel) {
  const char* testdata = std::getenv("CADUCEUS_TESTDATA_DIR");
  if (testdata == nullptr) GTEST_SKIP() << "CADUCEUS_TESTDATA_DIR not set (run through ctest)";
  auto c = ModelConfig::LoadFromDir(std::string(testdata) + "/tiny-seed1");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->num_layers, 4);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->intermediate_size, 768);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128009));
  EXPECT_EQ(c->generation.temperature, 0.6);
}

}  // namespace
}  // namespace caduceus::model
