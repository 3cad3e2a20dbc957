// SafetensorsFile: valid files, and a corpus of malformed ones made by byte surgery on a valid
// file. Every malformed file must give an error naming the file (and the tensor where there is
// one) and must never crash or read outside the mapping; run under ASan to check the latter.
#include "worker/model/safetensors.h"

#include <filesystem>
#include <functional>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors_test_util.h"

namespace caduceus::model {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;
using testing::MakeTempDir;
using testing::RawBytes;
using testing::SafetensorsBytes;
using testing::WriteBytes;

// a: BF16 [2,3] at [0,12); b: F32 [4] at [12,28); c: F16 [2,2] at [28,36); z: F32 [0] at [36,36).
json ValidHeader() {
  return {
      {"__metadata__", {{"format", "pt"}}},
      {"a", {{"dtype", "BF16"}, {"shape", {2, 3}}, {"data_offsets", {0, 12}}}},
      {"b", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {12, 28}}}},
      {"c", {{"dtype", "F16"}, {"shape", {2, 2}}, {"data_offsets", {28, 36}}}},
      {"z", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {36, 36}}}},
  };
}

std::string ValidData() {
  std::string d = RawBytes<uint16_t>({0x3f80, 0x4000, 0x4040, 0xbf80, 0x0000, 0x4080});
  d += RawBytes<float>({1.5f, -2.0f, 0.25f, 3.0f});
  d += RawBytes<uint16_t>({0x3c00, 0xc000, 0x3800, 0x0001});
  return d;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("safetensors_test"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    WriteBytes(path, bytes);
    return path;
  }

  std::string dir_;
};

TEST_F(SafetensorsTest, OpensValidFile) {
  const std::string path = Write("ok.safetensors", SafetensorsBytes(ValidHeader(), ValidData()));
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 4u);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  const TensorInfo* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kBF16);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->nbytes, 12u);
  EXPECT_EQ(a->file, path);
  uint16_t first;
  std::memcpy(&first, a->data, 2);
  EXPECT_EQ(first, 0x3f80);
  const TensorInfo* b = (*f)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kF32);
  EXPECT_EQ(b->data, a->data + 12);
  float b3;
  std::memcpy(&b3, b->data + 12, 4);
  EXPECT_EQ(b3, 3.0f);
  EXPECT_EQ((*f)->Find("c")->dtype, DType::kF16);
  EXPECT_EQ((*f)->Find("z")->nbytes, 0u);
  EXPECT_EQ((*f)->Find("missing"), nullptr);
}

TEST_F(SafetensorsTest, AcceptsPaddedHeaderAndNoMetadata) {
  json h = ValidHeader();
  h.erase("__metadata__");
  std::string text = h.dump();
  text.append(8 - (text.size() % 8), ' ');  // writers pad with spaces for alignment
  auto f = SafetensorsFile::Open(Write("pad.safetensors", SafetensorsBytes(text, ValidData())));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->metadata().empty());
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  auto f = SafetensorsFile::Open(dir_ + "/nope.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("nope.safetensors"));
  auto d = SafetensorsFile::Open(dir_);
  ASSERT_FALSE(d.ok());
}

struct Corrupt {
  std::string label;
  std::string tensor;  // expected in the message ("" when the error is file-level)
  std::string bytes;
};

