#include "worker/model/model_config.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace caduceus::model {
namespace {

using nlohmann::json;

// Reads typed fields of one JSON object and produces errors that name the file and field.
class FieldReader {
 public:
  FieldReader(const json& obj, std::string_view source) : obj_(obj), source_(source) {}

  absl::Status Error(std::string_view field, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source_), ": field '", std::string(field), "' ", std::string(what)));
  }

  const json* Find(std::string_view field) const {
    auto it = obj_.find(std::string(field));
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::StatusOr<const json*> Require(std::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return Error(field, "is missing");
    return v;
  }

  absl::StatusOr<int> IntValue(std::string_view field, const json& v) const {
    if (!v.is_number_integer()) return Error(field, absl::StrCat("must be an integer, got ", v.type_name()));
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(INT_MAX)
                               : (v.get<int64_t>() > INT_MAX || v.get<int64_t>() < INT_MIN)) {
      return Error(field, "is out of range");
    }
    return static_cast<int>(v.get<int64_t>());
  }

  absl::StatusOr<std::optional<int>> OptInt(std::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::optional<int>();
    ASSIGN_OR_RETURN(int i, IntValue(field, *v));
    return std::optional<int>(i);
  }

  absl::StatusOr<int> PositiveInt(std::string_view field) const {
    ASSIGN_OR_RETURN(const json* v, Require(field));
    ASSIGN_OR_RETURN(int i, IntValue(field, *v));
    if (i <= 0) return Error(field, absl::StrCat("must be positive, got ", i));
    return i;
  }

  absl::StatusOr<std::optional<double>> OptDouble(std::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::optional<double>();
    if (!v->is_number()) return Error(field, absl::StrCat("must be a number, got ", v->type_name()));
    // JSON cannot spell inf, but an overflowing literal such as 1e999 parses to it.
    if (!std::isfinite(v->get<double>())) return Error(field, "must be finite");
    return std::optional<double>(v->get<double>());
  }

  absl::StatusOr<double> PositiveDouble(std::string_view field) const {
    ASSIGN_OR_RETURN(std::optional<double> d, OptDouble(field));
    if (!d.has_value()) return Error(field, "is missing");
    if (!(*d > 0)) return Error(field, absl::StrCat("must be positive, got ", *d));
    return *d;
  }

  absl::StatusOr<std::optional<bool>> OptBool(std::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_boolean()) return Error(field, absl::StrCat("must be a boolean, got ", v->type_name()));
    return std::optional<bool>(v->get<bool>());
  }

  absl::StatusOr<std::optional<std::string>> OptString(std::string_view field) const {
    const json* v = Find(field);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return Error(field, absl::StrCat("must be a string, got ", v->type_name()));
    return std::optional<std::string>(v->get<std::string>());
  }

  // An int or a list of ints (eos_token_id).
  absl::StatusOr<std::vector<int>> OptIntList(std::string_view field) const {
    std::vector<int> out;
    const json* v = Find(field);
    if (v == nullptr) return out;
    if (v->is_array()) {
      if (v->empty()) return Error(field, "must not be an empty list");
      for (const json& e : *v) {
        ASSIGN_OR_RETURN(int i, IntValue(field, e));
        out.push_back(i);
      }
    } else {
      ASSIGN_OR_RETURN(int i, IntValue(field, *v));
      out.push_back(i);
    }
    return out;
  }

 private:
  const json& obj_;
  std::string_view source_;
};

absl::StatusOr<json> ParseObject(std::string_view text, std::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": top level must be a JSON object"));
  }
  return j;
}

