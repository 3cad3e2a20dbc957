// WeightStore: the generated tiny model against the independent per-tensor checksums, dtype
// conversion, row/column slices, and malformed model directories.
#include "worker/model/weight_store.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_config.h"
#include "worker/model/safetensors_test_util.h"
#include "worker/model/sha256_for_test.h"

namespace caduceus::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;
using testing::MakeTempDir;
using testing::RawBytes;
using testing::SafetensorsBytes;
using testing::Sha256Hex;
using testing::WriteBytes;

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : fallback;
}

json ReadJson(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

TEST(Sha256ForTest, KnownVectors) {
  EXPECT_EQ(Sha256Hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(Sha256Hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

// Every tensor of a model directory, read through GetBf16, against
// tests/fixtures/tiny_seed1_tensor_sha256.json (from an independent implementation).
void ExpectMatchesTinySeed1Checksums(const std::string& model_dir) {
  const json golden =
      ReadJson(EnvOr("CADUCEUS_FIXTURES_DIR", "tests/fixtures") + "/tiny_seed1_tensor_sha256.json");
  auto store = WeightStore::Open(model_dir);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<std::string> expected_names;
  for (const auto& [name, entry] : golden["tensors"].items()) {
    expected_names.push_back(name);
    const std::vector<int64_t> shape = entry["shape"].get<std::vector<int64_t>>();
    auto data = (*store)->GetBf16(name, shape);
    ASSERT_TRUE(data.ok()) << data.status();
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    EXPECT_EQ(Sha256Hex(*data, static_cast<size_t>(n) * 2), entry["sha256_bf16"].get<std::string>())
        << name;
  }
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ((*store)->TensorNames(), expected_names);
}

TEST(WeightStoreTest, GeneratedTinySeed1MatchesIndependentChecksums) {
  const std::string dir = EnvOr("CADUCEUS_TESTDATA_DIR", "") + "/tiny-seed1";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " missing (run through ctest: fixture tiny_model)";
  ASSERT_TRUE(fs::exists(dir + "/" + kIndexFileName));
  // At least two shards, so that the index path is what was exercised.
  const json index = ReadJson(dir + "/" + kIndexFileName);
  std::set<std::string> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) shards.insert(shard);
  EXPECT_GE(shards.size(), 2u);
  ExpectMatchesTinySeed1Checksums(dir);
  // The tokenizer files were copied alongside.
  EXPECT_TRUE(fs::exists(dir + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir + "/tokenizer_config.json"));
}

TEST(WeightStoreTest, GeneratedF32TinyConvertsToTheSameBf16) {
  const std::string bin = EnvOr("CADUCEUS_BIN_DIR", "") + "/caduceus-make-test-model";
  if (!fs::exists(bin)) GTEST_SKIP() << bin << " missing (run through ctest)";
  const std::string out = MakeTempDir("weight_store_f32");
  const std::string cmd = bin + " --preset tiny --seed 1 --dtype f32 --out " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ExpectMatchesTinySeed1Checksums(out);
  fs::remove_all(out);
}

class WeightStoreFilesTest : public ::testing::Test {
 public:  // the table-driven cases below call these from lambdas
  void SetUp() override { dir_ = MakeTempDir("weight_store_test"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

TEST_F(WeightStoreFilesTest, ConvertsF32AndF16ToBf16RoundingToNearestEven) {
  // Expected bits worked out by hand from the IEEE encodings.
  const std::string f32 = RawBytes<uint32_t>({
      0x3f800000,  // 1.0                      -> 0x3f80
      0x3f808000,  // 1 + 2^-8: tie, even down -> 0x3f80
      0x3f818000,  // tie, odd rounds up       -> 0x3f82
      0x3f808001,  // just above the tie       -> 0x3f81
      0xbf7fffff,  // -(1 - 2^-24)             -> 0xbf80
      0x7f800000,  // +inf                     -> 0x7f80
      0x80000000,  // -0                       -> 0x8000
      0x7f7fffff,  // FLT_MAX overflows to     -> 0x7f80 (inf)
  });
  const std::string f16 = RawBytes<uint16_t>({
      0x3c00,  // 1.0                          -> 0x3f80
      0x3c01,  // 1 + 2^-10 (below half ulp)   -> 0x3f80
      0x7bff,  // 65504 = 0x477fe000           -> 0x4780
      0x0001,  // 2^-24 (subnormal)            -> 0x3380
      0xfc00,  // -inf                         -> 0xff80
      0xc000,  // -2                           -> 0xc000
      0x3c0c,  // 1 + 12*2^-10 = 0x3f818000 tie-> 0x3f82
      0x0000,  // 0                            -> 0x0000
  });
  const json header = {
      {"w32", {{"dtype", "F32"}, {"shape", {2, 4}}, {"data_offsets", {0, 32}}}},
      {"w16", {{"dtype", "F16"}, {"shape", {8}}, {"data_offsets", {32, 48}}}},
  };
  WriteBytes(Path(kSingleFileName), SafetensorsBytes(header, f32 + f16));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  const int64_t s32[] = {2, 4};
  auto w32 = (*store)->GetBf16("w32", s32);
  ASSERT_TRUE(w32.ok()) << w32.status();
  const std::vector<uint16_t> want32 = {0x3f80, 0x3f80, 0x3f82, 0x3f81,
                                        0xbf80, 0x7f80, 0x8000, 0x7f80};
  for (size_t i = 0; i < want32.size(); ++i) EXPECT_EQ((*w32)[i].bits, want32[i]) << i;
  const int64_t s16[] = {8};
  auto w16 = (*store)->GetBf16("w16", s16);
  ASSERT_TRUE(w16.ok()) << w16.status();
  const std::vector<uint16_t> want16 = {0x3f80, 0x3f80, 0x4780, 0x3380,
                                        0xff80, 0xc000, 0x3f82, 0x0000};
  for (size_t i = 0; i < want16.size(); ++i) EXPECT_EQ((*w16)[i].bits, want16[i]) << i;
  // A second request returns the same owned copy.
  EXPECT_EQ(*(*store)->GetBf16("w16", s16), *w16);

  // Rows and columns of a converted tensor.
  auto rows = (*store)->GetBf16Rows("w32", s32, 1, 2);
  ASSERT_TRUE(rows.ok()) << rows.status();
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*rows)[i].bits, want32[4 + i]);
  auto cols = (*store)->GetBf16Cols("w32", s32, 2, 4);
  ASSERT_TRUE(cols.ok()) << cols.status();
  const std::vector<uint16_t> want_cols = {want32[2], want32[3], want32[6], want32[7]};
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*cols)[i].bits, want_cols[i]) << i;
  (*store)->Release("w32");
  auto again = (*store)->GetBf16("w32", s32);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[2].bits, 0x3f82);
}

TEST_F(WeightStoreFilesTest, Bf16IsZeroCopyAndSlicesAreViews) {
  const std::string data =
      RawBytes<uint16_t>({0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0, 0x4100,
                          0x4110, 0x4120, 0x4130, 0x4140});
  const json header = {
      {"m", {{"dtype", "BF16"}, {"shape", {3, 4}}, {"data_offsets", {0, 24}}}}};
  WriteBytes(Path(kSingleFileName), SafetensorsBytes(header, data));
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  const int64_t shape[] = {3, 4};
  auto all = (*store)->GetBf16("m", shape);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(reinterpret_cast<const uint8_t*>(*all), (*store)->Find("m")->data);
  (*store)->Prefetch("m");
  (*store)->Prefetch("absent");  // a hint: unknown names are ignored
  auto rows = (*store)->GetBf16Rows("m", shape, 1, 3);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, *all + 4);
  EXPECT_EQ((*rows)[0].bits, 0x40a0);
  auto empty_rows = (*store)->GetBf16Rows("m", shape, 3, 3);
  EXPECT_TRUE(empty_rows.ok());
  auto cols = (*store)->GetBf16Cols("m", shape, 1, 2);
  ASSERT_TRUE(cols.ok());
  EXPECT_EQ((*cols)[0].bits, 0x4000);
  EXPECT_EQ((*cols)[1].bits, 0x40c0);
  EXPECT_EQ((*cols)[2].bits, 0x4120);

  EXPECT_EQ((*store)->GetBf16Rows("m", shape, 2, 4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*store)->GetBf16Rows("m", shape, -1, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*store)->GetBf16Cols("m", shape, 3, 5).status().code(), absl::StatusCode::kOutOfRange);

  const int64_t wrong[] = {4, 3};
  auto bad_shape = (*store)->Get("m", wrong);
  ASSERT_FALSE(bad_shape.ok());
  EXPECT_EQ(bad_shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_shape.status().message(), HasSubstr("'m'"));
  EXPECT_THAT(bad_shape.status().message(), HasSubstr(kSingleFileName));
  EXPECT_THAT(bad_shape.status().message(), HasSubstr("[3, 4]"));
  const int64_t rank1[] = {12};
  EXPECT_FALSE((*store)->GetBf16("m", rank1).ok());
  auto missing = (*store)->Get("nope", shape);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("'nope'"));
}