std::vector<Corrupt> Corpus() {
  const std::string data = ValidData();
  auto with = [&](const std::function<void(json&)>& f) {
    json h = ValidHeader();
    f(h);
    return SafetensorsBytes(h, data);
  };
  std::vector<Corrupt> c;
  c.push_back({"empty file", "", ""});
  c.push_back({"7 bytes", "", std::string(7, '\0')});
  {
    std::string b = SafetensorsBytes(ValidHeader(), data);
    b[0] = static_cast<char>(0xff);  // header length 255 + ... larger than the file
    b[1] = static_cast<char>(0x7f);
    c.push_back({"header longer than file", "", b});
    std::string absurd = SafetensorsBytes(ValidHeader(), data);
    absurd[5] = 1;  // 2^40 + ...
    c.push_back({"absurd header length", "", absurd});
    std::string all_ff = b;
    for (int i = 0; i < 8; ++i) all_ff[i] = static_cast<char>(0xff);  // 2^64 - 1: no wrap
    c.push_back({"header length 2^64-1", "", all_ff});
  }
  c.push_back({"header not json", "", SafetensorsBytes(std::string("{\"a\": [1, 2"), data)});
  c.push_back({"header is a list", "", SafetensorsBytes(std::string("[1, 2, 3]"), data)});
  c.push_back({"header is empty", "", SafetensorsBytes(std::string(""), data)});
  // A parser that recursed per nesting level would overflow the stack here.
  c.push_back({"deeply nested header", "",
               SafetensorsBytes(std::string(200000, '[') + std::string(200000, ']'), data)});
  c.push_back({"deeply nested entry", "a",
               SafetensorsBytes("{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}",
                                data)});
  c.push_back({"header bad utf8", "", SafetensorsBytes(std::string("{\"\xff\xfe\": 1}"), data)});
  c.push_back({"metadata not object", "", with([](json& h) { h["__metadata__"] = 5; })});
  c.push_back({"entry not object", "a", with([](json& h) { h["a"] = 5; })});
  c.push_back({"missing dtype", "a", with([](json& h) { h["a"].erase("dtype"); })});
  c.push_back({"missing shape", "b", with([](json& h) { h["b"].erase("shape"); })});
  c.push_back({"missing data_offsets", "c", with([](json& h) { h["c"].erase("data_offsets"); })});
  c.push_back({"unsupported dtype", "a", with([](json& h) { h["a"]["dtype"] = "I64"; })});
  c.push_back({"dtype not string", "a", with([](json& h) { h["a"]["dtype"] = 2; })});
  c.push_back({"negative dim", "a", with([](json& h) { h["a"]["shape"] = {-2, -3}; })});
  c.push_back({"fractional dim", "a", with([](json& h) { h["a"]["shape"] = {2.0, 3}; })});
  c.push_back({"shape not list", "a", with([](json& h) { h["a"]["shape"] = "2x3"; })});
  c.push_back({"overflowing shape", "b", with([](json& h) {
                 h["b"]["shape"] = {1ull << 40, 1ull << 40, 1ull << 40};
               })});
  c.push_back({"huge dim", "b", with([](json& h) { h["b"]["shape"] = {UINT64_MAX}; })});
  c.push_back({"offsets end < begin", "b",
               with([](json& h) { h["b"]["data_offsets"] = {28, 12}; })});
  c.push_back({"offsets out of bounds", "c",
               with([](json& h) { h["c"]["data_offsets"] = {28, 40}; })});
  c.push_back({"offsets far out of bounds", "c", with([](json& h) {
                 h["c"]["data_offsets"] = {UINT64_MAX - 4, UINT64_MAX};
               })});
  c.push_back({"negative offset", "b", with([](json& h) { h["b"]["data_offsets"] = {-4, 12}; })});
  c.push_back({"three offsets", "b", with([](json& h) { h["b"]["data_offsets"] = {12, 20, 28}; })});
  c.push_back({"offsets not list", "b", with([](json& h) { h["b"]["data_offsets"] = 12; })});
  c.push_back({"size != shape x dtype", "a", with([](json& h) { h["a"]["shape"] = {2, 4}; })});
  c.push_back({"size != shape x dtype (dtype)", "a",
               with([](json& h) { h["a"]["dtype"] = "F32"; })});
  c.push_back({"overlap", "b", with([](json& h) {
                 h["b"]["data_offsets"] = {8, 24};
               })});
  c.push_back({"identical ranges", "b", with([](json& h) {
                 h["b"] = {{"dtype", "BF16"}, {"shape", {6}}, {"data_offsets", {0, 12}}};
               })});
  {
    // A valid header whose data section was cut short.
    const std::string full = SafetensorsBytes(ValidHeader(), data);
    c.push_back({"truncated data", "c", full.substr(0, full.size() - 3)});
  }
  return c;
}

TEST_F(SafetensorsTest, MalformedCorpusGivesErrorsNamingFileAndTensor) {
  int i = 0;
  for (const Corrupt& bad : Corpus()) {
    const std::string path = Write("bad" + std::to_string(i++) + ".safetensors", bad.bytes);
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << bad.label;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << bad.label << ": " << f.status();
    EXPECT_THAT(f.status().message(), HasSubstr(path)) << bad.label;
    if (!bad.tensor.empty()) {
      EXPECT_THAT(f.status().message(), HasSubstr("'" + bad.tensor + "'"))
          << bad.label << ": " << f.status();
    }
  }
}

// Touches every byte of every tensor of an opened file: under ASan or with a mapping too short
// this would fault.
uint64_t TouchAll(const SafetensorsFile& f) {
  uint64_t sum = 0;
  for (const TensorInfo& t : f.tensors()) {
    for (size_t k = 0; k < t.nbytes; ++k) sum += t.data[k];
  }
  return sum;
}

TEST_F(SafetensorsTest, EveryTruncationFailsCleanly) {
  const std::string full = SafetensorsBytes(ValidHeader(), ValidData());
  for (size_t len = 0; len < full.size(); ++len) {
    auto f = SafetensorsFile::Open(Write("trunc.safetensors", full.substr(0, len)));
    EXPECT_FALSE(f.ok()) << "length " << len;
  }
}

TEST_F(SafetensorsTest, RandomByteFlipsNeverCrash) {
  const std::string full = SafetensorsBytes(ValidHeader(), ValidData());
  std::mt19937 rng(12345);
  int opened = 0;
  for (int iter = 0; iter < 600; ++iter) {
    std::string b = full;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      // Mostly the length and header, where the parser lives.
      const size_t pos = rng() % (b.size() - ValidData().size());
      b[pos] = static_cast<char>(rng() & 0xff);
    }
    auto f = SafetensorsFile::Open(Write("flip.safetensors", b));
    if (f.ok()) {
      ++opened;
      TouchAll(**f);
    } else {
      EXPECT_THAT(f.status().message(), HasSubstr("flip.safetensors"));
    }
  }
  // Flips inside string values or whitespace keep the file valid; most flips must not.
  EXPECT_LT(opened, 600);
}

}  // namespace
}  // namespace caduceus::model
