// Chat messages -> prompt token ids: renders the model's chat template, then tokenizes the
// template's own text with special tokens parsed and every message's content as plain text, so a
// user who types "<|eot_id|>" gets the characters, not the control token (no prompt injection).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "router/text/chat_template.h"
#include "router/text/tokenizer.h"

namespace caduceus::text {

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tokenizer,
                                                const ChatTemplate& chat_template,
                                                const std::vector<ChatMessage>& messages,
                                                bool add_generation_prompt);

}  // namespace caduceus::text