// Two valid shards holding "x" and "y", plus an index; the cases then break one piece.
class WeightStoreIndexTest : public WeightStoreFilesTest {
 public:
  void WriteShards() {
    const json hx = {{"x", {{"dtype", "BF16"}, {"shape", {2}}, {"data_offsets", {0, 4}}}}};
    const json hy = {{"y", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}};
    WriteBytes(Path("s1.safetensors"), SafetensorsBytes(hx, RawBytes<uint16_t>({0x3f80, 0x4000})));
    WriteBytes(Path("s2.safetensors"), SafetensorsBytes(hy, RawBytes<float>({2.5f})));
  }
  json Index() const {
    return {{"metadata", {{"total_size", 8}}},
            {"weight_map", {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}}}};
  }
  void WriteIndex(const json& index) { WriteIndexText(index.dump()); }
  void WriteIndexText(const std::string& text) { WriteBytes(Path(kIndexFileName), text); }
};

TEST_F(WeightStoreIndexTest, OpensValidIndex) {
  WriteShards();
  WriteIndex(Index());
  auto store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->TensorNames(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*store)->total_bytes(), 8u);
  const int64_t one[] = {1};
  auto y = (*store)->GetBf16("y", one);
  ASSERT_TRUE(y.ok());
  EXPECT_EQ((*y)[0].bits, 0x4020);  // 2.5f
  EXPECT_EQ((*store)->Find("y")->file, Path("s2.safetensors"));
}

