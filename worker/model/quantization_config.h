// config.json "quantization_config": which quantized checkpoints the engine serves.
//
// Accepted (docs/architecture.md, "FP8 weights"): FP8 E4M3 weights with per-tensor or
// per-output-channel scales, as written by AutoFP8 / Hugging Face ("quant_method": "fp8", without
// "weight_block_size") and by llm-compressor ("quant_method": "compressed-tensors", format
// "float-quantized" or "naive-quantized", weights of 8-bit "float" type, strategy "tensor" or
// "channel"). The engine serves them weight-only: activations stay fp32 whatever the
// checkpoint's activation scheme, so input scales are ignored (more precise, not less).
// Everything else (GPTQ, AWQ, bitsandbytes, block-wise FP8, int8, ...) is refused with an error
// that names the method, instead of loading integer tensors as if they were weights.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace caduceus::model {

enum class Quantization {
  kNone,  // bf16 / f16 / f32 weights
  kFp8,   // FP8 E4M3 projections with fp32 scales (the rest of the checkpoint unquantized)
};

// `config` is config.json's "quantization_config" object, or nullptr when absent. Errors are
// INVALID_ARGUMENT naming `source_name` and the field.
absl::StatusOr<Quantization> ParseQuantizationConfig(const nlohmann::json* config,
                                                     std::string_view source_name);

const char* QuantizationName(Quantization q);  // "none", "fp8"

// The --quantization flag of the worker and the tools: "none" (serve the checkpoint as stored)
// or "fp8" (quantize bf16 projections at load time; LoadOptions::quantize_fp8).
absl::StatusOr<Quantization> ParseQuantizationFlag(std::string_view value);

}  // namespace caduceus::model
