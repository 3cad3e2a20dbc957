#include "router/text/byte_level_bpe.h"

#include <array>
#include <queue>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::text {
namespace {

struct ByteTables {
  std::array<char32_t, 256> to_unicode;
  absl::flat_hash_map<char32_t, uint8_t> to_byte;
};

const ByteTables& Tables() {
  static const ByteTables* tables = [] {
    auto* t = new ByteTables();
    const auto visible = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      t->to_unicode[b] = visible(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      t->to_byte[t->to_unicode[b]] = static_cast<uint8_t>(b);
    }
    return t;
  }();
  return *tables;
}

}  // namespace

char32_t ByteToUnicode(uint8_t b) { return Tables().to_unicode[b]; }

int UnicodeToByte(char32_t c) {
  const auto& m = Tables().to_byte;
  auto it = m.find(c);
  return it == m.end() ? -1 : it->second;
}

std::string ByteLevelDecode(std::string_view token) {
  std::string out;
  size_t pos = 0;
  while (pos < token.size()) {
    const Utf8Step step = NextUtf8(token, pos);
    const int b = step.kind == Utf8Kind::kValid ? UnicodeToByte(step.code_point) : -1;
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(token.substr(pos, step.length));
    }
    pos += step.length;
  }
  return out;
}

std::string ByteLevelEncode(std::string_view bytes) {
  std::string out;
  for (char c : bytes) AppendUtf8(ByteToUnicode(static_cast<uint8_t>(c)), out);
  return out;
}

absl::StatusOr<std::unique_ptr<ByteLevelBpe>> ByteLevelBpe::Create(
    const std::vector<std::pair<std::string, int32_t>>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges) {
  std::unique_ptr<ByteLevelBpe> bpe(new ByteLevelBpe());
  bpe->ignore_merges_ = ignore_merges;
  int32_t id_end = 0;
  for (const auto& [token, id] : vocab) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("vocab token '", token, "' has negative id ", id));
    id_end = std::max(id_end, id + 1);
  }
  bpe->bytes_of_id_.resize(id_end);
  bpe->has_id_.assign(id_end, false);
  bpe->id_of_token_.reserve(vocab.size());
  bpe->id_of_bytes_.reserve(vocab.size());
  for (const auto& [token, id] : vocab) {
    if (bpe->has_id_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("vocab id ", id, " is used twice (by '", token, "')"));
    }
    bpe->has_id_[id] = true;
    bpe->bytes_of_id_[id] = ByteLevelDecode(token);
    bpe->id_of_token_.emplace(token, id);
    bpe->id_of_bytes_.emplace(bpe->bytes_of_id_[id], id);
  }
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    AppendUtf8(ByteToUnicode(static_cast<uint8_t>(b)), spelled);
    bpe->byte_id_[b] = bpe->TokenId(spelled);
  }
  bpe->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t a = bpe->TokenId(left);
    const int32_t b = bpe->TokenId(right);
    const int32_t ab = bpe->TokenId(absl::StrCat(left, right));
    if (a < 0 || b < 0 || ab < 0) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " ('", left, "' '", right,
                                                     "') uses a token missing from the vocab"));
    }
    // A repeated pair keeps its first (best) rank, as in Hugging Face tokenizers.
    bpe->merges_.try_emplace(PairKey(a, b), MergeResult{static_cast<int32_t>(rank), ab});
  }
  return bpe;
}

int32_t ByteLevelBpe::TokenId(std::string_view token) const {
  auto it = id_of_token_.find(AbslView(token));
  return it == id_of_token_.end() ? -1 : it->second;
}

const std::string* ByteLevelBpe::TokenBytes(int32_t id) const {
  if (id < 0 || id >= id_end() || !has_id_[id]) return nullptr;
  return &bytes_of_id_[id];
}

void ByteLevelBpe::EncodePiece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    // Llama-3 sets ignore_merges: a pre-token that is itself a vocab entry is emitted whole, even
    // where the merge order would have split it differently.
    auto it = id_of_bytes_.find(AbslView(piece));
    if (it != id_of_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() > kMaxCachedPieceBytes) {
    Merge(piece, out);
    return;
  }
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = cache_.find(AbslView(piece));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  Merge(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  absl::MutexLock lock(&cache_mu_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // crude bound; refills with hot pieces
  cache_.emplace(std::string(piece), std::move(ids));
}

// Standard BPE: repeatedly merge the adjacent pair of lowest rank (leftmost on ties). Symbols live
// in a doubly linked list over an array, candidate pairs in a min-heap; stale heap entries are
// skipped when popped. O(n log n) per piece.
void ByteLevelBpe::Merge(std::string_view piece, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // symbol index
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const int32_t n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_id_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  const auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = sym[left].next;
    if (right < 0 || sym[left].id < 0 || sym[right].id < 0) return;
    auto it = merges_.find(PairKey(sym[left].id, sym[right].id));
    if (it == merges_.end()) return;
    heap.push({it->second.rank, left, sym[left].id, sym[right].id, it->second.merged_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t right = sym[c.left].next;
    // Stale if either side has changed since the candidate was pushed (ids encode both).
    if (sym[c.left].id != c.left_id || right < 0 || sym[right].id != c.right_id) continue;
    sym[c.left].id = c.merged_id;
    sym[c.left].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.left;
    sym[right].id = -2;  // dead
    consider(sym[c.left].prev);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) {
    if (sym[i].id >= 0) out.push_back(sym[i].id);
  }
}

}  // namespace caduceus::text
