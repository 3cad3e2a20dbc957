// caduceus-bench-engine: speed of the forward pass on this machine, against this machine's limits.
//
// Measures, in one run: memory-read bandwidth (a streaming read of a buffer larger than the
// caches; best of 5 passes, and one pass after every batch-1 decode step), the GFLOP/s of a plain fp32 matrix multiply (OpenBLAS sgemm, the compute roof),
// prefill tokens/s on a --prefill-tokens prompt, and decode tokens/s at batch 1, 16 and 32
// (forward passes only; sampling is benchmarked separately; with --argmax-only the decode steps
// end in the lm_head's argmax instead of logits rows). Last stdout line: one JSON object.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <vector>

#include <cblas.h>

#include "absl/flags/flag.h"
#include "common/cli_flags.h"
#include "nlohmann/json.hpp"
#include "tools/bench/bench_stats.h"
#include "worker/model/llama_model.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(int32_t, prefill_tokens, 512, "prompt length for the prefill measurement");
ABSL_FLAG(int32_t, decode_steps, 8, "decode steps timed per batch size");
ABSL_FLAG(std::vector<std::string>, batch_sizes, std::vector<std::string>({"1", "16", "32"}),
          "decode batch sizes to measure");
ABSL_FLAG(int32_t, context_tokens, 64, "tokens already in each sequence's cache when decoding");
ABSL_FLAG(bool, argmax_only, false,
          "decode steps ask only for each sequence's greedy token (the lm_head's argmax, as the "
          "worker does for greedy requests without logprobs) instead of its logits row");
ABSL_FLAG(bool, json, true, "print the JSON summary as the last line");
ABSL_FLAG(std::string, kv_cache_dtype, "float32", "KV-cache element type: float32 or bfloat16");
ABSL_FLAG(std::string, quantization, "none",
          "none, or fp8: quantize bf16 projection weights to FP8 at load time (as the worker)");

namespace caduceus {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Memory-read bandwidth on demand: a child process holds a 1 GiB buffer and, for each request
// on a pipe, makes one parallel streaming read of it and answers bytes/s. A child, so that the
// buffer never counts in this process's peak RSS; on demand, so that the batch-1 decode steps
// can each be compared with a bandwidth pass taken right next to them (this shared VM's
// bandwidth drifts by 30% within minutes). Started before this process uses OpenMP, which a
// forked child could not use otherwise.
class BandwidthProbe {
 public:
  BandwidthProbe() {
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(to_child[1]);
      close(from_child[0]);
      Serve(to_child[0], from_child[1]);
      _exit(0);
    }
    close(to_child[0]);
    close(from_child[1]);
    request_ = to_child[1];
    answer_ = from_child[0];
    double ready = 0;
    if (pid_ < 0 || read(answer_, &ready, sizeof(ready)) != sizeof(ready)) pid_ = -1;
  }
  ~BandwidthProbe() {
    if (request_ >= 0) close(request_);
    if (answer_ >= 0) close(answer_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  // One streaming pass; 0 if the probe is not running.
  double Measure() {
    if (pid_ <= 0) return 0;
    const char go = 1;
    double v = 0;
    if (write(request_, &go, 1) != 1 || read(answer_, &v, sizeof(v)) != sizeof(v)) return 0;
    return v;
  }

 private:
  static void Serve(int requests, int answers) {
    const size_t words = (size_t{1} << 30) / sizeof(uint64_t);
    std::unique_ptr<uint64_t[]> buf(new uint64_t[words]);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < words; ++i) buf[i] = i;
    double ready = 1;
    (void)!write(answers, &ready, sizeof(ready));
    uint64_t sink = 0;
    char go;
    while (read(requests, &go, 1) == 1) {
      const auto t0 = Clock::now();
      uint64_t total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
      for (size_t i = 0; i < words; i += 8) {
        total += buf[i] ^ buf[i + 1] ^ buf[i + 2] ^ buf[i + 3] ^ buf[i + 4] ^ buf[i + 5] ^
                 buf[i + 6] ^ buf[i + 7];
      }
      sink += total;
      const double v = static_cast<double>(words * sizeof(uint64_t)) / Seconds(t0);
      (void)!write(answers, &v, sizeof(v));
    }
    if (sink == 42) std::fputc(' ', stderr);  // keep the reads
  }

  pid_t pid_ = -1;
  int request_ = -1, answer_ = -1;
};

// Median of the samples (0 when there are none).
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return tools::Percentile(v, 0.5);
}