absl::StatusOr<std::optional<RopeScaling>> ParseRopeScaling(const FieldReader& top,
                                                            std::string_view source) {
  const json* v = top.Find("rope_scaling");
  if (v == nullptr) return std::optional<RopeScaling>();
  if (!v->is_object()) {
    return top.Error("rope_scaling", absl::StrCat("must be an object or null, got ", v->type_name()));
  }
  const std::string src = absl::StrCat(std::string(source), ": rope_scaling");
  FieldReader r(*v, src);
  ASSIGN_OR_RETURN(std::optional<std::string> type, r.OptString("rope_type"));
  if (!type.has_value()) {
    ASSIGN_OR_RETURN(type, r.OptString("type"));
  }
  if (!type.has_value()) return r.Error("rope_type", "is missing");
  // "default" is how newer transformers spell "no scaling".
  if (*type == "default") return std::optional<RopeScaling>();
  if (*type != "llama3") {
    return r.Error("rope_type", absl::StrCat("'", *type, "' is not supported (only llama3)"));
  }
  RopeScaling rs;
  ASSIGN_OR_RETURN(rs.factor, r.PositiveDouble("factor"));
  ASSIGN_OR_RETURN(rs.low_freq_factor, r.PositiveDouble("low_freq_factor"));
  ASSIGN_OR_RETURN(rs.high_freq_factor, r.PositiveDouble("high_freq_factor"));
  ASSIGN_OR_RETURN(rs.original_max_position_embeddings,
                   r.PositiveInt("original_max_position_embeddings"));
  // The llama3 interpolation divides by (high - low).
  if (!(rs.high_freq_factor > rs.low_freq_factor)) {
    return r.Error("high_freq_factor", "must be greater than low_freq_factor");
  }
  return std::optional<RopeScaling>(rs);
}

void AddUnique(std::vector<int>& to, const std::vector<int>& from) {
  for (int id : from) {
    if (std::find(to.begin(), to.end(), id) == to.end()) to.push_back(id);
  }
}


}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view config_json,
                                                  std::string_view source_name) {
  ASSIGN_OR_RETURN(const json j, ParseObject(config_json, source_name));
  const FieldReader r(j, source_name);
  ModelConfig c;

  ASSIGN_OR_RETURN(const json* archs, r.Require("architectures"));
  if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return r.Error("architectures", "must be a non-empty list of strings");
  }
  c.architecture = (*archs)[0].get<std::string>();
  if (c.architecture != "LlamaForCausalLM") {
    return r.Error("architectures", absl::StrCat("'", c.architecture,
                                                 "' is not supported (only LlamaForCausalLM)"));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> model_type, r.OptString("model_type"));
  if (model_type.has_value() && *model_type != "llama") {
    return r.Error("model_type", absl::StrCat("'", *model_type, "' is not supported (only llama)"));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> act, r.OptString("hidden_act"));
  if (act.has_value() && *act != "silu") {
    return r.Error("hidden_act", absl::StrCat("'", *act, "' is not supported (only silu)"));
  }
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    ASSIGN_OR_RETURN(std::optional<bool> b, r.OptBool(bias));
    if (b.value_or(false)) return r.Error(bias, "is true; biases are not supported");
  }

  ASSIGN_OR_RETURN(c.hidden_size, r.PositiveInt("hidden_size"));
  ASSIGN_OR_RETURN(c.num_layers, r.PositiveInt("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_heads, r.PositiveInt("num_attention_heads"));
  if (r.Find("num_key_value_heads") != nullptr) {
    ASSIGN_OR_RETURN(c.num_kv_heads, r.PositiveInt("num_key_value_heads"));
  } else {
    c.num_kv_heads = c.num_heads;  // Hugging Face's default: plain multi-head attention.
  }
  ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("intermediate_size"));
  ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.PositiveInt("max_position_embeddings"));
  if (c.hidden_size % c.num_heads != 0) {
    return r.Error("num_attention_heads", absl::StrCat(c.num_heads, " does not divide hidden_size ",
                                                       c.hidden_size));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return r.Error("num_key_value_heads", absl::StrCat(c.num_kv_heads,
                                                       " does not divide num_attention_heads ",
                                                       c.num_heads));
  }
  if (r.Find("head_dim") != nullptr) {
    ASSIGN_OR_RETURN(c.head_dim, r.PositiveInt("head_dim"));
  } else {
    c.head_dim = c.hidden_size / c.num_heads;
  }
  ASSIGN_OR_RETURN(c.rope_theta, r.PositiveDouble("rope_theta"));
  ASSIGN_OR_RETURN(c.rms_norm_eps, r.PositiveDouble("rms_norm_eps"));
  ASSIGN_OR_RETURN(std::optional<bool> tie, r.OptBool("tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(false);
  ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(r, source_name));

  ASSIGN_OR_RETURN(std::optional<std::string> dtype, r.OptString("torch_dtype"));
  if (!dtype.has_value()) {
    ASSIGN_OR_RETURN(dtype, r.OptString("dtype"));
  }
  c.torch_dtype = dtype.value_or("");
  ASSIGN_OR_RETURN(c.quantization,
                   ParseQuantizationConfig(r.Find("quantization_config"), source_name));

  ASSIGN_OR_RETURN(const json* bos, r.Require("bos_token_id"));
  ASSIGN_OR_RETURN(c.bos_token_id, r.IntValue("bos_token_id", *bos));
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size) {
    return r.Error("bos_token_id", absl::StrCat(c.bos_token_id, " is outside the vocabulary"));
  }
  if (r.Find("eos_token_id") == nullptr) return r.Error("eos_token_id", "is missing");
  ASSIGN_OR_RETURN(std::vector<int> eos, r.OptIntList("eos_token_id"));
  for (int id : eos) {
    if (id < 0 || id >= c.vocab_size) {
      return r.Error("eos_token_id", absl::StrCat(id, " is outside the vocabulary"));
    }
  }
  AddUnique(c.eos_token_ids, eos);
  return c;
}

