// The weights of one model directory: model.safetensors.index.json + its shards, or a single
// model.safetensors. Tensors are served zero-copy from the read-only mappings when they are
// stored as bf16; f16/f32 tensors are converted once into copies owned by the store.
//
// Resident memory: nothing is read at Open beyond the headers. A bf16 tensor costs its pages
// only once the caller touches them; a converted tensor costs its bf16 copy, and the pages of
// its f16/f32 source are dropped from this process right after conversion.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bf16.h"
#include "worker/model/safetensors.h"

namespace caduceus::model {

inline constexpr char kIndexFileName[] = "model.safetensors.index.json";
inline constexpr char kSingleFileName[] = "model.safetensors";

class WeightStore {
 public:
  // Validates the index and every shard header; errors name the file (and tensor). NOT_FOUND
  // for a missing directory/shard or a tensor the index lists but its shard lacks.
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(const std::string& model_dir);

  const std::string& model_dir() const { return model_dir_; }
  // Sorted names of all tensors (the index's weight_map, or the single file's tensors).
  std::vector<std::string> TensorNames() const;
  const TensorInfo* Find(std::string_view name) const;
  // Sum of all tensors' stored bytes.
  uint64_t total_bytes() const { return total_bytes_; }

  // Checks presence and exact shape; errors name tensor and file.
  absl::StatusOr<TensorInfo> Get(std::string_view name,
                                 std::span<const int64_t> expected_shape) const;

  // The tensor as bf16: a zero-copy pointer into the mapping when stored as bf16, otherwise a
  // copy owned by the store (f16/f32 -> bf16, round to nearest even). Valid until Release(name)
  // or the store's destruction.
  absl::StatusOr<const bf16*> GetBf16(std::string_view name,
                                      std::span<const int64_t> expected_shape);

  // Rows [row_begin, row_end) of the tensor (rows = first dimension; a row is the product of
  // the other dimensions), contiguous, for row-split tensor parallelism. Only the pages of
  // those rows are read.
  absl::StatusOr<const bf16*> GetBf16Rows(std::string_view name,
                                          std::span<const int64_t> expected_shape,
                                          int64_t row_begin, int64_t row_end);

  // Columns [col_begin, col_end) of a 2-D tensor as a row-major [rows, col_end - col_begin]
  // copy owned by the store (column-split tensor parallelism). Always a copy: the source is
  // strided.
  absl::StatusOr<const bf16*> GetBf16Cols(std::string_view name,
                                          std::span<const int64_t> expected_shape,
                                          int64_t col_begin, int64_t col_end);

  // FP8 checkpoints: rows [row_begin, row_end) of a 2-D F8_E4M3 tensor, zero-copy from the
  // mapping; columns [col_begin, col_end) as a copy owned by the store (the whole tensor when the
  // range covers it: zero-copy). INVALID_ARGUMENT for any other dtype.
  absl::StatusOr<const uint8_t*> GetFp8Rows(std::string_view name,
                                            std::span<const int64_t> expected_shape,
                                            int64_t row_begin, int64_t row_end) const;
  absl::StatusOr<const uint8_t*> GetFp8Cols(std::string_view name,
                                            std::span<const int64_t> expected_shape,
                                            int64_t col_begin, int64_t col_end);
  // Every element of a small float tensor (F32, BF16 or F16; any shape, scalars included) as
  // fp32: the scales of an FP8 checkpoint.
  absl::StatusOr<std::vector<float>> GetFloats(std::string_view name) const;

  // Starts asynchronous readahead of the tensor's pages (MADV_WILLNEED), e.g. for the next
  // layer while this one uploads. The Get* calls give no hint for zero-copy tensors, so that
  // taking all pointers at load time does not read the whole model eagerly.
  void Prefetch(std::string_view name) const;

  // Frees the store's copies of the tensor and drops its mapped pages from this process (for
  // after upload to an accelerator). Zero-copy pointers stay valid (pages fault back in from the
  // file); pointers to copies do not.
  void Release(std::string_view name);

 private:
  explicit WeightStore(std::string model_dir) : model_dir_(std::move(model_dir)) {}
  absl::Status OpenIndexed(const std::string& index_path);
  absl::Status OpenSingle(const std::string& path);
  absl::StatusOr<const TensorInfo*> Lookup(std::string_view name) const;
  // Get, refusing F8_E4M3 (the bf16 getters cannot widen FP8 without its scale).
  absl::StatusOr<TensorInfo> GetWidenable(std::string_view name,
                                          std::span<const int64_t> expected_shape) const;
  absl::StatusOr<TensorInfo> GetFp8(std::string_view name,
                                    std::span<const int64_t> expected_shape) const;
  const SafetensorsFile& FileOf(const TensorInfo& t) const;
  // Converts elements [begin, begin + count) to a new store-owned copy under `key`.
  const bf16* ConvertedCopy(const TensorInfo& t, const std::string& key, int64_t begin,
                            int64_t count);

  std::string model_dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const TensorInfo*> tensors_;
  std::unordered_map<const TensorInfo*, const SafetensorsFile*> file_of_;
  uint64_t total_bytes_ = 0;

  std::mutex mu_;  // guards copies_
  // Converted bf16 copies and FP8 column slices, as bytes.
  std::unordered_map<std::string, std::unique_ptr<uint8_t[]>> copies_;
};

// Converts `count` elements of `dtype` (little-endian, any alignment) to bf16, round to nearest
// even. Exposed for tests.
void ConvertToBf16(DType dtype, const uint8_t* src, int64_t count, bf16* dst);

}  // namespace caduceus::model