TEST_F(WeightStoreIndexTest, MalformedIndexesGiveErrorsNamingFiles) {
  struct Case {
    std::string label;
    absl::StatusCode code;
    std::vector<std::string> must_mention;
    std::function<void(WeightStoreIndexTest&)> setup;
  };
  const std::vector<Case> cases = {
      {"missing shard", absl::StatusCode::kNotFound, {kIndexFileName, "s3.safetensors", "'z'"},
       [](WeightStoreIndexTest& t) {
         json i = t.Index();
         i["weight_map"]["z"] = "s3.safetensors";
         t.WriteIndex(i);
       }},
      {"tensor absent from its shard", absl::StatusCode::kNotFound,
       {kIndexFileName, "s1.safetensors", "'w'"},
       [](WeightStoreIndexTest& t) {
         json i = t.Index();
         i["weight_map"]["w"] = "s1.safetensors";
         t.WriteIndex(i);
       }},
      {"tensor listed in the wrong shard", absl::StatusCode::kNotFound,
       {"s2.safetensors", "'x'"},
       [](WeightStoreIndexTest& t) {
         json i = t.Index();
         i["weight_map"]["x"] = "s2.safetensors";
         t.WriteIndex(i);
       }},
      {"no weight_map", absl::StatusCode::kInvalidArgument, {kIndexFileName, "weight_map"},
       [](WeightStoreIndexTest& t) { t.WriteIndex({{"metadata", json::object()}}); }},
      {"empty weight_map", absl::StatusCode::kInvalidArgument, {kIndexFileName},
       [](WeightStoreIndexTest& t) { t.WriteIndex({{"weight_map", json::object()}}); }},
      {"index not json", absl::StatusCode::kInvalidArgument, {kIndexFileName},
       [](WeightStoreIndexTest& t) { t.WriteIndexText("{\"weight_map\": "); }},
      {"shard not a string", absl::StatusCode::kInvalidArgument, {kIndexFileName, "'x'"},
       [](WeightStoreIndexTest& t) {
         json i = t.Index();
         i["weight_map"]["x"] = 1;
         t.WriteIndex(i);
       }},
      {"shard escaping the directory", absl::StatusCode::kInvalidArgument, {kIndexFileName, "'x'"},
       [](WeightStoreIndexTest& t) {
         json i = t.Index();
         i["weight_map"]["x"] = "../s1.safetensors";
         t.WriteIndex(i);
       }},
      {"corrupt shard", absl::StatusCode::kInvalidArgument,
       {kIndexFileName, "s2.safetensors", "'y'"},
       [](WeightStoreIndexTest& t) {
         const json hy = {{"y", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 4}}}}};
         WriteBytes(t.Path("s2.safetensors"), SafetensorsBytes(hy, RawBytes<float>({2.5f})));
         t.WriteIndex(t.Index());
       }},
  };
  for (const Case& c : cases) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    WriteShards();
    c.setup(*this);
    auto store = WeightStore::Open(dir_);
    ASSERT_FALSE(store.ok()) << c.label;
    EXPECT_EQ(store.status().code(), c.code) << c.label << ": " << store.status();
    for (const std::string& s : c.must_mention) {
      EXPECT_THAT(store.status().message(), HasSubstr(s)) << c.label << ": " << store.status();
    }
  }
}

TEST_F(WeightStoreFilesTest, EmptyDirectoryIsNotFound) {
  auto store = WeightStore::Open(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(store.status().message(), HasSubstr(dir_));
}

}  // namespace
}  // namespace caduceus::model
