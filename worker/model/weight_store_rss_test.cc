// Resident memory of a loaded model: mapping the weights and reading every byte must cost about
// the weight bytes once (< 1.15x), never a second copy. Its own binary so that no other test's
// allocations blur the VmRSS measurement.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "gtest/gtest.h"
#include "worker/model/weight_store.h"

namespace caduceus::model {
namespace {

namespace fs = std::filesystem;

int64_t VmRssBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // kB
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

// Opens the model, takes every tensor as bf16 and reads all of its bytes; returns the RSS growth.
int64_t LoadAndTouchAll(const std::string& dir, uint64_t* touched_bytes) {
  const int64_t before = VmRssBytes();
  auto store = WeightStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;
  uint64_t checksum = 0;
  *touched_bytes = 0;
  for (const std::string& name : (*store)->TensorNames()) {
    const TensorInfo* t = (*store)->Find(name);
    auto data = (*store)->GetBf16(name, t->shape);
    EXPECT_TRUE(data.ok()) << data.status();
    const int64_t n = t->NumElements();
    for (int64_t i = 0; i < n; ++i) checksum += (*data)[i].bits;
    *touched_bytes += static_cast<uint64_t>(n) * 2;
  }
  const int64_t after = VmRssBytes();
  std::cout << dir << ": RSS growth " << (after - before) << " bytes for " << *touched_bytes
            << " bf16 bytes\n";
  EXPECT_NE(checksum, 0u);  // keeps the reads from being optimized away
  return after - before;
}

TEST(WeightStoreRssTest, Bf16ModelCostsItsWeightBytesOnce) {
  const char* testdata = std::getenv("CADUCEUS_TESTDATA_DIR");
  if (testdata == nullptr) GTEST_SKIP() << "CADUCEUS_TESTDATA_DIR not set (run through ctest)";
  uint64_t touched = 0;
  const int64_t growth = LoadAndTouchAll(std::string(testdata) + "/tiny-seed1", &touched);
  ASSERT_GT(touched, 100u << 20);
  EXPECT_LT(static_cast<double>(growth), 1.15 * static_cast<double>(touched))
      << "RSS grew by " << growth << " bytes for " << touched << " weight bytes";
  // The measurement is meaningful only if the reads showed up at all.
  EXPECT_GT(static_cast<double>(growth), 0.5 * static_cast<double>(touched));
}

// The 3 GB small preset: only when a run has generated it (fixture small_model), since it costs
// half a minute and 3 GB of disk.
TEST(WeightStoreRssTest, SmallBf16ModelIfPresent) {
  const char* testdata = std::getenv("CADUCEUS_TESTDATA_DIR");
  const std::string dir = std::string(testdata != nullptr ? testdata : "") + "/small-seed1";
  if (testdata == nullptr || !fs::exists(dir + "/model.safetensors.index.json")) {
    GTEST_SKIP() << dir << " not generated";
  }
  uint64_t touched = 0;
  const int64_t growth = LoadAndTouchAll(dir, &touched);
  EXPECT_LT(static_cast<double>(growth), 1.15 * static_cast<double>(touched));
}

TEST(WeightStoreRssTest, F32ModelKeepsOnlyTheBf16Copies) {
  const char* bin_dir = std::getenv("CADUCEUS_BIN_DIR");
  if (bin_dir == nullptr) GTEST_SKIP() << "CADUCEUS_BIN_DIR not set (run through ctest)";
  std::string out = ::testing::TempDir() + "/rss_f32_XXXXXX";
  ASSERT_NE(mkdtemp(out.data()), nullptr);
  const std::string cmd =
      std::string(bin_dir) + "/caduceus-make-test-model --preset tiny --seed 2 --dtype f32 --out " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  uint64_t touched = 0;
  const int64_t growth = LoadAndTouchAll(out, &touched);
  // The f32 files are 2x the bf16 copies; their pages are dropped after conversion.
  EXPECT_LT(static_cast<double>(growth), 1.15 * static_cast<double>(touched))
      << "RSS grew by " << growth << " bytes for " << touched << " bf16 bytes";
  fs::remove_all(out);
}

}  // namespace
}  // namespace caduceus::model
