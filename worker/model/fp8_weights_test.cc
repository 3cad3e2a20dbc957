// FP8 checkpoints through the loader (llama_weights.h): scale layouts, tensor-parallel slices of
// bytes and scales, load-time quantization, and the errors a malformed FP8 checkpoint gets. The
// checkpoints are written here byte by byte (safetensors_test_util.h): a one-layer micro Llama.
// End-to-end numerics against the float64 reference are the engine_*_fp8 CTests
// (tests/integration), on checkpoints made by tests/reference/quantize_fp8.py.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/fp8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/backend/emulated_device.h"
#include "worker/backend/kernel_table.h"
#include "worker/model/fp8_quantize.h"
#include "worker/model/llama_weights.h"
#include "worker/model/model_config.h"
#include "worker/model/model_test_util.h"
#include "worker/model/safetensors_test_util.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {
namespace {

using nlohmann::json;
using testing::MakeTempDir;
using testing::SafetensorsBytes;
using testing::WriteBytes;

constexpr int kHidden = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 16, kInter = 96, kVocab = 256;

struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Deterministic bytes: bf16 values in (-1, 1), E4M3 codes over the finite range.
std::string Bf16Bytes(int64_t count, uint32_t salt) {
  std::string s(static_cast<size_t>(count) * 2, '\0');
  for (int64_t i = 0; i < count; ++i) {
    const float v = std::sin(0.37f * static_cast<float>(i) + static_cast<float>(salt));
    const bf16 b = FloatToBf16(v);
    std::memcpy(s.data() + 2 * i, &b.bits, 2);
  }
  return s;
}
std::string Fp8Bytes(int64_t count, uint32_t salt) {
  std::string s(static_cast<size_t>(count), '\0');
  for (int64_t i = 0; i < count; ++i) {
    uint8_t code = static_cast<uint8_t>((i * 37 + salt * 11) % 254);
    if (code >= 127) code = static_cast<uint8_t>(0x80 + (code - 127));  // skip the NaN codes
    s[static_cast<size_t>(i)] = static_cast<char>(code);
  }
  return s;
}
std::string F32Bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// The micro model's tensors, all bf16; tests replace projections by FP8 ones.
std::map<std::string, Tensor> MicroModel() {
  std::map<std::string, Tensor> t;
  uint32_t salt = 1;
  auto bf16 = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t[name] = {"BF16", shape, Bf16Bytes(n, salt++)};
  };
  bf16("model.embed_tokens.weight", {kVocab, kHidden});
  bf16("model.norm.weight", {kHidden});
  bf16("lm_head.weight", {kVocab, kHidden});
  const std::string p = "model.layers.0.";
  bf16(p + "input_layernorm.weight", {kHidden});
  bf16(p + "post_attention_layernorm.weight", {kHidden});
  bf16(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden});
  bf16(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden});
  bf16(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden});
  bf16(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim});
  bf16(p + "mlp.gate_proj.weight", {kInter, kHidden});
  bf16(p + "mlp.up_proj.weight", {kInter, kHidden});
  bf16(p + "mlp.down_proj.weight", {kHidden, kInter});
  return t;
}

// Replaces `name` (a projection "....weight") by FP8 bytes and a scale of `scale_shape` with
// values 0.5, 0.75, 1.0, ... per element.
void MakeFp8(std::map<std::string, Tensor>& t, const std::string& name,
             std::vector<int64_t> scale_shape) {
  Tensor& w = t.at(name);
  w.dtype = "F8_E4M3";
  w.bytes = Fp8Bytes(w.shape[0] * w.shape[1], static_cast<uint32_t>(name.size()));
  int64_t n = 1;
  for (int64_t d : scale_shape) n *= d;
  std::vector<float> scales(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) scales[i] = 0.5f + 0.25f * static_cast<float>(i);
  t[name + "_scale"] = {"F32", scale_shape, F32Bytes(scales)};
}

constexpr const char* kProjections[] = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
    "mlp.down_proj.weight"};

json Config() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
          {"hidden_size", kHidden}, {"num_hidden_layers", 1}, {"num_attention_heads", kHeads},
          {"num_key_value_heads", kKvHeads}, {"intermediate_size", kInter},
          {"vocab_size", kVocab}, {"max_position_embeddings", 128}, {"rope_theta", 10000.0},
          {"rms_norm_eps", 1e-5}, {"bos_token_id", 1}, {"eos_token_id", 2},
          {"quantization_config", {{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}}}};
}

std::string WriteModel(const std::map<std::string, Tensor>& tensors, const json& config) {
  const std::string dir = MakeTempDir("fp8_model");
  json header = json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape},
                    {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  WriteBytes(dir + "/model.safetensors", SafetensorsBytes(header, data));
  WriteBytes(dir + "/config.json", config.dump());
  return dir;
}

