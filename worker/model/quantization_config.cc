#include "worker/model/quantization_config.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace caduceus::model {
namespace {

using nlohmann::json;

absl::Status Refuse(std::string_view source, std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": quantization_config.",
                                                 std::string(field), " ", std::string(what)));
}

std::string StringField(const json& obj, const char* field) {
  auto it = obj.find(field);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// One compressed-tensors config group: its weights must be 8-bit floats, per tensor or channel.
absl::Status CheckCompressedTensorsGroup(const std::string& name, const json& group,
                                         std::string_view source) {
  const std::string where = absl::StrCat("config_groups.", name, ".weights");
  auto weights = group.find("weights");
  if (!group.is_object() || weights == group.end() || !weights->is_object()) {
    return Refuse(source, where, "is missing");
  }
  auto bits = weights->find("num_bits");
  if (bits == weights->end() || !bits->is_number_integer() || bits->get<int>() != 8 ||
      StringField(*weights, "type") != "float") {
    return Refuse(source, where,
                  "is not 8-bit float weights: only FP8 (E4M3) compressed-tensors checkpoints are "
                  "supported");
  }
  const std::string strategy = StringField(*weights, "strategy");
  if (strategy != "tensor" && strategy != "channel") {
    return Refuse(source, where + ".strategy",
                  absl::StrCat("'", strategy, "' is not supported (tensor or channel scales; "
                               "block and group scales are not)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Quantization> ParseQuantizationConfig(const json* config,
                                                     std::string_view source) {
  if (config == nullptr || config->is_null()) return Quantization::kNone;
  if (!config->is_object()) return Refuse(source, "", "must be an object");
  const std::string method = StringField(*config, "quant_method");
  if (method == "fp8") {
    auto block = config->find("weight_block_size");
    if (block != config->end() && !block->is_null()) {
      return Refuse(source, "weight_block_size",
                    "is set: block-wise FP8 scales are not supported (per-tensor and "
                    "per-channel scales are)");
    }
    return Quantization::kFp8;
  }
  if (method == "compressed-tensors") {
    const std::string format = StringField(*config, "format");
    if (format != "float-quantized" && format != "naive-quantized") {
      return Refuse(source, "format",
                    absl::StrCat("'", format, "' is not supported (float-quantized FP8 only)"));
    }
    auto groups = config->find("config_groups");
    if (groups == config->end() || !groups->is_object() || groups->empty()) {
      return Refuse(source, "config_groups", "is missing");
    }
    for (const auto& [name, group] : groups->items()) {
      if (absl::Status s = CheckCompressedTensorsGroup(name, group, source); !s.ok()) return s;
    }
    return Quantization::kFp8;
  }
  return Refuse(source, "quant_method",
                absl::StrCat("'", method, "' is not supported (supported: fp8, compressed-tensors "
                             "FP8; or serve the unquantized checkpoint, optionally with "
                             "--quantization fp8)"));
}

absl::StatusOr<Quantization> ParseQuantizationFlag(std::string_view value) {
  if (value == "none" || value.empty()) return Quantization::kNone;
  if (value == "fp8") return Quantization::kFp8;
  return absl::InvalidArgumentError(
      absl::StrCat("--quantization '", std::string(value), "': expected none or fp8"));
}

const char* QuantizationName(Quantization q) {
  switch (q) {
    case Quantization::kNone:
      return "none";
    case Quantization::kFp8:
      return "fp8";
  }
  return "?";
}

}  // namespace caduceus::model
