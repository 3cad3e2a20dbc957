// Streaming safetensors writer: the header is fixed up front from the tensor list, then the data
// is appended in order, so a multi-gigabyte shard never has to be held in memory.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace caduceus::testmodel {

struct WriterEntry {
  std::string name;
  std::string dtype;  // safetensors spelling: "BF16", "F16", "F32"
  std::vector<int64_t> shape;
};

size_t SafetensorsDtypeSize(const std::string& dtype);
uint64_t EntryBytes(const WriterEntry& e);

class SafetensorsWriter {
 public:
  // Entries are laid out in the given order, back to back. The header is padded with spaces to
  // a multiple of 8 bytes so that every tensor's data is 8-byte aligned in the file.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<WriterEntry>& entries,
      const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();

  absl::Status Append(const void* data, size_t nbytes);
  // Checks that exactly the announced number of bytes was written, then closes the file.
  absl::Status Finish();

 private:
  SafetensorsWriter(std::string path, std::FILE* f, uint64_t data_bytes)
      : path_(std::move(path)), file_(f), data_bytes_(data_bytes) {}

  std::string path_;
  std::FILE* file_;
  uint64_t data_bytes_;
  uint64_t written_ = 0;
};

}  // namespace caduceus::testmodel
