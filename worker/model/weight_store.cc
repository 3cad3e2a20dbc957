#include "worker/model/weight_store.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fp8.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace caduceus::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.end(), ", "), "]");
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return absl::InternalError(absl::StrCat(path, ": read error"));
  return ss.str();
}

}  // namespace

void ConvertToBf16(DType dtype, const uint8_t* src, int64_t count, bf16* dst) {
  switch (dtype) {
    case DType::kBF16:
      std::memcpy(dst, src, static_cast<size_t>(count) * 2);
      return;
    case DType::kF16:
#pragma omp parallel for schedule(static) if (count > (1 << 16))
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        // f16 -> f32 is exact, so a single rounding to bf16 happens here.
        dst[i] = FloatToBf16(HalfToFloat(h));
      }
      return;
    case DType::kF32:
#pragma omp parallel for schedule(static) if (count > (1 << 16))
      for (int64_t i = 0; i < count; ++i) {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        dst[i] = FloatToBf16(f);
      }
      return;
    case DType::kF8E4M3:  // exact; the store never widens FP8 on its own (it lacks the scale)
      for (int64_t i = 0; i < count; ++i) dst[i] = FloatToBf16(Fp8E4M3ToFloat(src[i]));
      return;
  }
}

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(const std::string& model_dir) {
  std::unique_ptr<WeightStore> store(new WeightStore(model_dir));
  const fs::path dir(model_dir);
  std::error_code ec;
  const std::string index_path = (dir / kIndexFileName).string();
  const std::string single_path = (dir / kSingleFileName).string();
  if (fs::exists(index_path, ec)) {
    RETURN_IF_ERROR(store->OpenIndexed(index_path));
  } else if (fs::exists(single_path, ec)) {
    RETURN_IF_ERROR(store->OpenSingle(single_path));
  } else {
    return absl::NotFoundError(absl::StrCat(model_dir, ": neither ", kIndexFileName, " nor ",
                                            kSingleFileName, " found"));
  }
  for (const auto& [name, info] : store->tensors_) store->total_bytes_ += info->nbytes;
  return store;
}

absl::Status WeightStore::OpenSingle(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  for (const TensorInfo& t : file->tensors()) {
    tensors_[t.name] = &t;
    file_of_[&t] = file.get();
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::Status WeightStore::OpenIndexed(const std::string& index_path) {
  ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(index_path));
  const json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
  }
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing object 'weight_map'"));
  }
  if (wm->empty()) return absl::InvalidArgumentError(absl::StrCat(index_path, ": empty weight_map"));
  // Group tensors by shard (sorted, so shards open in a stable order).
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": tensor '", name, "': shard is not a string"));
    }
    const std::string shard_name = shard.get<std::string>();
    // Shards live beside the index; refuse paths that would escape the model directory.
    if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == "." ||
        shard_name == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": tensor '", name, "': bad shard name '", shard_name, "'"));
    }
    by_shard[shard_name].push_back(name);
  }
  const fs::path dir(model_dir_);
  for (const auto& [shard_name, names] : by_shard) {
    const std::string shard_path = (dir / shard_name).string();
    auto file = SafetensorsFile::Open(shard_path);
    if (!file.ok()) {
      const std::string msg = absl::StrCat(index_path, ": shard '", shard_name, "' (holding '",
                                           names.front(), "'): ", file.status().message());
      return absl::Status(file.status().code(), msg);
    }
    for (const std::string& name : names) {
      const TensorInfo* t = (*file)->Find(name);
      if (t == nullptr) {
        return absl::NotFoundError(absl::StrCat("tensor '", name, "' is listed in ", index_path,
                                                " but absent from its shard ", shard_path));
      }
      tensors_[name] = t;
      file_of_[t] = file->get();
    }
    files_.push_back(std::move(*file));
  }
  return absl::OkStatus();
}

std::vector<std::string> WeightStore::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

const TensorInfo* WeightStore::Find(std::string_view name) const {
  auto it = tensors_.find(std::string(name));
  return it == tensors_.end() ? nullptr : it->second;
}

const SafetensorsFile& WeightStore::FileOf(const TensorInfo& t) const { return *file_of_.at(&t); }

absl::StatusOr<const TensorInfo*> WeightStore::Lookup(std::string_view name) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", std::string(name), "' not found in ", model_dir_));
  }
  return t;
}

absl::StatusOr<TensorInfo> WeightStore::Get(std::string_view name,
                                            std::span<const int64_t> expected_shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  // Every dtype SafetensorsFile accepts is a floating-point one, so the family always matches.
  if (!std::equal(t->shape.begin(), t->shape.end(), expected_shape.begin(), expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(
        t->file, ": tensor '", t->name, "' has shape ", ShapeString(t->shape), ", expected ",
        ShapeString(expected_shape)));
  }
  return *t;
}

