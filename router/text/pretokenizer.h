// The Llama-3 pre-tokenizer: splits text into the pieces that BPE then encodes one by one.
// It is a hand-written equivalent of the Split regex in Llama-3's tokenizer.json,
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
//
// with the leftmost-first, backtracking semantics of Oniguruma / Rust `regex` that Hugging Face
// tokenizers uses: \p{L} and \p{N} are the Unicode general categories, \s is White_Space (so it
// includes U+0085 and excludes U+FEFF, unlike JavaScript's \s), and (?i) folds 's' to 'ſ' too.
// std::regex has neither Unicode classes nor lookahead, hence the matcher.
#pragma once

#include <string_view>
#include <vector>

namespace caduceus::text {

// The regex pattern this pre-tokenizer implements, as spelled in tokenizer.json.
inline constexpr std::string_view kLlama3PreTokenizerRegex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Splits `text` into consecutive, non-empty pieces whose concatenation is `text` (byte-exact).
// Ill-formed UTF-8 is tolerated: each bad subpart is classified as U+FFFD (a symbol) but its
// original bytes stay in the piece, so byte-level BPE still round-trips them.
std::vector<std::string_view> Llama3PreTokenize(std::string_view text);

}  // namespace caduceus::text