absl::Status ModelConfig::MergeGenerationConfig(std::string_view generation_json,
                                                std::string_view source_name) {
  ASSIGN_OR_RETURN(const json j, ParseObject(generation_json, source_name));
  const FieldReader r(j, source_name);
  ASSIGN_OR_RETURN(std::vector<int> eos, r.OptIntList("eos_token_id"));
  for (int id : eos) {
    if (id < 0 || id >= vocab_size) {
      return r.Error("eos_token_id", absl::StrCat(id, " is outside the vocabulary"));
    }
  }
  GenerationDefaults g;
  ASSIGN_OR_RETURN(g.do_sample, r.OptBool("do_sample"));
  ASSIGN_OR_RETURN(g.temperature, r.OptDouble("temperature"));
  if (g.temperature.has_value() && *g.temperature < 0) return r.Error("temperature", "must be >= 0");
  ASSIGN_OR_RETURN(g.top_p, r.OptDouble("top_p"));
  if (g.top_p.has_value() && !(*g.top_p > 0 && *g.top_p <= 1)) {
    return r.Error("top_p", "must be in (0, 1]");
  }
  ASSIGN_OR_RETURN(g.top_k, r.OptInt("top_k"));
  if (g.top_k.has_value() && *g.top_k < 0) return r.Error("top_k", "must be >= 0");
  AddUnique(eos_token_ids, eos);
  generation = g;
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfig::LoadFromDir(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  const std::string config_path = (dir / "config.json").string();
  ASSIGN_OR_RETURN(const std::string text, ReadFile(config_path));
  ASSIGN_OR_RETURN(ModelConfig c, FromJson(text, config_path));
  const std::string gen_path = (dir / "generation_config.json").string();
  std::error_code ec;
  if (std::filesystem::exists(gen_path, ec)) {
    ASSIGN_OR_RETURN(const std::string gen_text, ReadFile(gen_path));
    RETURN_IF_ERROR(c.MergeGenerationConfig(gen_text, gen_path));
  }
  return c;
}

bool ModelConfig::IsEos(int token_id) const {
  return std::find(eos_token_ids.begin(), eos_token_ids.end(), token_id) != eos_token_ids.end();
}

std::string ModelDirName(const std::string& model_dir) {
  std::filesystem::path dir = std::filesystem::weakly_canonical(std::filesystem::path(model_dir));
  if (dir.filename().empty()) dir = dir.parent_path();  // "models/x/" -> "x"
  return dir.filename().string();
}

}  // namespace caduceus::model
