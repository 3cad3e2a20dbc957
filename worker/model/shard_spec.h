// Which part of a Llama model one tensor-parallel rank holds (Megatron layout).
//
// Split rules (all checked by ShardLayout::Make, INVALID_ARGUMENT naming the config field):
// - attention query heads: num_attention_heads % size == 0; rank r holds a contiguous run of
//   num_attention_heads / size heads.
// - KV heads: split when num_key_value_heads % size == 0 (rank r holds num_kv / size heads, the
//   ones its query heads read); replicated when size > num_kv and size % num_kv == 0 (each rank
//   holds the single KV head its query heads read, so size / num_kv ranks hold the same head);
//   anything else cannot be split.
// - MLP: intermediate_size % size == 0.
// - vocabulary (embedding and lm_head): vocab_size % size == 0. We require divisibility rather
//   than padding the last rank: Llama-3's 128256 = 2^8 * 501 divides by every power-of-two group
//   size up to 256, and equal slices keep AllGather of the logits a single call with no padding.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "worker/model/model_config.h"

namespace caduceus::model {

struct ShardSpec {
  int rank = 0;
  int size = 1;
};

// The ranges of a rank's slices, in units of heads / rows.
struct ShardLayout {
  ShardSpec spec;
  int32_t q_heads = 0, q_head_begin = 0;    // local query heads
  int32_t kv_heads = 0, kv_head_begin = 0;  // local KV heads
  bool kv_replicated = false;
  int32_t inter = 0, inter_begin = 0;  // local MLP intermediate columns
  int32_t vocab = 0, vocab_begin = 0;  // local vocabulary rows

  // The whole model (size 1); needs no validation.
  static ShardLayout Full(const ModelConfig& c) {
    ShardLayout l;
    l.q_heads = c.num_heads;
    l.kv_heads = c.num_kv_heads;
    l.inter = c.intermediate_size;
    l.vocab = c.vocab_size;
    return l;
  }

  static absl::StatusOr<ShardLayout> Make(const ModelConfig& c, const ShardSpec& spec) {
    const int s = spec.size;
    if (s < 1) {
      return absl::InvalidArgumentError(absl::StrCat("tensor-parallel size ", s, " must be >= 1"));
    }
    if (spec.rank < 0 || spec.rank >= s) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor-parallel rank ", spec.rank, " is outside [0, ", s, ")"));
    }
    auto indivisible = [s](const char* field, int value) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot split the model over ", s, " tensor-parallel ranks: ", field, " (", value,
          ") is not divisible by ", s));
    };
    if (c.num_heads % s != 0) return indivisible("num_attention_heads", c.num_heads);
    if (c.intermediate_size % s != 0) return indivisible("intermediate_size", c.intermediate_size);
    if (c.vocab_size % s != 0) return indivisible("vocab_size", c.vocab_size);
    if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("num_key_value_heads (", c.num_kv_heads,
                                                     ") does not divide num_attention_heads (",
                                                     c.num_heads, ")"));
    }
    ShardLayout l;
    l.spec = spec;
    const int r = spec.rank;
    l.q_heads = c.num_heads / s;
    l.q_head_begin = r * l.q_heads;
    if (c.num_kv_heads % s == 0) {
      l.kv_heads = c.num_kv_heads / s;
      l.kv_head_begin = r * l.kv_heads;
    } else if (s % c.num_kv_heads == 0) {
      // s / num_kv consecutive ranks share one KV head; their query heads are exactly that
      // head's group because num_heads / s divides the group size num_heads / num_kv.
      l.kv_replicated = true;
      l.kv_heads = 1;
      l.kv_head_begin = r / (s / c.num_kv_heads);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot split the model over ", s, " tensor-parallel ranks: num_key_value_heads (",
          c.num_kv_heads, ") must be divisible by ", s, " or divide it (then KV heads are "
          "replicated)"));
    }
    l.inter = c.intermediate_size / s;
    l.inter_begin = r * l.inter;
    l.vocab = c.vocab_size / s;
    l.vocab_begin = r * l.vocab;
    return l;
  }
};

}  // namespace caduceus::model