double MeasureSgemmGflops() {
  const int n = 2048;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / Seconds(t0) / 1e9);
  }
  return best;
}

// Runs `measure` in a forked child so that its buffers never count in this process's peak RSS.
template <typename F>
double InChildProcess(F measure) {
  int fds[2];
  if (pipe(fds) != 0) return measure();
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const double v = measure();
    (void)!write(fds[1], &v, sizeof(v));
    _exit(0);
  }
  close(fds[1]);
  double v = 0;
  if (read(fds[0], &v, sizeof(v)) != sizeof(v)) v = 0;
  close(fds[0]);
  waitpid(pid, nullptr, 0);
  return v;
}

int64_t PeakRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} * 1024;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "caduceus-bench-engine: %s\n", std::string(s.message()).c_str());
  return 1;
}

int Main() {
  // Machine limits first, in child processes, before the model is mapped.
  BandwidthProbe probe;
  double bandwidth = 0;
  for (int pass = 0; pass < 5; ++pass) bandwidth = std::max(bandwidth, probe.Measure());
  const double sgemm = InChildProcess(MeasureSgemmGflops);
  model::LoadOptions load;
  auto kv_dtype = model::KvCache::ParseDtype(absl::GetFlag(FLAGS_kv_cache_dtype), load.device);
  if (!kv_dtype.ok()) return Fail(kv_dtype.status());
  load.kv_dtype = *kv_dtype;
  auto quantization = model::ParseQuantizationFlag(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) return Fail(quantization.status());
  load.quantize_fp8 = *quantization == model::Quantization::kFp8;
  auto loaded = model::LlamaModel::Load(absl::GetFlag(FLAGS_model), load);
  if (!loaded.ok()) return Fail(loaded.status());
  model::LlamaModel& m = **loaded;
  const model::ModelConfig& c = m.config();
  const int32_t bs = model::KvCache::kDefaultBlockSize;
  nlohmann::json out;
  out["model"] = absl::GetFlag(FLAGS_model);
  out["kernels"] = m.kernels().name;
  out["kv_cache_dtype"] = model::KvCache::DtypeName(m.kv_dtype());
  out["weight_bytes_per_token"] = m.WeightBytesPerToken();

  out["memory_read_bytes_per_s"] = bandwidth;
  out["matmul_peak_gflops"] = sgemm;
  std::fprintf(stderr, "bandwidth %.2f GB/s, sgemm %.1f GFLOP/s\n", bandwidth / 1e9, sgemm);

  std::vector<int> batches;
  for (const auto& b : absl::GetFlag(FLAGS_batch_sizes)) batches.push_back(std::stoi(b));
  const int32_t prefill = absl::GetFlag(FLAGS_prefill_tokens);
  const int32_t ctx = absl::GetFlag(FLAGS_context_tokens);
  const int32_t steps = absl::GetFlag(FLAGS_decode_steps);
  const bool argmax_only = absl::GetFlag(FLAGS_argmax_only);
  out["decode_argmax_only"] = argmax_only;
  const int32_t max_batch = *std::max_element(batches.begin(), batches.end());
  const int32_t blocks_per_seq = (std::max(prefill, ctx + steps) + bs - 1) / bs;
  auto cache = m.CreateKvCache(blocks_per_seq * std::max(max_batch, 1));
  if (!cache.ok()) return Fail(cache.status());
  auto table = [&](int seq) {
    std::vector<int32_t> t(blocks_per_seq);
    for (int i = 0; i < blocks_per_seq; ++i) t[i] = seq * blocks_per_seq + i;
    return t;
  };
  auto token = [&](int seq, int pos) { return (seq * 7919 + pos * 104729 + 1000) % 128000; };
  model::StepLogits logits;

  {  // Prefill: one step of `prefill` tokens.
    std::vector<int32_t> ids(prefill);
    for (int i = 0; i < prefill; ++i) ids[i] = token(0, i);
    const auto blocks = table(0);
    model::StepBatch batch{{{ids, 0, blocks}}};
    const auto t0 = Clock::now();
    if (auto s = m.Forward(batch, **cache, &logits); !s.ok()) return Fail(s);
    const double t = Seconds(t0);
    const double n = prefill;
    const double linear_flops = 2.0 * n * (m.WeightBytesPerToken() / 2.0 - double(c.vocab_size) * c.hidden_size);
    const double attention_flops = 4.0 * c.num_layers * c.num_heads * c.head_dim * n * (n + 1) / 2;
    const double lm_head_flops = 2.0 * c.vocab_size * c.hidden_size;
    out["prefill_tokens"] = prefill;
    out["prefill_seconds"] = t;
    out["prefill_tokens_per_s"] = n / t;
    out["prefill_gflops"] = (linear_flops + attention_flops + lm_head_flops) / t / 1e9;
    out["prefill_fraction_of_matmul_peak"] = out["prefill_gflops"].get<double>() / sgemm;
    std::fprintf(stderr, "prefill %d tokens: %.2f s (%.1f tok/s)\n", prefill, t, n / t);
  }

  for (int b : batches) {
    // Fill `ctx` tokens of context per sequence, then time `steps` decode steps of the batch.
    std::vector<std::vector<int32_t>> ids(b), blocks(b);
    model::StepBatch fill;
    for (int s = 0; s < b; ++s) {
      blocks[s] = table(s);
      for (int i = 0; i < ctx + steps; ++i) ids[s].push_back(token(s, i));
      fill.sequences.push_back({std::span<const int32_t>(ids[s]).first(ctx), 0, blocks[s]});
    }
    if (auto st = m.Forward(fill, **cache, &logits); !st.ok()) return Fail(st);
    auto run_step = [&](int step) -> absl::StatusOr<double> {
      model::StepBatch decode;
      for (int s = 0; s < b; ++s) {
        decode.sequences.push_back({std::span<const int32_t>(ids[s]).subspan(ctx + step, 1),
                                    ctx + step, blocks[s], false, argmax_only});
      }
      const auto t0 = Clock::now();
      if (auto st = m.Forward(decode, **cache, &logits); !st.ok()) return st;
      return Seconds(t0);
    };
    double t = 0;  // back-to-back steps: the rate
    for (int step = 0; step < steps; ++step) {
      auto seconds = run_step(step);
      if (!seconds.ok()) return Fail(seconds.status());
      t += *seconds;
    }
    // Batch 1 again (same positions), each step followed by a bandwidth pass: the fraction of
    // the bound. Kept apart from the rate because the pass evicts the caches (a small model's
    // step then runs cold).
    std::vector<double> fractions;
    for (int step = 0; b == 1 && step < steps; ++step) {
      auto seconds = run_step(step);
      if (!seconds.ok()) return Fail(seconds.status());
      // libgomp's threads spin for milliseconds after a parallel region: let this process's
      // stop before the probe reads, and the probe's stop before the next step.
      usleep(20000);
      const double bw = probe.Measure();
      usleep(20000);
      if (bw > 0) fractions.push_back(double(m.WeightBytesPerToken()) / bw / *seconds);
    }
    const double rate = double(b) * steps / t;
    out["decode_tokens_per_s_batch" + std::to_string(b)] = rate;
    out["decode_step_seconds_batch" + std::to_string(b)] = t / steps;
    std::fprintf(stderr, "decode batch %d: %.3f s/step, %.2f tok/s\n", b, t / steps, rate);
    if (b == 1) {
      const double bound = bandwidth / m.WeightBytesPerToken();
      out["decode_batch1_bandwidth_bound_tokens_per_s"] = bound;
      // Median over steps of (bandwidth-bound step time / step time), each step against the
      // bandwidth pass right after it: robust to the VM's drift during the run.
      const double fraction = Median(fractions);
      out["decode_batch1_fraction_of_bandwidth_bound"] = fraction;
      // The same rate against the best pass at the start of the run (a pessimistic ratio).
      out["decode_batch1_fraction_of_best_bandwidth"] = rate / bound;
      std::fprintf(stderr, "decode batch 1: %.0f%% of the bandwidth bound (median of %zu steps, "
                   "each against an adjacent bandwidth pass); %.0f%% against the best pass\n",
                   100 * fraction, fractions.size(), 100 * rate / bound);
    }
  }
  out["peak_rss_bytes"] = PeakRssBytes();
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace caduceus

int main(int argc, char** argv) {
  caduceus::ParseFlags(argc, argv, "caduceus-bench-engine --model DIR [--json]");
  return caduceus::Main();
}