struct Loaded {
  absl::StatusOr<LlamaWeights> weights = absl::UnknownError("not loaded");
  std::unique_ptr<WeightStore> store;
  std::unique_ptr<WeightPlacement> placement;
};

Loaded Load(const std::string& dir, int rank = 0, int size = 1, bool quantize = false,
            bool resident = false) {
  Loaded out;
  auto config = ModelConfig::LoadFromDir(dir);
  if (!config.ok()) {
    out.weights = config.status();
    return out;
  }
  auto layout = ShardLayout::Make(*config, {rank, size});
  auto store = WeightStore::Open(dir);
  if (!layout.ok() || !store.ok()) {
    out.weights = !layout.ok() ? layout.status() : store.status();
    return out;
  }
  out.store = std::move(*store);
  auto placement = WeightPlacement::Create(
      backend::HostMemoryOps(), resident,
      LlamaWeights::ArenaBytes(*config, *layout, *out.store, quantize));
  if (!placement.ok()) {
    out.weights = placement.status();
    return out;
  }
  out.placement = std::move(*placement);
  out.weights = LlamaWeights::Load(*config, *layout, *out.store, *out.placement, quantize);
  return out;
}

std::map<std::string, Tensor> AllFp8(std::vector<int64_t> (*scale_shape)(int64_t rows)) {
  auto t = MicroModel();
  for (const char* proj : kProjections) {
    const std::string name = std::string("model.layers.0.") + proj;
    MakeFp8(t, name, scale_shape(t.at(name).shape[0]));
  }
  return t;
}

std::vector<int64_t> PerChannel(int64_t rows) { return {rows, 1}; }
std::vector<int64_t> PerChannelFlat(int64_t rows) { return {rows}; }
std::vector<int64_t> PerTensor(int64_t) { return {}; }
std::vector<int64_t> PerTensorOne(int64_t) { return {1}; }

TEST(Fp8WeightsTest, EveryScaleLayoutLoadsWithTheCheckpointBytes) {
  for (auto shape : {&PerChannel, &PerChannelFlat, &PerTensor, &PerTensorOne}) {
    const auto tensors = AllFp8(shape);
    for (const bool resident : {false, true}) {
      Loaded l = Load(WriteModel(tensors, Config()), 0, 1, false, resident);
      ASSERT_TRUE(l.weights.ok()) << l.weights.status();
      const LayerWeights& w = l.weights->layers[0];
      EXPECT_STREQ(l.weights->quantization, "fp8");
      ASSERT_NE(w.qkv_proj.fp8, nullptr);
      EXPECT_EQ(w.qkv_proj.values, nullptr);
      // q|k|v stacked: k's first row follows q's rows, with k's own scales.
      const Tensor& q = tensors.at("model.layers.0.self_attn.q_proj.weight");
      const Tensor& k = tensors.at("model.layers.0.self_attn.k_proj.weight");
      EXPECT_EQ(std::memcmp(w.qkv_proj.fp8, q.bytes.data(), q.bytes.size()), 0);
      EXPECT_EQ(std::memcmp(w.qkv_proj.fp8 + q.bytes.size(), k.bytes.data(), k.bytes.size()), 0);
      const bool per_tensor = shape == &PerTensor || shape == &PerTensorOne;
      const int q_rows = kHeads * kHeadDim;
      EXPECT_EQ(w.qkv_proj.scale[0], 0.5f);
      EXPECT_EQ(w.qkv_proj.scale[3], per_tensor ? 0.5f : 1.25f);
      EXPECT_EQ(w.qkv_proj.scale[q_rows], 0.5f);  // k's first row: its own scale
      EXPECT_EQ(w.qkv_proj.scale[q_rows + 1], per_tensor ? 0.5f : 0.75f);
      EXPECT_EQ(w.down_proj.scale[kHidden - 1], per_tensor ? 0.5f : 0.5f + 0.25f * (kHidden - 1));
      // The lm_head and the embedding stay bf16.
      EXPECT_NE(l.weights->lm_head, nullptr);
    }
  }
}

