#include "common/status_macros.h"
#include "router/text/tokenizer.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::text {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  ASSIGN_OR_RETURN(std::string bytes, tokenizer_->TokenBytes(id));
  if (skip_special_ && tokenizer_->IsSpecial(id)) return std::string();
  pending_ += bytes;
  // Emit every complete character; an ill-formed subpart is final as soon as it is seen (no later
  // byte can repair it), but a well-formed prefix cut by the end of the buffer waits.
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const Utf8Step step = NextUtf8(pending_, pos);
    if (step.kind == Utf8Kind::kIncomplete) break;
    if (step.kind == Utf8Kind::kValid) {
      out.append(pending_, pos, step.length);
    } else {
      out.append(kReplacementChar);
    }
    pos += step.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace caduceus::text
