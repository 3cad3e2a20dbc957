#include "router/server/worker_features.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace caduceus::router {

bool WorkerHas(const worker::v1::InfoResponse& info, std::string_view feature) {
  return std::find(info.features().begin(), info.features().end(), feature) != info.features().end();
}

SchedulerConfig SchedulerConfigFor(const SchedulerConfig& wanted,
                                   const worker::v1::InfoResponse& info,
                                   std::vector<std::string>* warnings) {
  SchedulerConfig sc = wanted;
  sc.block_size = info.block_size();
  sc.num_blocks = info.num_kv_blocks();
  sc.max_num_seqs = std::min(sc.max_num_seqs, info.max_step_sequences());
  sc.max_tokens_per_step = std::min(sc.max_tokens_per_step, info.max_step_tokens());
  sc.prefill_chunk_tokens = std::min(sc.prefill_chunk_tokens, sc.max_tokens_per_step);
  if (sc.max_num_seqs < wanted.max_num_seqs || sc.max_tokens_per_step < wanted.max_tokens_per_step) {
    warnings->push_back(absl::StrCat(
        "accepts steps of at most ", info.max_step_sequences(), " sequences and ",
        info.max_step_tokens(), " tokens: --max-num-seqs / --max-tokens-per-step capped to ",
        sc.max_num_seqs, " / ", sc.max_tokens_per_step,
        " for it (raise the worker's --max-step-sequences / --max-step-tokens)"));
  }
  if (sc.speculative_tokens > 0 && !WorkerHas(info, kFeatureDraftTokens)) {
    sc.speculative_tokens = 0;
    warnings->push_back(
        "runs a worker that cannot verify speculative guesses (an older version): "
        "--speculative-tokens is off for it until it is upgraded");
  }
  return sc;
}

}  // namespace caduceus::router
