#include "router/text/pretokenizer.h"

#include <cstdint>

#include "router/text/tokenizer_utf8.h"
#include "unicode/uchar.h"

namespace caduceus::text {
namespace {

// Character classes the regex distinguishes.
enum : uint8_t {
  kLetter = 1,   // \p{L}
  kNumber = 2,   // \p{N}
  kSpace = 4,    // \s
  kNewline = 8,  // [\r\n]
};

uint8_t Classify(char32_t c) {
  if (c < 0x80) {
    if (c == '\r' || c == '\n') return kNewline | kSpace;
    if (c == ' ' || (c >= '\t' && c <= '\f')) return kSpace;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return kLetter;
    if (c >= '0' && c <= '9') return kNumber;
    return 0;
  }
  const uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  if (mask & U_GC_L_MASK) return kLetter;
  if (mask & U_GC_N_MASK) return kNumber;
  if (u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE)) return kSpace;
  return 0;
}

// Case-insensitive match of one contraction letter, with Unicode simple case folding: the only
// non-ASCII code point folding to any of s,t,r,e,v,m,l,d is U+017F LATIN SMALL LETTER LONG S.
bool FoldEq(char32_t c, char lower) {
  if (c == static_cast<char32_t>(lower) || c == static_cast<char32_t>(lower - 'a' + 'A')) return true;
  return lower == 's' && c == 0x017F;
}

class Matcher {
 public:
  explicit Matcher(std::string_view text) {
    size_t pos = 0;
    while (pos < text.size()) {
      const Utf8Step step = NextUtf8(text, pos);
      cps_.push_back(step.code_point);
      cls_.push_back(Classify(step.code_point));
      offsets_.push_back(pos);
      pos += step.length;
    }
    offsets_.push_back(text.size());
  }

  size_t size() const { return cps_.size(); }
  size_t offset(size_t i) const { return offsets_[i]; }

  // Returns the end (code point index) of the match starting at i; always > i.
  size_t MatchAt(size_t i) const {
    if (size_t e = Contraction(i)) return e;
    if (size_t e = Word(i)) return e;
    if (Is(i, kNumber)) {
      size_t e = i + 1;
      while (e < i + 3 && Is(e, kNumber)) ++e;
      return e;
    }
    if (size_t e = Punctuation(i)) return e;
    if (Is(i, kSpace)) return Whitespace(i);
    return i + 1;  // Unreachable: every code point falls in one class above.
  }

 private:
  bool Is(size_t i, uint8_t mask) const { return i < cls_.size() && (cls_[i] & mask); }
  bool IsOther(size_t i) const { return i < cls_.size() && !(cls_[i] & (kLetter | kNumber | kSpace)); }

  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  size_t Contraction(size_t i) const {
    if (cps_[i] != '\'' || i + 1 >= size()) return 0;
    const char32_t a = cps_[i + 1];
    if (FoldEq(a, 's') || FoldEq(a, 't') || FoldEq(a, 'm') || FoldEq(a, 'd')) return i + 2;
    if (i + 2 >= size()) return 0;
    const char32_t b = cps_[i + 2];
    if ((FoldEq(a, 'r') && FoldEq(b, 'e')) || (FoldEq(a, 'v') && FoldEq(b, 'e')) ||
        (FoldEq(a, 'l') && FoldEq(b, 'l'))) {
      return i + 3;
    }
    return 0;
  }

  // [^\r\n\p{L}\p{N}]?\p{L}+  (if the optional char is taken but no letter follows, backtracking
  // drops it, and then \p{L}+ must start at i itself.)
  size_t Word(size_t i) const {
    size_t j = i;
    if (!Is(i, kLetter | kNumber | kNewline) && Is(i + 1, kLetter)) j = i + 1;
    if (!Is(j, kLetter)) return 0;
    while (Is(j, kLetter)) ++j;
    return j;
  }

  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  size_t Punctuation(size_t i) const {
    size_t j = i;
    if (cps_[j] == ' ' && IsOther(j + 1)) ++j;
    if (!IsOther(j)) return 0;
    while (IsOther(j)) ++j;
    while (Is(j, kNewline)) ++j;
    return j;
  }

  // \s*[\r\n]+ | \s+(?!\S) | \s+, for a whitespace run starting at i.
  size_t Whitespace(size_t i) const {
    size_t end = i;
    while (Is(end, kSpace)) ++end;
    // \s* is greedy, so backtracking hands [\r\n]+ the run's last newline and nothing after it.
    for (size_t k = end; k > i; --k) {
      if (Is(k - 1, kNewline)) return k;
    }
    // \s+(?!\S): the whole run at end of text; otherwise all but the last space, which is left to
    // prefix the next word (" word"). A single space before a non-space falls through to \s+.
    if (end == size()) return end;
    if (end - i >= 2) return end - 1;
    return end;
  }

  std::vector<char32_t> cps_;
  std::vector<uint8_t> cls_;
  std::vector<size_t> offsets_;
};

}  // namespace

std::vector<std::string_view> Llama3PreTokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  const Matcher m(text);
  size_t i = 0;
  while (i < m.size()) {
    const size_t e = m.MatchAt(i);
    pieces.push_back(text.substr(m.offset(i), m.offset(e) - m.offset(i)));
    i = e;
  }
  return pieces;
}

}  // namespace caduceus::text
