#include "worker/server/model_identity.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/model/model_config.h"

namespace caduceus::worker {

namespace {

void Fnv(uint64_t& h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
}

// Samples of a shard's tensor data hashed with its header: two fine-tunes of one architecture
// have identical headers (same names, shapes, offsets), so the header alone gave them one
// revision. kSamples reads of kSampleBytes, spread evenly over the data, cost a few milliseconds
// even for 70B's shards and differ between any two trainings.
constexpr int kSamples = 16;
constexpr std::streamoff kSampleBytes = 4096;

absl::Status HashPrefix(uint64_t& h, const std::filesystem::path& path, bool safetensors_header) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::string bytes;
  std::streamoff data_begin = 0;
  if (safetensors_header) {
    uint64_t header_len = 0;
    in.read(reinterpret_cast<char*>(&header_len), sizeof(header_len));
    if (!in || header_len > (100u << 20)) {
      return absl::DataLossError(absl::StrCat(path.string(), ": not a safetensors file"));
    }
    bytes.resize(header_len);
    in.read(bytes.data(), static_cast<std::streamsize>(header_len));
    data_begin = static_cast<std::streamoff>(sizeof(header_len) + header_len);
  } else {
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string name = path.filename().string();
  Fnv(h, name.data(), name.size());
  Fnv(h, bytes.data(), bytes.size());
  if (safetensors_header) {
    std::error_code ec;
    const auto size = static_cast<std::streamoff>(std::filesystem::file_size(path, ec));
    const std::streamoff data = ec ? 0 : size - data_begin;
    std::string sample(static_cast<size_t>(kSampleBytes), '\0');
    for (int i = 0; data > 0 && i < kSamples; ++i) {
      // Evenly spaced, the first at the data's start and the last ending at the file's end.
      const std::streamoff span = std::max<std::streamoff>(data - kSampleBytes, 0);
      const std::streamoff at = data_begin + span * i / (kSamples - 1);
      in.clear();
      in.seekg(at);
      in.read(sample.data(), std::min(kSampleBytes, data));
      Fnv(h, sample.data(), static_cast<size_t>(in.gcount()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelIdentity> IdentifyModel(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::weakly_canonical(fs::path(model_dir));
  uint64_t h = 0xcbf29ce484222325ULL;
  if (absl::Status s = HashPrefix(h, dir / "config.json", false); !s.ok()) return s;
  std::vector<fs::path> shards;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") shards.push_back(entry.path());
  }
  std::sort(shards.begin(), shards.end());
  for (const fs::path& p : shards) {
    if (absl::Status s = HashPrefix(h, p, true); !s.ok()) return s;
  }
  ModelIdentity identity;
  identity.id = model::ModelDirName(model_dir);
  identity.revision = absl::StrFormat("%016x", h);
  return identity;
}

}  // namespace caduceus::worker
