// The synthetic test-model weight specification (docs/testmodel-spec.md): presets, the tensor
// list in Hugging Face order, and the counter-based random stream that defines every value.
// Kept apart from the file writing so that the RNG can be unit-tested against values computed
// by an independent implementation (test_model_spec_golden.py).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace caduceus::testmodel {

struct Preset {
  std::string name;
  int hidden = 0;
  int layers = 0;
  int heads = 0;
  int kv_heads = 0;
  int intermediate = 0;
  int vocab = 128256;
};

absl::StatusOr<Preset> PresetByName(std::string_view name);

// How a tensor's values derive from its normal stream z.
enum class InitKind {
  kScaled,  // scale * z
  kNorm,    // 1 + 0.05 * z
  kLmHead,  // (16 / sqrt(H)) * exp(0.5 * r_row) * z, r from the "#rowscale" stream
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  InitKind kind = InitKind::kScaled;
  double scale = 1.0;  // kScaled: the factor; kLmHead: 16 / sqrt(H)

  int64_t NumElements() const;
};

// All tensors of the preset in Hugging Face state-dict order (embeddings, layer by layer with
// attention then MLP then norms, final norm, lm_head).
std::vector<TensorSpec> TensorSpecs(const Preset& preset);

// --- The random stream (all integer arithmetic modulo 2^64). ---
uint64_t Mix64(uint64_t z);
uint64_t Fnv1a64(std::string_view s);
uint64_t StreamKey(uint64_t seed, std::string_view name);
// Element i of the standard-normal stream with the given key (Box-Muller, float64, C libm).
double NormalAt(uint64_t key, uint64_t i);

// float64 -> float32 -> bf16 bits, round to nearest even (as the specification prescribes).
uint16_t SpecToBf16Bits(double v);

// Generates a tensor's values. FillBf16 writes elements [begin, begin + count) as bf16 bits,
// parallel over elements with OpenMP; deterministic because each element depends only on its
// index. For lm_head the per-row factors are computed once, in the constructor.
class TensorGenerator {
 public:
  TensorGenerator(const TensorSpec& spec, uint64_t seed);
  void FillBf16(int64_t begin, int64_t count, uint16_t* out) const;

 private:
  double ValueAt(int64_t flat_index) const;

  TensorSpec spec_;
  uint64_t key_;
  int64_t row_len_;
  std::vector<double> row_factor_;  // kLmHead only: (16/sqrt(H)) * exp(0.5 * r_j)
};

}  // namespace caduceus::testmodel
