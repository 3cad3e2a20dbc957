#include "router/text/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "router/text/pretokenizer.h"

namespace caduceus::text {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view origin, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json '", AbslView(origin), "': ", AbslView(what)));
}

// Only the Llama-3 pre-tokenizer is implemented; a different Split regex would silently produce
// wrong ids, so it is rejected. Accepts a bare Split or a Sequence containing one (plus ByteLevel
// with use_regex=false, which only maps bytes and is implied by the model).
absl::Status CheckPreTokenizer(const json& pre, std::string_view origin) {
  if (pre.is_null()) return absl::OkStatus();
  if (!pre.is_object()) return Bad(origin, "'pre_tokenizer' is not an object");
  const std::string type = pre.value("type", "");
  if (type == "Sequence") {
    const auto it = pre.find("pretokenizers");
    if (it == pre.end() || !it->is_array()) return Bad(origin, "pre_tokenizer Sequence lacks 'pretokenizers'");
    for (const json& p : *it) RETURN_IF_ERROR(CheckPreTokenizer(p, origin));
    return absl::OkStatus();
  }
  if (type == "Split") {
    const auto pattern = pre.find("pattern");
    if (pattern == pre.end() || !pattern->is_object() || !pattern->contains("Regex") ||
        !(*pattern)["Regex"].is_string() ||
        (*pattern)["Regex"].get<std::string>() != kLlama3PreTokenizerRegex) {
      return Bad(origin, "unsupported pre_tokenizer Split pattern (only the Llama-3 regex is implemented)");
    }
    if (pre.value("behavior", "Isolated") != "Isolated" || pre.value("invert", false)) {
      return Bad(origin, "unsupported pre_tokenizer Split behavior (want Isolated, invert=false)");
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    if (pre.value("use_regex", true) || pre.value("add_prefix_space", false)) {
      return Bad(origin, "unsupported ByteLevel pre_tokenizer (want use_regex=false, add_prefix_space=false)");
    }
    return absl::OkStatus();
  }
  return Bad(origin, absl::StrCat("unsupported pre_tokenizer type '", type, "'"));
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseMerges(const json& merges,
                                                                              std::string_view origin) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    // Two spellings exist: "a b" (older files) and ["a", "b"] (tokenizers >= 0.20).
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos) {
        return Bad(origin, absl::StrCat("merge ", i, " '", s, "' is not two tokens separated by one space"));
      }
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Bad(origin, absl::StrCat("merge ", i, " is neither \"a b\" nor [\"a\", \"b\"]: ", m.dump()));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& tokenizer_json_path) {
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file '", tokenizer_json_path, "'"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", tokenizer_json_path, "'"));
  return FromJson(buffer.str(), tokenizer_json_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelDir(const std::string& model_dir) {
  return FromFile(model_dir + "/tokenizer.json");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                               std::string_view origin) {
  // The checks below test types before reading, but json::value() and friends still throw on a
  // field of unexpected type; no exception may leave this library.
  try {
    return FromJsonUnchecked(json_text, origin);
  } catch (const nlohmann::json::exception& e) {
    return Bad(origin, absl::StrCat("malformed field: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonUnchecked(std::string_view json_text,
                                                                        std::string_view origin) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Bad(origin, "not valid JSON");
  if (!root.is_object()) return Bad(origin, "top level is not a JSON object");

  const auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) return Bad(origin, "missing 'model' object");
  const json& model = *model_it;
  if (model.contains("type") && model["type"] != "BPE") {
    return Bad(origin, absl::StrCat("model type ", model["type"].dump(), " is not supported (want \"BPE\")"));
  }
  const auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) return Bad(origin, "missing 'model.vocab' object");
  const auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) return Bad(origin, "missing 'model.merges' array");
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    return Bad(origin, "a normalizer is not supported (Llama-3 has none)");
  }
  if (root.contains("pre_tokenizer")) RETURN_IF_ERROR(CheckPreTokenizer(root["pre_tokenizer"], origin));

  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(vocab_it->size());
  for (const auto& [token, id] : vocab_it->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return Bad(origin, absl::StrCat("vocab entry '", token, "' has a bad id ", id.dump()));
    }
    vocab.emplace_back(token, id.get<int32_t>());
  }
  ASSIGN_OR_RETURN(auto merges, ParseMerges(*merges_it, origin));
  bool ignore_merges = false;
  if (model.contains("ignore_merges") && model["ignore_merges"].is_boolean()) {
    ignore_merges = model["ignore_merges"].get<bool>();
  }
  auto bpe = ByteLevelBpe::Create(vocab, merges, ignore_merges);
  if (!bpe.ok()) return Bad(origin, std::string(bpe.status().message()));

  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->bpe_ = *std::move(bpe);
  tok->vocab_size_ = tok->bpe_->id_end();
  tok->trie_.emplace_back();  // root

  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& added = root["added_tokens"];
    if (!added.is_array()) return Bad(origin, "'added_tokens' is not an array");
    for (size_t i = 0; i < added.size(); ++i) {
      const json& a = added[i];
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
          a["id"].get<int64_t>() > INT32_MAX || !a.contains("content") || !a["content"].is_string() ||
          a["content"].get_ref<const std::string&>().empty()) {
        return Bad(origin, absl::StrCat("added_tokens[", i, "] needs an integer 'id' and non-empty 'content'"));
      }
      AddedToken t;
      t.content = a["content"].get<std::string>();
      t.id = a["id"].get<int32_t>();
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      if (tok->added_index_of_id_.contains(t.id) || tok->added_index_of_content_.contains(t.content)) {
        return Bad(origin, absl::StrCat("added_tokens[", i, "] repeats id ", t.id, " or content '", t.content, "'"));
      }
      const int32_t index = static_cast<int32_t>(tok->added_.size());
      tok->added_index_of_id_[t.id] = index;
      tok->added_index_of_content_[t.content] = index;
      tok->vocab_size_ = std::max(tok->vocab_size_, t.id + 1);
      tok->any_non_special_added_ |= !t.special;
      // Insert into the trie.
      int32_t node = 0;
      for (char c : t.content) {
        const uint8_t b = static_cast<uint8_t>(c);
        int32_t next = -1;
        for (const auto& [byte, child] : tok->trie_[node].children) {
          if (byte == b) next = child;
        }
        if (next < 0) {
          next = static_cast<int32_t>(tok->trie_.size());
          tok->trie_[node].children.emplace_back(b, next);
          tok->trie_.emplace_back();
        }
        node = next;
      }
      tok->trie_[node].token = index;
      tok->added_.push_back(std::move(t));
    }
  }
  return tok;
}

