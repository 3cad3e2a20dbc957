#include "tools/make_test_model/test_model_spec.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"

namespace caduceus::testmodel {
namespace {

constexpr double kTwoPow32 = 4294967296.0;
constexpr double kPi = 3.14159265358979323846;

}  // namespace

absl::StatusOr<Preset> PresetByName(std::string_view name) {
  Preset p;
  p.name = std::string(name);
  if (name == "tiny") {
    p.hidden = 256;
    p.layers = 4;
    p.heads = 8;
    p.kv_heads = 2;
    p.intermediate = 768;
  } else if (name == "small") {
    p.hidden = 2048;
    p.layers = 16;
    p.heads = 32;
    p.kv_heads = 8;
    p.intermediate = 8192;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset '", std::string(name), "' (expected tiny or small)"));
  }
  return p;
}

int64_t TensorSpec::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<TensorSpec> TensorSpecs(const Preset& p) {
  const int64_t h = p.hidden, inter = p.intermediate, v = p.vocab;
  const int64_t kv = static_cast<int64_t>(p.kv_heads) * (p.hidden / p.heads);
  const double inv_sqrt_h = 1.0 / std::sqrt(static_cast<double>(h));
  const double qk_scale = 1.4 / std::sqrt(static_cast<double>(h));
  const double down_scale = 1.0 / std::sqrt(static_cast<double>(inter));
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight", {v, h}, InitKind::kScaled, 1.0});
  for (int i = 0; i < p.layers; ++i) {
    const std::string pre = absl::StrCat("model.layers.", i, ".");
    out.push_back({pre + "self_attn.q_proj.weight", {h, h}, InitKind::kScaled, qk_scale});
    out.push_back({pre + "self_attn.k_proj.weight", {kv, h}, InitKind::kScaled, qk_scale});
    out.push_back({pre + "self_attn.v_proj.weight", {kv, h}, InitKind::kScaled, inv_sqrt_h});
    out.push_back({pre + "self_attn.o_proj.weight", {h, h}, InitKind::kScaled, inv_sqrt_h});
    out.push_back({pre + "mlp.gate_proj.weight", {inter, h}, InitKind::kScaled, inv_sqrt_h});
    out.push_back({pre + "mlp.up_proj.weight", {inter, h}, InitKind::kScaled, inv_sqrt_h});
    out.push_back({pre + "mlp.down_proj.weight", {h, inter}, InitKind::kScaled, down_scale});
    out.push_back({pre + "input_layernorm.weight", {h}, InitKind::kNorm, 0.0});
    out.push_back({pre + "post_attention_layernorm.weight", {h}, InitKind::kNorm, 0.0});
  }
  out.push_back({"model.norm.weight", {h}, InitKind::kNorm, 0.0});
  out.push_back({"lm_head.weight", {v, h}, InitKind::kLmHead,
                 16.0 / std::sqrt(static_cast<double>(h))});
  return out;
}

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char b : s) h = (h ^ b) * 0x100000001B3ull;
  return h;
}

uint64_t StreamKey(uint64_t seed, std::string_view name) {
  return Mix64(Mix64(seed) ^ Fnv1a64(name));
}

double NormalAt(uint64_t key, uint64_t i) {
  const uint64_t u = Mix64(key + (i + 1) * 0x9E3779B97F4A7C15ull);
  const double u1 = (static_cast<double>(u >> 32) + 0.5) / kTwoPow32;
  const double u2 = static_cast<double>(u & 0xFFFFFFFFull) / kTwoPow32;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
}

uint16_t SpecToBf16Bits(double v) { return FloatToBf16(static_cast<float>(v)).bits; }

TensorGenerator::TensorGenerator(const TensorSpec& spec, uint64_t seed)
    : spec_(spec), key_(StreamKey(seed, spec.name)) {
  row_len_ = spec_.shape.size() >= 2 ? spec_.shape.back() : 1;
  if (spec_.kind == InitKind::kLmHead) {
    const uint64_t row_key = StreamKey(seed, spec_.name + "#rowscale");
    const int64_t rows = spec_.shape[0];
    row_factor_.resize(rows);
    for (int64_t j = 0; j < rows; ++j) {
      row_factor_[j] = spec_.scale * std::exp(0.5 * NormalAt(row_key, j));
    }
  }
}

double TensorGenerator::ValueAt(int64_t flat_index) const {
  const double z = NormalAt(key_, static_cast<uint64_t>(flat_index));
  switch (spec_.kind) {
    case InitKind::kScaled:
      return spec_.scale * z;
    case InitKind::kNorm:
      return 1.0 + 0.05 * z;
    case InitKind::kLmHead:
      return row_factor_[flat_index / row_len_] * z;
  }
  return 0.0;
}

void TensorGenerator::FillBf16(int64_t begin, int64_t count, uint16_t* out) const {
  // Static schedule: the work per element is uniform, and the result does not depend on it.
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < count; ++k) out[k] = SpecToBf16Bits(ValueAt(begin + k));
}

}  // namespace caduceus::testmodel
