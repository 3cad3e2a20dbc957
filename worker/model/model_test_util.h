// Test helpers shared by the model tests that run the tiny preset through LlamaModel in several
// configurations (tensor_parallel_test.cc, device_path_test.cc): greedy traces of a fixed set
// of prompts, and thread groups of ranks.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "worker/model/llama_model.h"
#include "worker/model/thread_communicator.h"

namespace caduceus::model::test_util {

// Decode steps after the prefill in Generate.
inline constexpr int kSteps = 16;


inline std::string TinyModelDir() {
  const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
  return std::string(dir ? dir : "testdata") + "/tiny-seed1";
}

inline std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int salt = 0; salt < 4; ++salt) {
    const int n = 3 + 11 * salt;  // 3, 14, 25, 36 tokens: one to three KV blocks
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (1000 + 7919 * (i + 1) * (salt + 3)) % 128000;
    prompts.push_back(std::move(ids));
  }
  return prompts;
}

inline int32_t ArgMax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// What one rank saw: the greedy continuation of each prompt and the logits of every step.
struct Trace {
  std::vector<std::vector<int32_t>> tokens;  // per prompt
  std::vector<std::vector<float>> logits;    // per step: [prompts, vocab]
  absl::Status status;
};

// Prefills every prompt in one step, then decodes all of them together for kSteps steps. With
// argmax_odd, the odd sequences are argmax_only: their greedy tokens come from the lm_head's
// argmax (LinearArgmax, gathered across ranks) in the same steps as the others' logits rows.
// With `follow` (a follower rank, as in the worker): the tokens come from that trace and Forward
// gets no logits, so it reads nothing back; the trace records no logits.
inline Trace Generate(LlamaModel& model, bool argmax_odd = false, const Trace* follow = nullptr) {
  const auto prompts = Prompts();
  const size_t num = prompts.size();
  Trace trace;
  trace.tokens.resize(num);
  auto cache_or = model.CreateKvCache(64);
  if (!cache_or.ok()) {
    trace.status = cache_or.status();
    return trace;
  }
  KvCache& cache = **cache_or;
  std::vector<std::vector<int32_t>> blocks(num);
  for (size_t s = 0; s < num; ++s) {
    for (int b = 0; b < 4; ++b) blocks[s].push_back(static_cast<int32_t>(s * 4 + b));
  }
  std::vector<int32_t> next(num);
  for (int step = 0; step <= kSteps; ++step) {
    StepBatch batch;
    for (size_t s = 0; s < num; ++s) {
      if (step == 0) {
        batch.sequences.push_back({prompts[s], 0, blocks[s]});
      } else {
        const int32_t pos = static_cast<int32_t>(prompts[s].size()) + step - 1;
        batch.sequences.push_back({std::span<const int32_t>(&next[s], 1), pos, blocks[s]});
      }
      batch.sequences.back().argmax_only = argmax_odd && s % 2 == 1;
    }
    StepLogits logits;
    trace.status = model.Forward(batch, cache, follow != nullptr ? nullptr : &logits);
    if (!trace.status.ok()) return trace;
    if (follow != nullptr) {
      for (size_t s = 0; s < num; ++s) {
        next[s] = follow->tokens[s][step];
        trace.tokens[s].push_back(next[s]);
      }
      continue;
    }
    for (size_t s = 0; s < num; ++s) {
      const int32_t row = logits.row_begin[s];
      if (batch.sequences[s].argmax_only) {
        if (logits.HasValues(row)) {
          trace.status = absl::InternalError("an argmax_only row came with logits");
          return trace;
        }
        next[s] = logits.greedy_token[row];
      } else {
        next[s] = ArgMax(logits.Row(row));
      }
      trace.tokens[s].push_back(next[s]);
    }
    trace.logits.push_back(std::move(logits.values));
  }
  return trace;
}

inline LoadOptions Options(int rank, int size, bool resident_weights = true,
                    const std::string& device = "cpu") {
  LoadOptions options;
  options.shard = {rank, size};
  options.resident_weights = resident_weights;
  options.device = device;
  return options;
}

// Runs a TP group of `size` threads; returns each rank's trace. With `follow`, ranks > 0 are
// followers that take their tokens from it and read no results back (Generate's `follow`).
inline std::vector<Trace> RunGroup(int size, bool resident_weights = true, bool argmax_odd = false,
                            const std::string& device = "cpu", const Trace* follow = nullptr,
                            const std::string& model_dir = TinyModelDir()) {
  ThreadCommunicatorGroup group(size);
  std::vector<Trace> traces(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto model =
          LlamaModel::Load(model_dir, Options(r, size, resident_weights, device),
                           group.rank(r));
      if (!model.ok()) {
        // The others block in the first collective until the group times out; fine for a test
        // that fails anyway, and it cannot hang.
        traces[r].status = model.status();
        return;
      }
      traces[r] = Generate(**model, argmax_odd, r > 0 ? follow : nullptr);
    });
  }
  for (std::thread& t : threads) t.join();
  return traces;
}

}  // namespace caduceus::model::test_util
