// Shared by the sequence table's tests: small limits (10-token vocabulary, 4-token blocks).
#pragma once

#include "worker/server/sequence_table.h"

namespace caduceus::worker::test_util {

inline StepLimits SmallLimits() {
  StepLimits l;
  l.max_step_tokens = 64;
  l.max_step_sequences = 4;
  l.num_kv_blocks = 8;
  l.block_size = 4;
  l.max_context = 32;
  l.vocab_size = 10;
  return l;
}

}  // namespace caduceus::worker::test_util