TEST(Fp8WeightsTest, TensorParallelSlicesTakeTheirRowsAndColumnsAndScales) {
  const auto tensors = AllFp8(&PerChannel);
  const std::string dir = WriteModel(tensors, Config());
  for (int rank = 0; rank < 2; ++rank) {
    Loaded l = Load(dir, rank, 2);
    ASSERT_TRUE(l.weights.ok()) << l.weights.status();
    const LayerWeights& w = l.weights->layers[0];
    // Column-parallel gate: this rank's rows [rank * I/2, (rank + 1) * I/2) and their scales.
    const Tensor& gate = tensors.at("model.layers.0.mlp.gate_proj.weight");
    const int half = kInter / 2;
    EXPECT_EQ(std::memcmp(w.gate_up_proj.fp8, gate.bytes.data() + rank * half * kHidden,
                          static_cast<size_t>(half) * kHidden), 0);
    EXPECT_EQ(w.gate_up_proj.scale[0], 0.5f + 0.25f * (rank * half));
    // Row-parallel down: every output row, this rank's columns, the full rows' scales.
    const Tensor& down = tensors.at("model.layers.0.mlp.down_proj.weight");
    for (int r = 0; r < kHidden; ++r) {
      ASSERT_EQ(std::memcmp(w.down_proj.fp8 + r * half, down.bytes.data() + r * kInter + rank * half,
                            static_cast<size_t>(half)), 0) << "row " << r;
      ASSERT_EQ(w.down_proj.scale[r], 0.5f + 0.25f * r);
    }
  }
}

TEST(Fp8WeightsTest, QuantizingAtLoadStoresTheNearestCodesAndRowScales) {
  Loaded l = Load(WriteModel(MicroModel(), Config()), 0, 1, /*quantize=*/true, /*resident=*/true);
  ASSERT_TRUE(l.weights.ok()) << l.weights.status();
  EXPECT_STREQ(l.weights->quantization, "fp8-online");
  const auto model = MicroModel();
  const Tensor& up = model.at("model.layers.0.mlp.up_proj.weight");
  const LinearWeight& w = l.weights->layers[0].gate_up_proj;
  ASSERT_NE(w.fp8, nullptr);
  for (int r = 0; r < kInter; ++r) {
    const int row = kInter + r;  // up's rows follow gate's
    float amax = 0;
    for (int c = 0; c < kHidden; ++c) {
      bf16 b;
      std::memcpy(&b.bits, up.bytes.data() + 2 * (r * kHidden + c), 2);
      amax = std::max(amax, std::fabs(Bf16ToFloat(b)));
    }
    ASSERT_EQ(w.scale[row], amax / 448.0f) << r;
    for (int c = 0; c < kHidden; ++c) {
      bf16 b;
      std::memcpy(&b.bits, up.bytes.data() + 2 * (r * kHidden + c), 2);
      const float value = Bf16ToFloat(b);
      const float got = Fp8E4M3ToFloat(w.fp8[row * kHidden + c]) * w.scale[row];
      // Nearest code: within half a step of the E4M3 grid (relative 2^-4) or the subnormal step.
      ASSERT_LE(std::fabs(got - value), std::fabs(value) / 16 + w.scale[row] * 0x1p-10f)
          << r << "," << c;
    }
  }
}