std::optional<std::pair<int32_t, size_t>> Tokenizer::MatchAdded(std::string_view text, size_t pos,
                                                                bool allow_special) const {
  std::optional<std::pair<int32_t, size_t>> best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const uint8_t b = static_cast<uint8_t>(text[i]);
    int32_t next = -1;
    for (const auto& [byte, child] : trie_[node].children) {
      if (byte == b) {
        next = child;
        break;
      }
    }
    if (next < 0) break;
    node = next;
    const int32_t t = trie_[node].token;
    if (t >= 0 && (allow_special || !added_[t].special)) best = {{t, i + 1 - pos}};
  }
  return best;
}

void Tokenizer::EncodePlain(std::string_view text, std::vector<int32_t>& out) const {
  for (std::string_view piece : Llama3PreTokenize(text)) bpe_->EncodePiece(piece, out);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (added_.empty() || (!allow_special && !any_non_special_added_)) {
    EncodePlain(text, out);
    return out;
  }
  // Split on added tokens first so their text never reaches the pre-tokenizer, then encode the
  // stretches between them. lstrip/rstrip swallow whitespace next to a token (unused by Llama-3).
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  size_t segment_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto match = MatchAdded(text, pos, allow_special);
    if (!match) {
      ++pos;
      continue;
    }
    const AddedToken& t = added_[match->first];
    size_t segment_end = pos;
    if (t.lstrip) {
      while (segment_end > segment_start && is_space(text[segment_end - 1])) --segment_end;
    }
    EncodePlain(text.substr(segment_start, segment_end - segment_start), out);
    out.push_back(t.id);
    pos += match->second;
    if (t.rstrip) {
      while (pos < text.size() && is_space(text[pos])) ++pos;
    }
    segment_start = pos;
  }
  EncodePlain(text.substr(segment_start), out);
  return out;
}

absl::StatusOr<std::string> Tokenizer::TokenBytes(int32_t id) const {
  if (auto it = added_index_of_id_.find(id); it != added_index_of_id_.end()) {
    return added_[it->second].content;
  }
  if (const std::string* bytes = bpe_->TokenBytes(id)) return *bytes;
  return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary (size ",
                                                 vocab_size_, ")"));
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (const int32_t id : ids) {
    if (auto it = added_index_of_id_.find(id); it != added_index_of_id_.end()) {
      if (!(skip_special && added_[it->second].special)) out.append(added_[it->second].content);
      continue;
    }
    const std::string* bytes = bpe_->TokenBytes(id);
    if (bytes == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary (size ",
                                                     vocab_size_, ")"));
    }
    out.append(*bytes);
  }
  return out;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_index_of_content_.find(AbslView(token)); it != added_index_of_content_.end()) {
    return added_[it->second].id;
  }
  const int32_t id = bpe_->TokenId(token);
  if (id < 0) return std::nullopt;
  return id;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = added_index_of_id_.find(id);
  return it != added_index_of_id_.end() && added_[it->second].special;
}

}  // namespace caduceus::text
