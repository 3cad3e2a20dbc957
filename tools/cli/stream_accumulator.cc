#include "tools/cli/stream_accumulator.h"

namespace caduceus::tools {

void StreamAccumulator::Add(const caduceus::v1::GenerateStreamResponse& message) {
  if (!message.request_id().empty()) response_.set_request_id(message.request_id());
  response_.mutable_text()->append(message.text_delta());
  response_.mutable_token_ids()->MergeFrom(message.token_ids());
  response_.mutable_logprobs()->MergeFrom(message.logprobs());
  // Sent on the first message only; tolerate a router that repeats it.
  if (response_.prompt_token_ids().empty()) {
    response_.mutable_prompt_token_ids()->MergeFrom(message.prompt_token_ids());
  }
  // The last message's fields: finish_reason, usage, timing.
  if (message.finish_reason() != caduceus::v1::FINISH_REASON_UNSPECIFIED) {
    response_.set_finish_reason(message.finish_reason());
  }
  if (message.has_usage()) *response_.mutable_usage() = message.usage();
  if (message.has_timing()) *response_.mutable_timing() = message.timing();
}

}  // namespace caduceus::tools
