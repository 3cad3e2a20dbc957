// Shared pieces of caduceus-bench-kernels (see bench_main.cc): the model shape and options, device
// allocation and timing helpers, the report context, and the attention batches several
// measurements build. Plain C++ (no absl), so the bench also builds with CUDA alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/bench/bench_device.h"
#include "kernels/bench/json.h"

namespace caduceus::kernels::bench {

// ---------------------------------------------------------------------------------------------
// Model shape and options

struct Shape {
  std::string name;
  int32_t hidden = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t inter = 0;
  int32_t vocab = 0;
  int32_t layers = 0;
  int32_t block_size = 16;
  float rope_theta = 500000.0f;
  float eps = 1e-5f;
  KvDtype kv_dtype = KvDtype::kBf16;  // the KV cache's element type (--kv-dtype)

  int32_t q_dim() const { return q_heads * head_dim; }
  int32_t kv_dim() const { return kv_heads * head_dim; }
  // Parameters of one layer's seven matrices.
  int64_t LayerMatrixParams() const {
    const int64_t h = hidden;
    return h * q_dim() + 2 * h * kv_dim() + int64_t{q_dim()} * h + 3 * h * inter;
  }
  // Bytes of weights one decode step reads: every layer's matrices and norms, the final norm and
  // lm_head (the embedding table is only gathered from, a few rows).
  int64_t WeightBytesPerStep() const {
    return 2 * (int64_t{layers} * LayerMatrixParams() + int64_t{vocab} * hidden +
                int64_t{2 * layers + 1} * hidden);
  }
  // Bytes of K and V one layer stores per cached token (kv_dtype elements).
  int64_t KvBytesPerTokenLayer() const { return 2 * int64_t{kv_dim()} * KvDtypeBytes(kv_dtype); }
};

struct Options {
  std::string device;
  bool dry_run = false;
  std::string shape;
  std::vector<int> decode_batches;
  int decode_context = 0;
  std::vector<int> attention_batches;
  std::vector<int> attention_contexts;
  std::vector<int> elementwise_tokens;
  std::vector<int> linear_batches;
  int prefill_tokens = 0;
  double target_ms = 0;
  int repeats = 3;
  bool graphs = true;
  bool micro = true;
  int64_t copy_bytes = 0;
  int gemm_size = 0;
  // KV cache element type: bf16 by default (what production GPUs use), f32 on request.
  KvDtype kv_dtype = KvDtype::kBf16;
  std::string json_out;
};

// "bf16" / "f32": the --kv-dtype spelling, also recorded in the JSON (shape.kv_cache_dtype).
const char* KvDtypeName(KvDtype d);

Shape Llama3_8B();
Shape Tiny();
// A whole decimal integer (false for anything else).
bool ParseInt(const std::string& s, int64_t* out);
// Parses argv into `o`; returns an exit status to stop with, or -1 to go on.
int ParseArgs(int argc, char** argv, Options* o);
void ApplyDefaults(bool cuda, Options* o);

[[noreturn]] void Die(const std::string& what);


// Device allocations freed together; an allocation that does not fit is fatal.
class Arena {
 public:
  explicit Arena(Device& d) : d_(d) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    d_.Synchronize();
    for (void* p : ptrs_) d_.Free(p);
  }