absl::StatusOr<TensorInfo> WeightStore::GetWidenable(std::string_view name,
                                                     std::span<const int64_t> expected_shape) const {
  ASSIGN_OR_RETURN(TensorInfo t, Get(name, expected_shape));
  if (t.dtype == DType::kF8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat(
        t.file, ": tensor '", t.name, "' is F8_E4M3, which only the projections of an FP8 "
        "checkpoint may be (read with their weight_scale)"));
  }
  return t;
}

const bf16* WeightStore::ConvertedCopy(const TensorInfo& t, const std::string& key, int64_t begin,
                                       int64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = copies_.find(key);
  if (it != copies_.end()) return reinterpret_cast<const bf16*>(it->second.get());
  const size_t esize = DTypeSize(t.dtype);
  const uint8_t* src = t.data + static_cast<size_t>(begin) * esize;
  const size_t src_bytes = static_cast<size_t>(count) * esize;
  auto copy = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(bf16));
  const SafetensorsFile& file = FileOf(t);
  file.AdviseWillNeed(src, src_bytes);
  ConvertToBf16(t.dtype, src, count, reinterpret_cast<bf16*>(copy.get()));
  // The source pages are no longer needed by us; keep RSS at the size of the bf16 copy.
  file.AdviseDontNeed(src, src_bytes);
  const bf16* out = reinterpret_cast<const bf16*>(copy.get());
  copies_[key] = std::move(copy);
  return out;
}

absl::StatusOr<const bf16*> WeightStore::GetBf16(std::string_view name,
                                                 std::span<const int64_t> expected_shape) {
  ASSIGN_OR_RETURN(const TensorInfo t, GetWidenable(name, expected_shape));
  const TensorInfo& info = *Find(name);
  if (t.dtype == DType::kBF16 && reinterpret_cast<uintptr_t>(t.data) % alignof(bf16) == 0) {
    // No readahead hint here: callers often take every pointer up front and read much later
    // (or never, for a tensor-parallel peer's part); Prefetch() is the explicit hint.
    return reinterpret_cast<const bf16*>(t.data);
  }
  return ConvertedCopy(info, t.name, 0, t.NumElements());
}

absl::StatusOr<const bf16*> WeightStore::GetBf16Rows(std::string_view name,
                                                     std::span<const int64_t> expected_shape,
                                                     int64_t row_begin, int64_t row_end) {
  ASSIGN_OR_RETURN(const TensorInfo t, GetWidenable(name, expected_shape));
  if (t.shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' is a scalar"));
  }
  const int64_t rows = t.shape[0];
  if (row_begin < 0 || row_end < row_begin || row_end > rows) {
    return absl::OutOfRangeError(absl::StrCat(t.file, ": tensor '", t.name, "': rows [", row_begin,
                                              ", ", row_end, ") outside [0, ", rows, ")"));
  }
  const int64_t row_elems = rows == 0 ? 0 : t.NumElements() / rows;
  const int64_t begin = row_begin * row_elems;
  const int64_t count = (row_end - row_begin) * row_elems;
  const TensorInfo& info = *Find(name);
  if (t.dtype == DType::kBF16 && reinterpret_cast<uintptr_t>(t.data) % alignof(bf16) == 0) {
    return reinterpret_cast<const bf16*>(t.data + static_cast<size_t>(begin) * 2);
  }
  return ConvertedCopy(info, absl::StrCat(t.name, "#rows:", row_begin, ":", row_end), begin,
                       count);
}

absl::StatusOr<const bf16*> WeightStore::GetBf16Cols(std::string_view name,
                                                     std::span<const int64_t> expected_shape,
                                                     int64_t col_begin, int64_t col_end) {
  ASSIGN_OR_RETURN(const TensorInfo t, GetWidenable(name, expected_shape));
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(t.file, ": tensor '", t.name, "' is not 2-D; cannot take columns"));
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (col_begin < 0 || col_end < col_begin || col_end > cols) {
    return absl::OutOfRangeError(absl::StrCat(t.file, ": tensor '", t.name, "': columns [",
                                              col_begin, ", ", col_end, ") outside [0, ", cols,
                                              ")"));
  }
  const std::string key = absl::StrCat(t.name, "#cols:", col_begin, ":", col_end);
  const int64_t width = col_end - col_begin;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = copies_.find(key);
  if (it != copies_.end()) return reinterpret_cast<const bf16*>(it->second.get());
  auto copy = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(std::max<int64_t>(rows * width, 1)) * sizeof(bf16));
  bf16* dst = reinterpret_cast<bf16*>(copy.get());
  const size_t esize = DTypeSize(t.dtype);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertToBf16(t.dtype, t.data + static_cast<size_t>(r * cols + col_begin) * esize, width,
                  dst + r * width);
  }
  FileOf(*Find(name)).AdviseDontNeed(t.data, t.nbytes);
  copies_[key] = std::move(copy);
  return dst;
}

