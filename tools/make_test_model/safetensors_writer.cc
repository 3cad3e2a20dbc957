#include "tools/make_test_model/safetensors_writer.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace caduceus::testmodel {

size_t SafetensorsDtypeSize(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

uint64_t EntryBytes(const WriterEntry& e) {
  uint64_t n = SafetensorsDtypeSize(e.dtype);
  for (int64_t d : e.shape) n *= static_cast<uint64_t>(d);
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, const std::vector<WriterEntry>& entries,
    const std::map<std::string, std::string>& metadata) {
  // nlohmann::json objects keep keys sorted, which matches what the safetensors library emits.
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json md = nlohmann::json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header["__metadata__"] = md;
  }
  uint64_t offset = 0;
  for (const WriterEntry& e : entries) {
    if (SafetensorsDtypeSize(e.dtype) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", e.dtype));
    }
    const uint64_t n = EntryBytes(e);
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');

  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  uint8_t len_le[8];
  const uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<uint8_t>(len >> (8 * i));
  if (std::fwrite(len_le, 1, 8, f) != 8 || std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
    std::fclose(f);
    return absl::InternalError(absl::StrCat("write failed: ", path));
  }
  return std::unique_ptr<SafetensorsWriter>(new SafetensorsWriter(path, f, offset));
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status SafetensorsWriter::Append(const void* data, size_t nbytes) {
  if (file_ == nullptr) return absl::FailedPreconditionError("writer already finished");
  if (written_ + nbytes > data_bytes_) {
    return absl::InternalError(absl::StrCat(path_, ": more data than the header announced"));
  }
  if (std::fwrite(data, 1, nbytes, file_) != nbytes) {
    return absl::InternalError(absl::StrCat("write failed: ", path_, ": ", std::strerror(errno)));
  }
  written_ += nbytes;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (file_ == nullptr) return absl::FailedPreconditionError("writer already finished");
  const bool close_ok = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!close_ok) return absl::InternalError(absl::StrCat("close failed: ", path_));
  if (written_ != data_bytes_) {
    return absl::InternalError(absl::StrCat(path_, ": wrote ", written_, " data bytes, header says ",
                                            data_bytes_));
  }
  return absl::OkStatus();
}

}  // namespace caduceus::testmodel