  template <typename T>
  T* Get(size_t n) {
    void* p = d_.Alloc(std::max<size_t>(n, 1) * sizeof(T));
    if (p == nullptr) {
      Die("out of device memory allocating " + std::to_string(n * sizeof(T)) + " bytes (" +
          std::to_string(bytes_) + " already held by this phase)");
    }
    ptrs_.push_back(p);
    bytes_ += n * sizeof(T);
    return static_cast<T*>(p);
  }
  float* Floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
    float* p = Get<float>(n);
    d_.FillF32(p, n, seed, lo, hi);
    return p;
  }
  // n FP8 E4M3 weight bytes: random finite codes of magnitude below 1 (0x00-0x37, either sign).
  uint8_t* Fp8s(size_t n, uint64_t seed) {
    uint8_t* p = Get<uint8_t>(n);
    std::vector<uint8_t> host(n);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      host[i] = static_cast<uint8_t>((x % 0x38) | ((x >> 8) & 0x80));
    }
    d_.Upload(p, host.data(), n);
    return p;
  }
  bf16* Bf16s(size_t n, uint64_t seed, float lo, float hi) {
    bf16* p = Get<bf16>(n);
    d_.FillBf16(p, n, seed, lo, hi);
    return p;
  }
  // n KV-cache elements of `dtype` (float or bf16): uninitialized, or uniform in [lo, hi) (the
  // same values either way, bf16 rounded to nearest even).
  void* KvElements(KvDtype dtype, size_t n) {
    return dtype == KvDtype::kBf16 ? static_cast<void*>(Get<bf16>(n)) : Get<float>(n);
  }
  void* KvRandom(KvDtype dtype, size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
    return dtype == KvDtype::kBf16 ? static_cast<void*>(Bf16s(n, seed, lo, hi))
                                   : Floats(n, seed, lo, hi);
  }
  int32_t* Ints(const std::vector<int32_t>& host) {
    int32_t* p = Get<int32_t>(host.size());
    d_.Upload(p, host.data(), host.size() * sizeof(int32_t));
    return p;
  }
  int64_t bytes() const { return static_cast<int64_t>(bytes_); }

 private:
  Device& d_;
  std::vector<void*> ptrs_;
  size_t bytes_ = 0;
};

struct Timing {
  double best_s = 0;    // best loop, per call
  double median_s = 0;  // median loop, per call
  int64_t iters = 0;    // calls per loop
};

// Warm-up call, one calibration call, then `repeats` loops of back-to-back calls lasting about
// target_ms each (timed by stream marks, so on a GPU it is the throughput of queued calls,
// launch overhead included when the host cannot keep ahead).
Timing TimeWork(Device& d, const Work& work, const Options& o, int64_t max_iters = 100000);
std::string Fmt(const char* format, double v);
std::string HumanBytes(double b);

struct Context {
  Context(Device& device, const Options& options, const Shape& shape)
      : d(device), o(options), s(shape) {}
  Device& d;
  const Options& o;
  const Shape& s;
  double copy_bw = 0;    // bytes/s, read + written
  double gemm_peak = 0;  // FLOP/s
  Json report = Json::Object();
  std::vector<std::string> table;  // human-readable lines, printed at the end

  void Save() const {
    if (o.json_out.empty()) return;
    std::ofstream f(o.json_out, std::ios::trunc);
    f << report.Dump() << "\n";
  }
};

// Independent copies of a case's buffers so consecutive calls do not hit a cache warmed by the
// previous one: enough to cover 4x the last-level cache, at most 16.
int RotatingCopies(const Context& c, int64_t bytes_per_call);
void AddKernelResult(Context& c, const std::string& kernel, const std::string& shape,
                     int64_t tokens, int64_t bytes, int64_t flops, int copies, const Timing& t);
std::vector<float> InvFreq(const Shape& s);
// A paged cache of `num_blocks` blocks per layer (s.kv_dtype elements), filled with random K/V.
PagedKvLayer MakeCache(Arena& arena, const Shape& s, int32_t num_blocks, uint64_t seed);

// Host side of an attention batch: `seqs` sequences with `context` cached positions each, their
// blocks a random permutation of the pool (as a long-running allocator leaves them); query rows
// are either each sequence's last position (decode) or all positions (prefill, one sequence).
struct HostBatch {
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;
  int32_t blocks_per_seq = 0;
  std::vector<int32_t> query_start, positions, block_tables, slots;
};

HostBatch MakeHostBatch(const Shape& s, int32_t seqs, int32_t context, bool prefill,
                        std::mt19937& rng);

struct DeviceBatch {
  AttentionBatch attention;
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
};

DeviceBatch Upload(Arena& arena, const HostBatch& b);
int64_t AttentionFlops(const Shape& s, const HostBatch& b);

// (c) kernel_measurements.cc
void MeasureElementwise(Context& c);
void MeasureAttention(Context& c);
void MeasureLinear(Context& c);
// (d), (e) step_measurements.cc: prefill, then decode at every batch size, on one set of weights.
void MeasureModelSteps(Context& c);

}  // namespace caduceus::kernels::bench
