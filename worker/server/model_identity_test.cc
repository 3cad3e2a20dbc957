// The model revision the worker reports: the same for an identical copy of a model directory,
// different when only weight bytes change (two fine-tunes of one architecture have identical
// safetensors headers) or when config.json changes.
#include "worker/server/model_identity.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace caduceus::worker {
namespace {

namespace fs = std::filesystem;

std::string TinyModelDir() {
  const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
  return std::string(dir ? dir : "testdata") + "/tiny-seed1";
}

// A copy of the tiny model under the test's temporary directory.
fs::path CopyModel(const std::string& name) {
  const fs::path to = fs::path(testing::TempDir()) / name;
  fs::remove_all(to);
  fs::copy(TinyModelDir(), to, fs::copy_options::recursive);
  return to;
}

// Flips one byte of the first shard at `fraction` of its tensor data (after the header).
void FlipWeightByte(const fs::path& dir, double fraction) {
  fs::path shard;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors" && (shard.empty() || e.path() < shard)) {
      shard = e.path();
    }
  }
  ASSERT_FALSE(shard.empty());
  std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header = 0;
  f.read(reinterpret_cast<char*>(&header), sizeof(header));
  const auto data_begin = static_cast<std::streamoff>(sizeof(header) + header);
  const auto size = static_cast<std::streamoff>(fs::file_size(shard));
  const auto at = data_begin + static_cast<std::streamoff>(fraction * double(size - data_begin - 1));
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(at);
  f.write(&c, 1);
}

TEST(ModelIdentityTest, RevisionFollowsTheWeightsNotTheDirectory) {
  const auto original = IdentifyModel(TinyModelDir());
  ASSERT_TRUE(original.ok()) << original.status();
  EXPECT_EQ(original->revision.size(), 16u);

  const fs::path copy = CopyModel("identity-copy");
  const auto same = IdentifyModel(copy.string());
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->revision, original->revision) << "an identical copy got another revision";
  EXPECT_EQ(same->id, "identity-copy");

  // One weight byte where the first sample is read (the data's start), and one at the end.
  for (const double fraction : {0.0, 1.0}) {
    const fs::path tuned = CopyModel("identity-tuned");
    FlipWeightByte(tuned, fraction);
    const auto other = IdentifyModel(tuned.string());
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_NE(other->revision, original->revision) << "weights changed at " << fraction;
  }

  const fs::path config = CopyModel("identity-config");
  std::ofstream(config / "config.json", std::ios::app) << "\n";
  const auto reconfigured = IdentifyModel(config.string());
  ASSERT_TRUE(reconfigured.ok()) << reconfigured.status();
  EXPECT_NE(reconfigured->revision, original->revision);
}

}  // namespace
}  // namespace caduceus::worker
