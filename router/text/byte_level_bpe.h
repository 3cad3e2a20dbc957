// Byte-level BPE model (GPT-2 / Llama-3 style): tokens are strings over a 256-character alphabet
// that stands for raw bytes, and merges are ranked pairs. Encodes one pre-token at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace caduceus::text {

// Debian's abseil is built with its own string_view type, distinct from std::string_view.
inline absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// GPT-2's byte <-> "visible" code point table: printable Latin-1 bytes map to themselves, the rest
// to U+0100.. in byte order, so every byte has a printable stand-in in vocab strings.
char32_t ByteToUnicode(uint8_t b);
// Inverse; returns -1 for a code point outside the table.
int UnicodeToByte(char32_t c);

// Raw bytes of a byte-level token string ("Ġthe" -> " the"). Characters outside the table are kept
// as their UTF-8 (vocabularies should have none; tolerated rather than rejected).
std::string ByteLevelDecode(std::string_view token);
// Byte-level string of raw bytes (" the" -> "Ġthe").
std::string ByteLevelEncode(std::string_view bytes);

class ByteLevelBpe {
 public:
  // `vocab`: token string -> id. `merges`: pairs of token strings, in rank order. Every merge's
  // parts and their concatenation must be in the vocabulary.
  static absl::StatusOr<std::unique_ptr<ByteLevelBpe>> Create(
      const std::vector<std::pair<std::string, int32_t>>& vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);

  // Appends the ids of one pre-token (raw bytes) to `out`. Thread-safe.
  void EncodePiece(std::string_view piece, std::vector<int32_t>& out) const;

  // Raw bytes of vocab token `id`, or nullptr if the id is not in the vocabulary.
  const std::string* TokenBytes(int32_t id) const;
  // Id of a byte-level token string ("Ġthe"), or -1.
  int32_t TokenId(std::string_view token) const;
  // One past the largest id in the vocabulary.
  int32_t id_end() const { return static_cast<int32_t>(bytes_of_id_.size()); }

 private:
  ByteLevelBpe() = default;
  void Merge(std::string_view piece, std::vector<int32_t>& out) const;

  struct MergeResult {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  bool ignore_merges_ = false;
  absl::flat_hash_map<std::string, int32_t> id_of_token_;  // byte-level spelling -> id
  absl::flat_hash_map<std::string, int32_t> id_of_bytes_;  // raw bytes -> id (ignore_merges)
  std::vector<std::string> bytes_of_id_;
  std::vector<bool> has_id_;
  int32_t byte_id_[256];  // id of each single-byte token, -1 if absent (that byte is dropped)
  absl::flat_hash_map<uint64_t, MergeResult> merges_;

  // Pre-token -> ids. Natural text reuses a small set of pieces, so this removes most BPE work.
  static constexpr size_t kMaxCacheEntries = 1 << 17;
  static constexpr size_t kMaxCachedPieceBytes = 64;
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace caduceus::text