TEST(Fp8WeightsTest, Fp8ProjectionsHalveTheArena) {
  auto config = ModelConfig::FromJson(Config().dump(), "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string bf16_dir = WriteModel(MicroModel(), Config());
  const std::string fp8_dir = WriteModel(AllFp8(&PerChannel), Config());
  auto bf16_store = WeightStore::Open(bf16_dir);
  auto fp8_store = WeightStore::Open(fp8_dir);
  ASSERT_TRUE(bf16_store.ok() && fp8_store.ok());
  const ShardLayout full = ShardLayout::Full(*config);
  const size_t lm_head = WeightArena::Footprint(size_t{kVocab} * kHidden * 2);
  const size_t bf16_bytes = LlamaWeights::ArenaBytes(*config, full, **bf16_store, false);
  EXPECT_EQ(bf16_bytes, LlamaWeights::ArenaBytes(*config, full));
  EXPECT_EQ(LlamaWeights::ArenaBytes(*config, full, **fp8_store, false) - lm_head,
            (bf16_bytes - lm_head) / 2);
  EXPECT_EQ(LlamaWeights::ArenaBytes(*config, full, **bf16_store, true),
            LlamaWeights::ArenaBytes(*config, full, **fp8_store, false));
}

void ExpectLoadError(const std::map<std::string, Tensor>& tensors, absl::StatusCode code,
                     const std::string& needle) {
  Loaded l = Load(WriteModel(tensors, Config()));
  ASSERT_FALSE(l.weights.ok());
  EXPECT_EQ(l.weights.status().code(), code) << l.weights.status();
  EXPECT_NE(l.weights.status().message().find(needle), std::string::npos) << l.weights.status();
}

TEST(Fp8WeightsTest, MalformedFp8CheckpointsGetErrorsNamingTheTensor) {
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  {  // a scale missing
    auto t = AllFp8(&PerChannel);
    t.erase(q + "_scale");
    ExpectLoadError(t, absl::StatusCode::kNotFound, q + "_scale");
  }
  {  // a scale of the wrong shape
    auto t = AllFp8(&PerChannel);
    t[q + "_scale"] = {"F32", {2, 2}, F32Bytes({1, 1, 1, 1})};
    ExpectLoadError(t, absl::StatusCode::kInvalidArgument, "per-channel");
  }
  {  // a NaN or negative scale
    for (const float bad : {NAN, -1.0f, INFINITY}) {
      auto t = AllFp8(&PerTensor);
      t[q + "_scale"] = {"F32", {}, F32Bytes({bad})};
      ExpectLoadError(t, absl::StatusCode::kInvalidArgument, q + "_scale");
    }
  }
  {  // q in FP8, k and v in bf16: they cannot be fused into one matrix
    auto t = MicroModel();
    MakeFp8(t, q, {});
    ExpectLoadError(t, absl::StatusCode::kInvalidArgument, "fused");
  }
  {  // an FP8 lm_head (the loader keeps it bf16; it has no FP8 path)
    auto t = AllFp8(&PerChannel);
    MakeFp8(t, "lm_head.weight", {});
    ExpectLoadError(t, absl::StatusCode::kInvalidArgument, "lm_head.weight");
  }
}

TEST(Fp8WeightsTest, QuantizeRowsMatchesTheDefinitionOnEdgeRows) {
  // An all-zero row gets scale 1 and zero codes; a row's largest magnitude becomes +-448.
  const std::vector<float> values = {0, 0, 0, 0, 1.0f, -3.0f, 0.001f, 2.0f};
  std::vector<bf16> w;
  for (float v : values) w.push_back(FloatToBf16(v));
  uint8_t out[8];
  float scale[2];
  QuantizeRowsFp8(w.data(), 2, 4, out, scale);
  EXPECT_EQ(scale[0], 1.0f);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], 0);
  EXPECT_EQ(scale[1], 3.0f / 448.0f);
  EXPECT_EQ(out[5], 0xFE);  // -448
  EXPECT_EQ(out[4], FloatToFp8E4M3(1.0f / scale[1]));
  EXPECT_EQ(out[6], FloatToFp8E4M3(Bf16ToFloat(FloatToBf16(0.001f)) / scale[1]));
  EXPECT_EQ(out[7], FloatToFp8E4M3(2.0f / scale[1]));
}

// The tiny model quantized by tests/reference/quantize_fp8.py (CTest fixture tiny_model_fp8),
// through LlamaModel: every placement runs the same CPU kernels on the same bytes, so the logits
// keep their bits from the mapped files to the host arena to (emulated) device memory, where
// every kernel argument, FP8 bytes and scales included, is checked to be device memory. A
// tensor-parallel pair splits the row-parallel sums, so its logits are close, not equal.
TEST(Fp8ModelTest, SameBitsInEveryPlacementAndCloseAcrossRanks) {
  const std::string dir = test_util::TinyModelDir() + "-fp8";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << dir << " missing (run through ctest)";
  const std::vector<test_util::Trace> mapped =
      test_util::RunGroup(1, /*resident_weights=*/false, true, "cpu", nullptr, dir);
  ASSERT_TRUE(mapped[0].status.ok()) << mapped[0].status;
  const std::vector<test_util::Trace> arena = test_util::RunGroup(1, true, true, "cpu", nullptr, dir);
  const std::vector<test_util::Trace> device =
      test_util::RunGroup(1, true, true, backend::kEmulatedDevice, nullptr, dir);
  for (const auto* t : {&arena[0], &device[0]}) {
    ASSERT_TRUE(t->status.ok()) << t->status;
    EXPECT_EQ(t->tokens, mapped[0].tokens);
    EXPECT_TRUE(t->logits == mapped[0].logits);
  }
  const std::vector<test_util::Trace> tp2 = test_util::RunGroup(2, true, true, "cpu", nullptr, dir);
  ASSERT_TRUE(tp2[0].status.ok()) << tp2[0].status;
  EXPECT_EQ(tp2[0].tokens, mapped[0].tokens);
  for (size_t step = 0; step < mapped[0].logits.size(); ++step) {
    const std::vector<float>& a = tp2[0].logits[step];
    const std::vector<float>& b = mapped[0].logits[step];
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j) {
      ASSERT_NEAR(a[j], b[j], 1e-3 * (1 + std::fabs(b[j]))) << "step " << step << " logit " << j;
    }
  }
}

}  // namespace
}  // namespace caduceus::model
