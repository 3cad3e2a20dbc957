// Golden values come from test_model_spec_golden.py (an independent Python implementation of
// docs/testmodel-spec.md), run once with /usr/bin/python3; the whole-model check against the
// oracle's checksums is worker/model/weight_store_test.cc.
#include "tools/make_test_model/test_model_spec.h"

#include <cmath>

#include "gtest/gtest.h"

namespace caduceus::testmodel {
namespace {

TEST(TestModelSpecTest, Mix64) {
  EXPECT_EQ(Mix64(0), 0u);
  EXPECT_EQ(Mix64(1), 0x5692161d100b05e5ull);
  EXPECT_EQ(Mix64(0xDEADBEEF), 0x4e062702ec929eeaull);
}

TEST(TestModelSpecTest, Fnv1a64) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("lm_head.weight"), 0xab67eb515e1b6f0dull);
}

TEST(TestModelSpecTest, NormalStream) {
  const uint64_t k = StreamKey(1, "model.embed_tokens.weight");
  EXPECT_EQ(k, 0xa6a000491ae4ed9ull);
  EXPECT_DOUBLE_EQ(NormalAt(k, 0), -2.0170683217000382);
  EXPECT_DOUBLE_EQ(NormalAt(k, 1), -1.1622624913646558);
  EXPECT_DOUBLE_EQ(NormalAt(k, 2), -0.3640475867251029);
  EXPECT_DOUBLE_EQ(NormalAt(k, 3), 0.060336858448242346);
}

const TensorSpec& FindSpec(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const auto& s : specs) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no tensor " << name;
  return specs.front();
}

TEST(TestModelSpecTest, TinyValuesAsBf16) {
  auto preset = PresetByName("tiny");
  ASSERT_TRUE(preset.ok());
  const auto specs = TensorSpecs(*preset);
  uint16_t out[4];
  TensorGenerator(FindSpec(specs, "model.layers.0.self_attn.q_proj.weight"), 1).FillBf16(0, 4, out);
  EXPECT_EQ(out[0], 0xbd94);
  EXPECT_EQ(out[1], 0xbb5e);
  EXPECT_EQ(out[2], 0x3d99);
  EXPECT_EQ(out[3], 0xbd27);
  TensorGenerator(FindSpec(specs, "model.norm.weight"), 1).FillBf16(0, 4, out);
  EXPECT_EQ(out[0], 0x3f75);
  EXPECT_EQ(out[1], 0x3f87);
  EXPECT_EQ(out[2], 0x3f7b);
  EXPECT_EQ(out[3], 0x3f7f);
  const TensorGenerator lm(FindSpec(specs, "lm_head.weight"), 1);
  const int64_t h = 256;
  uint16_t v;
  lm.FillBf16(0, 1, &v);
  EXPECT_EQ(v, 0x3f07);
  lm.FillBf16(255, 1, &v);
  EXPECT_EQ(v, 0x3f17);
  lm.FillBf16(1 * h + 3, 1, &v);
  EXPECT_EQ(v, 0x3e37);
  lm.FillBf16(128255 * h + 7, 1, &v);
  EXPECT_EQ(v, 0x3e48);
}

TEST(TestModelSpecTest, TensorListInHuggingFaceOrder) {
  auto preset = PresetByName("small");
  ASSERT_TRUE(preset.ok());
  const auto specs = TensorSpecs(*preset);
  ASSERT_EQ(specs.size(), 2u + 16u * 9u + 1u);
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs[1].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(specs[2].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(specs[2].shape, (std::vector<int64_t>{512, 2048}));
  EXPECT_EQ(specs[7].name, "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(specs[7].shape, (std::vector<int64_t>{2048, 8192}));
  EXPECT_EQ(specs[specs.size() - 2].name, "model.norm.weight");
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  EXPECT_EQ(specs.back().shape, (std::vector<int64_t>{128256, 2048}));
  EXPECT_FALSE(PresetByName("huge").ok());
}

}  // namespace
}  // namespace caduceus::testmodel