absl::StatusOr<TensorInfo> WeightStore::GetFp8(std::string_view name,
                                               std::span<const int64_t> expected_shape) const {
  ASSIGN_OR_RETURN(TensorInfo t, Get(name, expected_shape));
  if (t.dtype != DType::kF8E4M3 || t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' is ",
                                                   DTypeName(t.dtype), ", expected 2-D F8_E4M3"));
  }
  return t;
}

absl::StatusOr<const uint8_t*> WeightStore::GetFp8Rows(std::string_view name,
                                                       std::span<const int64_t> expected_shape,
                                                       int64_t row_begin, int64_t row_end) const {
  ASSIGN_OR_RETURN(const TensorInfo t, GetFp8(name, expected_shape));
  if (row_begin < 0 || row_end < row_begin || row_end > t.shape[0]) {
    return absl::OutOfRangeError(absl::StrCat(t.file, ": tensor '", t.name, "': rows [", row_begin,
                                              ", ", row_end, ") outside [0, ", t.shape[0], ")"));
  }
  return t.data + static_cast<size_t>(row_begin * t.shape[1]);
}

absl::StatusOr<const uint8_t*> WeightStore::GetFp8Cols(std::string_view name,
                                                       std::span<const int64_t> expected_shape,
                                                       int64_t col_begin, int64_t col_end) {
  ASSIGN_OR_RETURN(const TensorInfo t, GetFp8(name, expected_shape));
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (col_begin < 0 || col_end < col_begin || col_end > cols) {
    return absl::OutOfRangeError(absl::StrCat(t.file, ": tensor '", t.name, "': columns [",
                                              col_begin, ", ", col_end, ") outside [0, ", cols,
                                              ")"));
  }
  if (col_begin == 0 && col_end == cols) return t.data;
  const std::string key = absl::StrCat(t.name, "#cols:", col_begin, ":", col_end);
  const int64_t width = col_end - col_begin;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = copies_.find(key);
  if (it != copies_.end()) return it->second.get();
  auto copy = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(std::max<int64_t>(rows * width, 1)));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(copy.get() + r * width, t.data + static_cast<size_t>(r * cols + col_begin),
                static_cast<size_t>(width));
  }
  FileOf(*Find(name)).AdviseDontNeed(t.data, t.nbytes);
  const uint8_t* out = copy.get();
  copies_[key] = std::move(copy);
  return out;
}

absl::StatusOr<std::vector<float>> WeightStore::GetFloats(std::string_view name) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  if (t->dtype == DType::kF8E4M3) {
    return absl::InvalidArgumentError(
        absl::StrCat(t->file, ": tensor '", t->name, "' is F8_E4M3, expected a float scale"));
  }
  const int64_t count = t->NumElements();
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* src = t->data + static_cast<size_t>(i) * DTypeSize(t->dtype);
    switch (t->dtype) {
      case DType::kF32:
        std::memcpy(&out[i], src, 4);
        break;
      case DType::kBF16: {
        bf16 b;
        std::memcpy(&b.bits, src, 2);
        out[i] = Bf16ToFloat(b);
        break;
      }
      case DType::kF16: {
        uint16_t h;
        std::memcpy(&h, src, 2);
        out[i] = HalfToFloat(h);
        break;
      }
      case DType::kF8E4M3:
        break;
    }
  }
  return out;
}

void WeightStore::Prefetch(std::string_view name) const {
  const TensorInfo* t = Find(name);
  if (t != nullptr) FileOf(*t).AdviseWillNeed(t->data, t->nbytes);
}

void WeightStore::Release(std::string_view name) {
  const TensorInfo* t = Find(name);
  if (t == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = copies_.begin(); it != copies_.end();) {
    const std::string& key = it->first;
    const bool match = key == t->name || (key.size() > t->name.size() &&
                                          key.compare(0, t->name.size(), t->name) == 0 &&
                                          key[t->name.size()] == '#');
    it = match ? copies_.erase(it) : std::next(it);
  }
  FileOf(*t).AdviseDontNeed(t->data, t->nbytes);
}

}  // namespace caduceus::model
