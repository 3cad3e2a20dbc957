#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace caduceus::model {
namespace {

using nlohmann::json;

bool ParseDType(const std::string& s, DType* out) {
  if (s == "BF16") {
    *out = DType::kBF16;
  } else if (s == "F16") {
    *out = DType::kF16;
  } else if (s == "F32") {
    *out = DType::kF32;
  } else if (s == "F8_E4M3") {
    *out = DType::kF8E4M3;
  } else {
    return false;
  }
  return true;
}

// A JSON number that is a non-negative integer, as uint64.
bool AsUint64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

size_t PageSize() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
      return 4;
    case DType::kF8E4M3:
      return 1;
  }
  return 0;
}

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF32:
      return "F32";
    case DType::kF8E4M3:
      return "F8_E4M3";
  }
  return "?";
}

int64_t TensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": file is ", size, " bytes, too short for the 8-byte header length"));
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (base == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(mmap_errno)));
  }
  std::unique_ptr<SafetensorsFile> file(
      new SafetensorsFile(path, static_cast<const uint8_t*>(base), size));
  RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

absl::Status SafetensorsFile::ParseHeader() {
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(base_[i]) << (8 * i);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": header length ", header_len, " is absurd (limit ",
                     kMaxSafetensorsHeaderBytes, ")"));
  }
  if (header_len > size_ - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header length ", header_len,
                                                   " exceeds the file size ", size_));
  }
  const char* text = reinterpret_cast<const char*>(base_ + 8);
  const json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header is not valid JSON"));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": header is not a JSON object"));
  }
  const uint8_t* data_base = base_ + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per tensor, for overlaps

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(path_, ": __metadata__ is not an object"));
      }
      for (const auto& [k, v] : entry.items()) {
        if (v.is_string()) metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&, &tensor = name](std::string_view what) {  // clang 14: no captured bindings
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor '", tensor, "': ", std::string(what)));
    };
    if (!entry.is_object()) return bad("entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end()) return bad("missing dtype");
    if (shape_it == entry.end()) return bad("missing shape");
    if (offsets_it == entry.end()) return bad("missing data_offsets");

    TensorInfo info;
    info.name = name;
    info.file = path_;
    if (!dtype_it->is_string()) return bad("dtype is not a string");
    if (!ParseDType(dtype_it->get<std::string>(), &info.dtype)) {
      return bad(absl::StrCat("unsupported dtype ", dtype_it->get<std::string>(),
                              " (supported: BF16, F16, F32, F8_E4M3)"));
    }
    if (!shape_it->is_array()) return bad("shape is not a list");
    uint64_t elements = 1;
    for (const json& d : *shape_it) {
      uint64_t dim = 0;
      if (!AsUint64(d, &dim)) return bad("shape has a negative or non-integer dimension");
      // Bound every dimension (and the product) so that int64 and byte arithmetic cannot wrap.
      if (dim > (uint64_t{1} << 62) || __builtin_mul_overflow(elements, dim, &elements) ||
          elements > (uint64_t{1} << 62)) {
        return bad("shape overflows");
      }
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!offsets_it->is_array() || offsets_it->size() != 2) {
      return bad("data_offsets is not a list of two integers");
    }
    uint64_t begin = 0, end = 0;
    if (!AsUint64((*offsets_it)[0], &begin) || !AsUint64((*offsets_it)[1], &end)) {
      return bad("data_offsets is not a list of two non-negative integers");
    }
    if (end < begin) return bad(absl::StrCat("data_offsets end ", end, " < begin ", begin));
    if (end > data_size) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, ") out of bounds of the ",
                              data_size, "-byte data section"));
    }
    uint64_t expected_bytes = 0;
    if (__builtin_mul_overflow(elements, DTypeSize(info.dtype), &expected_bytes) ||
        end - begin != expected_bytes) {
      return bad(absl::StrCat("byte size ", end - begin, " does not match shape x dtype size (",
                              elements, " elements of ", DTypeName(info.dtype), ")"));
    }
    info.data = data_base + begin;
    info.nbytes = static_cast<size_t>(end - begin);
    if (info.nbytes > 0) ranges.emplace_back(begin, end);
    by_name_[info.name] = tensors_.size();
    tensors_.push_back(std::move(info));
  }

  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors_[a].data < tensors_[b].data;
  });
  const TensorInfo* prev = nullptr;
  for (size_t i : order) {
    const TensorInfo& t = tensors_[i];
    if (t.nbytes == 0) continue;
    if (prev != nullptr && t.data < prev->data + prev->nbytes) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", t.name,
                                                     "' overlaps tensor '", prev->name, "'"));
    }
    prev = &t;
  }
  return absl::OkStatus();
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::Advise(const void* ptr, size_t nbytes, int advice) const {
  if (nbytes == 0) return;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(base_);
  const uintptr_t hi = lo + size_;
  uintptr_t b = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t e = b + nbytes;
  if (b < lo || e > hi) return;
  // Only whole pages inside the range may be dropped; for readahead, round outwards.
  const size_t page = PageSize();
  if (advice == MADV_DONTNEED) {
    b = (b + page - 1) & ~(page - 1);
    e = e & ~(page - 1);
    // The last page of the file may be partial; it is still wholly ours to drop at the end.
    if (reinterpret_cast<uintptr_t>(ptr) + nbytes == hi) e = (hi + page - 1) & ~(page - 1);
  } else {
    b = b & ~(page - 1);
    e = std::min<uintptr_t>((e + page - 1) & ~(page - 1), (hi + page - 1) & ~(page - 1));
  }
  if (e <= b) return;
  ::madvise(reinterpret_cast<void*>(b), e - b, advice);
}

void SafetensorsFile::AdviseWillNeed(const void* ptr, size_t nbytes) const {
  Advise(ptr, nbytes, MADV_WILLNEED);
}

void SafetensorsFile::AdviseDontNeed(const void* ptr, size_t nbytes) const {
  Advise(ptr, nbytes, MADV_DONTNEED);
}

}  // namespace caduceus::model
