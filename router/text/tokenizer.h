// The Llama-3 tokenizer: reads a Hugging Face tokenizer.json (byte-level BPE + the Llama-3 split
// regex + added/special tokens) and encodes/decodes exactly as Hugging Face tokenizers does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "router/text/byte_level_bpe.h"

namespace caduceus::text {

class Tokenizer {
 public:
  // Errors: NOT_FOUND if the file cannot be read, INVALID_ARGUMENT (naming the file and the
  // problem) if it is not JSON or not a byte-level BPE tokenizer with the Llama-3 pre-tokenizer.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json_path);
  // Loads <model_dir>/tokenizer.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModelDir(const std::string& model_dir);
  // Parses tokenizer.json content; `origin` names it in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json, std::string_view origin);

  // Never adds BOS. allow_special=false: special-token text in `text` is plain text (so user
  // content cannot inject control tokens); non-special added tokens still match, as in HF.
  // allow_special=true: every added token's text becomes its id (leftmost, longest match).
  std::vector<int32_t> Encode(std::string_view text, bool allow_special) const;

  // Byte-exact concatenation of the tokens' bytes (may be invalid UTF-8 when a multi-byte
  // character is split across a cut). INVALID_ARGUMENT for an unknown id.
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Id of a token by its tokenizer.json spelling ("Ġthe", "<|eot_id|>").
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Raw bytes of one token. INVALID_ARGUMENT for an unknown id.
  absl::StatusOr<std::string> TokenBytes(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // One past the largest id (vocab or added): 128256 for Llama-3.
  int32_t vocab_size() const { return vocab_size_; }

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
    bool lstrip;
    bool rstrip;
  };
  // Byte trie over added-token contents for leftmost-longest matching.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;  // index into added_, or -1
  };

  Tokenizer() = default;
  // FromJson without the exception guard.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonUnchecked(std::string_view json,
                                                                      std::string_view origin);
  // Longest eligible added token starting at text[pos]: index into added_ and its length.
  std::optional<std::pair<int32_t, size_t>> MatchAdded(std::string_view text, size_t pos,
                                                       bool allow_special) const;
  void EncodePlain(std::string_view text, std::vector<int32_t>& out) const;

  std::unique_ptr<ByteLevelBpe> bpe_;
  std::vector<AddedToken> added_;
  absl::flat_hash_map<int32_t, int32_t> added_index_of_id_;
  absl::flat_hash_map<std::string, int32_t> added_index_of_content_;
  std::vector<TrieNode> trie_;
  bool any_non_special_added_ = false;
  int32_t vocab_size_ = 0;
};

// Streaming decoder: feed ids one at a time; returns only complete UTF-8 text, holding back an
// incomplete multi-byte sequence until it completes. Ill-formed bytes become U+FFFD as soon as
// they are known to be ill-formed, so the output is always valid UTF-8.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special = false);
  // INVALID_ARGUMENT for an unknown id (state unchanged).
  absl::StatusOr<std::string> Push(int32_t id);
  // Emits whatever is held back (a truncated sequence, as U+FFFD) and resets.
  std::string Flush();
  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace caduceus::text
