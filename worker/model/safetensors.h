// A read-only memory mapping of one .safetensors file whose header is validated completely on
// Open: every tensor's dtype, shape and byte range is checked against the file, so that later
// accesses through TensorInfo::data can never leave the mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace caduceus::model {

// kF8E4M3: FP8 weights of a quantized checkpoint (common/fp8.h), read only with their scales
// (WeightStore::GetFp8Rows/Cols); never widened on their own.
enum class DType { kBF16, kF16, kF32, kF8E4M3 };

size_t DTypeSize(DType d);
const char* DTypeName(DType d);  // the safetensors spelling: "BF16", "F16", "F32", "F8_E4M3"

struct TensorInfo {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the file mapping; valid while the file is open
  size_t nbytes = 0;
  std::string file;  // path of the file holding the tensor

  int64_t NumElements() const;
};

// Headers larger than this are rejected (real ones are a few hundred KB at most).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

class SafetensorsFile {
 public:
  // mmaps the file (PROT_READ, MAP_PRIVATE) and validates the header. Only the header pages are
  // read here; tensor pages are faulted in when the caller reads them.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const TensorInfo* Find(std::string_view name) const;
  // In header order (sorted by name, as nlohmann keeps object keys).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::unordered_map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }

  // Page-granular madvise over [ptr, ptr + nbytes), which must lie inside this mapping.
  // WILLNEED starts readahead; DONTNEED drops the pages from this process (they are clean and
  // file-backed, so a later read simply faults them back in).
  void AdviseWillNeed(const void* ptr, size_t nbytes) const;
  void AdviseDontNeed(const void* ptr, size_t nbytes) const;

 private:
  SafetensorsFile(std::string path, const uint8_t* base, size_t size)
      : path_(std::move(path)), base_(base), size_(size) {}
  absl::Status ParseHeader();
  void Advise(const void* ptr, size_t nbytes, int advice) const;

  std::string path_;
  const uint8_t* base_;
  size_t size_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::unordered_map<std::string, std::string> metadata_;
};

}  // namespace caduceus::model
