// caduceus-bench-kernels: what the kernels of one device achieve against what the device can do.
//
//   (a) memory: device copy bandwidth (memcpy D2D, counted as bytes read + written) and a
//       read-only streaming pass;
//   (b) the bf16 GEMM peak (cuBLAS on CUDA, kernels::cpu::Linear on the CPU), big square;
//   (c) every kernel alone at the shapes a step uses: achieved bytes/s against (a);
//   (d) a synthetic decode step of the whole model (every layer's calls in the order
//       worker/model/llama_model.cc makes them, random bf16 weights generated on the device) for
//       several batch sizes -> tokens/s; batch 1 against the HBM bound (weight bytes / copy
//       bandwidth, goal >= 80%); on CUDA also the same step replayed as one CUDA graph;
//   (e) a prefill step -> tokens/s and useful FLOP/s against (b) (goal >= 60%).
//
// Output: a human table, then one JSON object as the last line of stdout (docs/cuda.md lists the
// fields; tools/gpu-bench.sh checks them). `--dry-run` runs the same structure on the CPU kernels
// with a tiny model in seconds: that is what CI runs, so the GPU path cannot rot unnoticed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/bench/bench_device.h"
#include "kernels/bench/json.h"

namespace caduceus::kernels::bench {
namespace {

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
  // Bytes of K and V one layer stores per cached token (fp32 cache).
  int64_t KvBytesPerTokenLayer() const { return 2 * int64_t{kv_dim()} * sizeof(float); }
};

Shape Llama3_8B() {
  Shape s;
  s.name = "llama3-8b";
  s.hidden = 4096;
  s.q_heads = 32;
  s.kv_heads = 8;
  s.head_dim = 128;
  s.inter = 14336;
  s.vocab = 128256;
  s.layers = 32;
  return s;
}

Shape Tiny() {
  Shape s;
  s.name = "tiny";
  s.hidden = 256;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.inter = 512;
  s.vocab = 2048;
  s.layers = 2;
  return s;
}

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
  std::string json_out;
};

void Usage() {
  std::printf(
      "usage: caduceus-bench-kernels [--device cpu|cuda[:K]] [--dry-run] [options]\n"
      "  --dry-run                 CPU kernels, tiny model, seconds (what CI runs)\n"
      "  --device D                cpu or cuda[:K] (default: cuda when built with CUDA)\n"
      "  --shape llama3-8b|tiny    model shape (default: llama3-8b on cuda, tiny on cpu)\n"
      "  --decode-batches LIST     synthetic decode batch sizes (default 1,8,64,256)\n"
      "  --decode-context N        context length of every decoding sequence (1024 / 64)\n"
      "  --prefill-tokens N        prefill length, one sequence (2048 / 128)\n"
      "  --attention-batches LIST  decode attention batch sizes (1,64 / 1,8)\n"
      "  --attention-contexts LIST decode attention contexts (1024,4096 / 64,256)\n"
      "  --elementwise-tokens LIST token counts for norm/rope/silu/kv-write (1,256,2048)\n"
      "  --linear-batches LIST     Linear rows at decode shapes (1,8,64,256)\n"
      "  --target-ms MS            time per measurement loop (100 on cuda, 20 on cpu)\n"
      "  --repeats N               loops per measurement, best reported (3)\n"
      "  --copy-bytes N            buffer size of the bandwidth references (1 GiB / 32 MiB)\n"
      "  --gemm-size N             square GEMM for the peak (8192 / 512)\n"
      "  --no-cuda-graphs          skip the CUDA-graph replay of decode steps\n"
      "  --no-micro                skip (c), the per-kernel measurements\n"
      "  --json-out FILE           also write the JSON there, updated after every phase\n");
}

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0' || v < 0) return false;
  *out = v;
  return true;
}

bool ParseList(const std::string& s, std::vector<int>* out) {
  out->clear();
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos
                                                                        : comma - start);
    int64_t v = 0;
    if (!ParseInt(item, &v) || v <= 0 || v > (1 << 24)) return false;
    out->push_back(static_cast<int>(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return !out->empty();
}

// Returns 0 to run, 1 for --help, 2 for a usage error.
int ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string v;
    int64_t n = 0;
    bool ok = true;
    if (a == "--help" || a == "-h") {
      Usage();
      return 1;
    } else if (a == "--dry-run") {
      o->dry_run = true;
    } else if (a == "--no-cuda-graphs") {
      o->graphs = false;
    } else if (a == "--no-micro") {
      o->micro = false;
    } else if (a == "--device") {
      ok = value(&o->device);
    } else if (a == "--shape") {
      ok = value(&o->shape) && (o->shape == "llama3-8b" || o->shape == "tiny");
    } else if (a == "--decode-batches") {
      ok = value(&v) && ParseList(v, &o->decode_batches);
    } else if (a == "--attention-batches") {
      ok = value(&v) && ParseList(v, &o->attention_batches);
    } else if (a == "--attention-contexts") {
      ok = value(&v) && ParseList(v, &o->attention_contexts);
    } else if (a == "--elementwise-tokens") {
      ok = value(&v) && ParseList(v, &o->elementwise_tokens);
    } else if (a == "--linear-batches") {
      ok = value(&v) && ParseList(v, &o->linear_batches);
    } else if (a == "--decode-context") {
      ok = value(&v) && ParseInt(v, &n) && n > 0;
      o->decode_context = static_cast<int>(n);
    } else if (a == "--prefill-tokens") {
      ok = value(&v) && ParseInt(v, &n) && n > 0;
      o->prefill_tokens = static_cast<int>(n);
    } else if (a == "--target-ms") {
      ok = value(&v) && ParseInt(v, &n) && n > 0;
      o->target_ms = static_cast<double>(n);
    } else if (a == "--repeats") {
      ok = value(&v) && ParseInt(v, &n) && n > 0 && n < 100;
      o->repeats = static_cast<int>(n);
    } else if (a == "--copy-bytes") {
      ok = value(&v) && ParseInt(v, &n) && n >= 4096;
      o->copy_bytes = n;
    } else if (a == "--gemm-size") {
      ok = value(&v) && ParseInt(v, &n) && n >= 16 && n <= 32768;
      o->gemm_size = static_cast<int>(n);
    } else if (a == "--json-out") {
      ok = value(&o->json_out);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "caduceus-bench-kernels: bad argument near '%s' (see --help)\n",
                   a.c_str());
      return 2;
    }
  }
  return 0;
}

// Fills every unset option with the device's defaults.
void ApplyDefaults(bool cuda, Options* o) {
  const bool big = o->shape == "llama3-8b";
  auto set_list = [](std::vector<int>* v, std::vector<int> big_v, std::vector<int> tiny_v,
                     bool b) {
    if (v->empty()) *v = b ? std::move(big_v) : std::move(tiny_v);
  };
  if (o->decode_batches.empty()) o->decode_batches = {1, 8, 64, 256};
  if (o->decode_context == 0) o->decode_context = big ? 1024 : 64;
  if (o->prefill_tokens == 0) o->prefill_tokens = big ? 2048 : 128;
  set_list(&o->attention_batches, {1, 64}, {1, 8}, big);
  set_list(&o->attention_contexts, {1024, 4096}, {64, 256}, big);
  set_list(&o->elementwise_tokens, {1, 256, 2048}, {1, 16, 128}, big);
  if (o->linear_batches.empty()) o->linear_batches = {1, 8, 64, 256};
  if (o->target_ms == 0) o->target_ms = cuda ? 100 : 20;
  if (o->copy_bytes == 0) o->copy_bytes = cuda ? (int64_t{1} << 30) : (int64_t{32} << 20);
  if (o->gemm_size == 0) o->gemm_size = cuda ? 8192 : 512;
}

// ---------------------------------------------------------------------------------------------
// Memory and timing helpers

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "caduceus-bench-kernels: %s\n", what.c_str());
  std::fflush(stdout);
  std::exit(1);
}

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
  bf16* Bf16s(size_t n, uint64_t seed, float lo, float hi) {
    bf16* p = Get<bf16>(n);
    d_.FillBf16(p, n, seed, lo, hi);
    return p;
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
Timing TimeWork(Device& d, const Work& work, const Options& o, int64_t max_iters = 100000) {
  int64_t call = 0;
  d.ResetMarks();
  work(call++);
  d.Synchronize();
  const int a = d.Mark();
  work(call++);
  const int b = d.Mark();
  d.Synchronize();
  const double one = std::max(d.Seconds(a, b), 1e-7);
  const int64_t iters =
      std::clamp<int64_t>(static_cast<int64_t>(o.target_ms * 1e-3 / one), 1, max_iters);
  std::vector<double> per_call;
  for (int r = 0; r < o.repeats; ++r) {
    d.ResetMarks();
    const int start = d.Mark();
    for (int64_t i = 0; i < iters; ++i) work(call++);
    const int end = d.Mark();
    d.Synchronize();
    per_call.push_back(d.Seconds(start, end) / static_cast<double>(iters));
  }
  std::sort(per_call.begin(), per_call.end());
  return Timing{per_call.front(), per_call[per_call.size() / 2], iters};
}

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  return Fmt(u == 0 ? "%.0f" : "%.1f", b) + " " + units[u];
}

// ---------------------------------------------------------------------------------------------
// (c) Per-kernel measurements

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
int RotatingCopies(const Context& c, int64_t bytes_per_call) {
  const int64_t target = 4 * c.d.info().cache_bytes;
  const int64_t copies = (target + bytes_per_call - 1) / std::max<int64_t>(bytes_per_call, 1);
  return static_cast<int>(std::clamp<int64_t>(copies, 1, 16));
}

void AddKernelResult(Context& c, const std::string& kernel, const std::string& shape,
                     int64_t tokens, int64_t bytes, int64_t flops, int copies, const Timing& t) {
  const double bw = static_cast<double>(bytes) / t.best_s;
  const bool resident = bytes * copies < 2 * c.d.info().cache_bytes;
  Json r = Json::Object();
  r.Set("kernel", kernel);
  r.Set("shape", shape);
  r.Set("tokens", tokens);
  r.Set("seconds", t.best_s);
  r.Set("median_seconds", t.median_s);
  r.Set("iters", t.iters);
  r.Set("bytes", bytes);
  r.Set("bytes_per_s", bw);
  r.Set("fraction_of_copy_bw", bw / c.copy_bw);
  if (flops > 0) r.Set("flops_per_s", static_cast<double>(flops) / t.best_s);
  r.Set("cache_resident", resident);
  c.report.FindMutable("kernels")->Push(std::move(r));
  char line[256];
  std::snprintf(line, sizeof(line), "  %-17s %-34s %10.2f %9.1f %6.0f%% %9s%s", kernel.c_str(),
                shape.c_str(), t.best_s * 1e6, bw / 1e9, 100.0 * bw / c.copy_bw,
                flops > 0 ? Fmt("%.3g", static_cast<double>(flops) / t.best_s / 1e12).c_str()
                          : "-",
                resident ? "  (cache-resident)" : "");
  c.table.push_back(line);
}

std::vector<float> InvFreq(const Shape& s) {
  std::vector<float> f(s.head_dim / 2);
  for (int32_t i = 0; i < s.head_dim / 2; ++i) {
    f[i] = static_cast<float>(
        std::pow(static_cast<double>(s.rope_theta), -2.0 * i / static_cast<double>(s.head_dim)));
  }
  return f;
}

void MeasureElementwise(Context& c) {
  Device& d = c.d;
  const Shape& s = c.s;
  const KernelOps& k = d.ops();
  const Stream st = d.stream();
  const int64_t h = s.hidden, qd = s.q_dim(), kvd = s.kv_dim(), inter = s.inter;
  std::mt19937 rng(7);
  for (const int n : c.o.elementwise_tokens) {
    const std::string tok = "n=" + std::to_string(n);
    {  // RmsNorm: read x, write out, read the weight once
      const int64_t bytes = n * h * 8 + h * 2;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<float*> x, out;
      const bf16* w = arena.Bf16s(h, 1, 0.9f, 1.1f);
      for (int i = 0; i < copies; ++i) {
        x.push_back(arena.Floats(n * h, 100 + i));
        out.push_back(arena.Get<float>(n * h));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.rms_norm(x[i % copies], w, n, static_cast<int32_t>(h), s.eps, out[i % copies], st);
      }, c.o);
      AddKernelResult(c, "rms_norm", tok + " hidden=" + std::to_string(h), n, bytes, 0, copies, t);
    }
    {  // AddRmsNorm: read residual and x, write residual and out
      const int64_t bytes = n * h * 16 + h * 2;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<float*> res, x, out;
      const bf16* w = arena.Bf16s(h, 2, 0.9f, 1.1f);
      for (int i = 0; i < copies; ++i) {
        res.push_back(arena.Floats(n * h, 200 + i));
        x.push_back(arena.Floats(n * h, 300 + i, -1e-3f, 1e-3f));
        out.push_back(arena.Get<float>(n * h));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.add_rms_norm(res[i % copies], x[i % copies], w, n, static_cast<int32_t>(h), s.eps,
                       out[i % copies], st);
      }, c.o);
      AddKernelResult(c, "add_rms_norm", tok + " hidden=" + std::to_string(h), n, bytes, 0, copies,
                      t);
    }
    {  // Rope: q and k rotated in place (read + write), positions read
      const int64_t bytes = n * (qd + kvd) * 8 + n * 4;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<float*> q, kk;
      std::vector<const int32_t*> pos;
      const float* inv_freq = nullptr;
      {
        const std::vector<float> f = InvFreq(s);
        float* p = arena.Get<float>(f.size());
        d.Upload(p, f.data(), f.size() * sizeof(float));
        inv_freq = p;
      }
      std::uniform_int_distribution<int32_t> position(0, 8191);
      for (int i = 0; i < copies; ++i) {
        q.push_back(arena.Floats(n * qd, 400 + i));
        kk.push_back(arena.Floats(n * kvd, 500 + i));
        std::vector<int32_t> host(n);
        for (auto& p : host) p = position(rng);
        pos.push_back(arena.Ints(host));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.rope(q[i % copies], kk[i % copies], pos[i % copies], n, s.q_heads, s.kv_heads,
               s.head_dim, inv_freq, st);
      }, c.o);
      AddKernelResult(c, "rope",
                      tok + " heads=" + std::to_string(s.q_heads) + "+" +
                          std::to_string(s.kv_heads) + "x" + std::to_string(s.head_dim),
                      n, bytes, 0, copies, t);
    }
    {  // SiluMul: read gate and up, write out
      const int64_t bytes = n * inter * 12;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<float*> g, u, out;
      for (int i = 0; i < copies; ++i) {
        g.push_back(arena.Floats(n * inter, 600 + i));
        u.push_back(arena.Floats(n * inter, 700 + i));
        out.push_back(arena.Get<float>(n * inter));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.silu_mul(g[i % copies], u[i % copies], n, s.inter, out[i % copies], st);
      }, c.o);
      AddKernelResult(c, "silu_mul", tok + " d=" + std::to_string(inter), n, bytes, 0, copies, t);
    }
    {  // KvCacheWrite: read k and v rows, write them into scattered slots
      const int64_t bytes = n * kvd * 16 + n * 4;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      const int32_t blocks = std::max<int32_t>(2 * ((n + s.block_size - 1) / s.block_size), 4);
      std::vector<float*> kk, vv;
      std::vector<const int32_t*> slots;
      std::vector<PagedKvLayer> caches;
      for (int i = 0; i < copies; ++i) {
        kk.push_back(arena.Floats(n * kvd, 800 + i));
        vv.push_back(arena.Floats(n * kvd, 900 + i));
        std::vector<int32_t> all(static_cast<size_t>(blocks) * s.block_size);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        all.resize(n);
        slots.push_back(arena.Ints(all));
        PagedKvLayer cache;
        cache.num_blocks = blocks;
        cache.block_size = s.block_size;
        cache.kv_heads = s.kv_heads;
        cache.head_dim = s.head_dim;
        cache.k = arena.Get<float>(static_cast<size_t>(blocks) * s.block_size * kvd);
        cache.v = arena.Get<float>(static_cast<size_t>(blocks) * s.block_size * kvd);
        caches.push_back(cache);
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.kv_cache_write(kk[i % copies], vv[i % copies], slots[i % copies], n, caches[i % copies],
                         st);
      }, c.o);
      AddKernelResult(c, "kv_cache_write", tok + " kv_dim=" + std::to_string(kvd), n, bytes, 0,
                      copies, t);
    }
  }
}

// A paged cache of `num_blocks` blocks per layer, filled with random K/V.
PagedKvLayer MakeCache(Arena& arena, const Shape& s, int32_t num_blocks, uint64_t seed) {
  PagedKvLayer cache;
  cache.num_blocks = num_blocks;
  cache.block_size = s.block_size;
  cache.kv_heads = s.kv_heads;
  cache.head_dim = s.head_dim;
  const size_t n = static_cast<size_t>(num_blocks) * s.block_size * s.kv_dim();
  cache.k = arena.Floats(n, seed);
  cache.v = arena.Floats(n, seed + 1);
  return cache;
}

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
                        std::mt19937& rng) {
  HostBatch b;
  b.num_seqs = seqs;
  b.blocks_per_seq = (context + s.block_size - 1) / s.block_size;
  std::vector<int32_t> pool(static_cast<size_t>(seqs) * b.blocks_per_seq);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  b.block_tables = pool;
  b.query_start.push_back(0);
  for (int32_t q = 0; q < seqs; ++q) {
    const int32_t* table = b.block_tables.data() + static_cast<size_t>(q) * b.blocks_per_seq;
    for (int32_t p = prefill ? 0 : context - 1; p < context; ++p) {
      b.positions.push_back(p);
      b.slots.push_back(table[p / s.block_size] * s.block_size + p % s.block_size);
    }
    b.query_start.push_back(static_cast<int32_t>(b.positions.size()));
  }
  b.num_tokens = static_cast<int32_t>(b.positions.size());
  return b;
}

struct DeviceBatch {
  AttentionBatch attention;
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
};

DeviceBatch Upload(Arena& arena, const HostBatch& b) {
  DeviceBatch db;
  db.attention.num_seqs = b.num_seqs;
  db.attention.query_start = arena.Ints(b.query_start);
  db.attention.positions = arena.Ints(b.positions);
  db.attention.block_tables = arena.Ints(b.block_tables);
  db.attention.max_blocks_per_seq = b.blocks_per_seq;
  db.positions = db.attention.positions;
  db.slots = arena.Ints(b.slots);
  return db;
}

// Attention FLOPs: per query row and head, q.k and p.v over its context (2 FLOPs per MAC).
int64_t AttentionFlops(const Shape& s, const HostBatch& b) {
  int64_t keys = 0;
  for (const int32_t p : b.positions) keys += p + 1;
  return 4 * keys * s.q_heads * s.head_dim;
}

void MeasureAttention(Context& c) {
  Device& d = c.d;
  const Shape& s = c.s;
  std::mt19937 rng(11);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  auto run = [&](int32_t seqs, int32_t context, bool prefill) {
    const HostBatch hb = MakeHostBatch(s, seqs, context, prefill, rng);
    // Bytes: the cache each sequence reads once (GQA heads of a group share it) plus q and out.
    const int64_t kv_bytes = int64_t{seqs} * context * s.KvBytesPerTokenLayer();
    const int64_t bytes = kv_bytes + int64_t{hb.num_tokens} * s.q_dim() * 8;
    const int copies = prefill ? 1 : RotatingCopies(c, bytes);
    Arena arena(d);
    std::vector<PagedKvLayer> caches;
    std::vector<float*> q, out;
    const DeviceBatch db = Upload(arena, hb);
    for (int i = 0; i < copies; ++i) {
      caches.push_back(MakeCache(arena, s, seqs * hb.blocks_per_seq, 1000 + 2 * i));
      q.push_back(arena.Floats(static_cast<size_t>(hb.num_tokens) * s.q_dim(), 1100 + i));
      out.push_back(arena.Get<float>(static_cast<size_t>(hb.num_tokens) * s.q_dim()));
    }
    const Timing t = TimeWork(d, [&](int64_t i) {
      d.ops().paged_attention(q[i % copies], s.q_heads, caches[i % copies], db.attention, scale,
                              out[i % copies], d.stream());
    }, c.o);
    const std::string shape = (prefill ? "prefill T=" : "decode b=") +
                              std::to_string(prefill ? context : seqs) +
                              (prefill ? "" : " ctx=" + std::to_string(context));
    AddKernelResult(c, prefill ? "attention_prefill" : "paged_attention", shape, hb.num_tokens,
                    bytes, AttentionFlops(s, hb), copies, t);
  };
  for (const int b : c.o.attention_batches) {
    for (const int ctx : c.o.attention_contexts) run(b, ctx, false);
  }
  run(1, c.o.prefill_tokens, true);
}

struct Matrix {
  const char* name;
  int32_t in, out;
};

std::vector<Matrix> Matrices(const Shape& s) {
  return {{"q_proj", s.hidden, s.q_dim()},   {"k_proj", s.hidden, s.kv_dim()},
          {"o_proj", s.q_dim(), s.hidden},   {"gate_proj", s.hidden, s.inter},
          {"down_proj", s.inter, s.hidden},  {"lm_head", s.hidden, s.vocab}};
}

void MeasureLinear(Context& c) {
  Device& d = c.d;
  std::vector<int> rows = c.o.linear_batches;
  rows.push_back(c.o.prefill_tokens);
  for (size_t r = 0; r < rows.size(); ++r) {
    const int m = rows[r];
    const bool prefill_rows = r + 1 == rows.size();
    for (const Matrix& mat : Matrices(c.s)) {
      if (prefill_rows && std::strcmp(mat.name, "lm_head") == 0) continue;  // never that shape
      const int64_t weight_bytes = int64_t{mat.in} * mat.out * 2;
      const int64_t bytes = weight_bytes + int64_t{m} * (mat.in + mat.out) * 4;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<const bf16*> w;
      std::vector<const float*> x;
      std::vector<float*> y;
      const float a = std::sqrt(3.0f / static_cast<float>(mat.in));
      for (int i = 0; i < copies; ++i) {
        w.push_back(arena.Bf16s(static_cast<size_t>(mat.in) * mat.out, 1200 + i, -a, a));
        x.push_back(arena.Floats(static_cast<size_t>(m) * mat.in, 1300 + i));
        y.push_back(arena.Get<float>(static_cast<size_t>(m) * mat.out));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        d.ops().linear(x[i % copies], m, mat.in, w[i % copies], mat.out, y[i % copies],
                       d.stream());
      }, c.o);
      AddKernelResult(c, "linear",
                      std::string(mat.name) + " m=" + std::to_string(m) + " " +
                          std::to_string(mat.in) + "->" + std::to_string(mat.out),
                      m, bytes, 2 * int64_t{m} * mat.in * mat.out, copies, t);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (d), (e) Synthetic steps of the whole model

struct LayerWeights {
  const bf16 *q, *k, *v, *o, *gate, *up, *down, *input_norm, *post_norm;
};

struct ModelWeights {
  const bf16* embed = nullptr;
  const bf16* lm_head = nullptr;
  const bf16* final_norm = nullptr;
  std::vector<LayerWeights> layers;
};

// Random bf16 weights on the device, uniform with variance 1/fan_in (activations stay O(1)).
ModelWeights MakeWeights(Arena& arena, const Shape& s) {
  uint64_t seed = 5000;
  auto matrix = [&](int32_t in, int32_t out) {
    const float a = std::sqrt(3.0f / static_cast<float>(in));
    return arena.Bf16s(static_cast<size_t>(in) * out, seed++, -a, a);
  };
  auto norm = [&]() { return arena.Bf16s(s.hidden, seed++, 0.9f, 1.1f); };
  ModelWeights w;
  w.embed = arena.Bf16s(static_cast<size_t>(s.vocab) * s.hidden, seed++, -1.0f, 1.0f);
  for (int32_t l = 0; l < s.layers; ++l) {
    LayerWeights lw;
    lw.q = matrix(s.hidden, s.q_dim());
    lw.k = matrix(s.hidden, s.kv_dim());
    lw.v = matrix(s.hidden, s.kv_dim());
    lw.o = matrix(s.q_dim(), s.hidden);
    lw.gate = matrix(s.hidden, s.inter);
    lw.up = matrix(s.hidden, s.inter);
    lw.down = matrix(s.inter, s.hidden);
    lw.input_norm = norm();
    lw.post_norm = norm();
    w.layers.push_back(lw);
  }
  w.final_norm = norm();
  w.lm_head = matrix(s.hidden, s.vocab);
  return w;
}

struct Activations {
  float *residual, *normed, *q, *k, *v, *attn, *proj, *gate, *up, *act, *logits;
  const float* inv_freq;
};

Activations MakeActivations(Arena& arena, const Shape& s, int64_t tokens, int64_t logit_rows) {
  Activations a;
  a.residual = arena.Get<float>(tokens * s.hidden);
  a.normed = arena.Get<float>(tokens * s.hidden);
  a.q = arena.Get<float>(tokens * s.q_dim());
  a.k = arena.Get<float>(tokens * s.kv_dim());
  a.v = arena.Get<float>(tokens * s.kv_dim());
  a.attn = arena.Get<float>(tokens * s.q_dim());
  a.proj = arena.Get<float>(tokens * s.hidden);
  a.gate = arena.Get<float>(tokens * s.inter);
  a.up = arena.Get<float>(tokens * s.inter);
  a.act = arena.Get<float>(tokens * s.inter);
  a.logits = arena.Get<float>(logit_rows * s.vocab);
  a.inv_freq = arena.Get<float>(s.head_dim / 2);  // uploaded by ModelPhase
  return a;
}

// The KV cache of every layer for one step plan. Separate memory per layer when it fits; else one
// pool that every layer uses (same bytes read per layer, so the same time once the per-layer
// cache is larger than the device cache; reported as kv_shared_across_layers).
struct KvCache {
  std::vector<PagedKvLayer> layers;
  bool shared = false;
  int64_t bytes = 0;
};

class KvCacheOwner {
 public:
  KvCacheOwner(Device& d, const Shape& s, int32_t num_blocks) : d_(d) {
    const size_t n = static_cast<size_t>(num_blocks) * s.block_size * s.kv_dim();
    auto alloc = [&](uint64_t seed) -> float* {
      auto* p = static_cast<float*>(d.Alloc(n * sizeof(float)));
      if (p != nullptr) {
        d.FillF32(p, n, seed, -1.0f, 1.0f);
        ptrs_.push_back(p);
      }
      return p;
    };
    PagedKvLayer base;
    base.num_blocks = num_blocks;
    base.block_size = s.block_size;
    base.kv_heads = s.kv_heads;
    base.head_dim = s.head_dim;
    // Keep 1 GiB (GPU) free for the Linear workspace and cuBLAS.
    const int64_t needed = static_cast<int64_t>(s.layers) * 2 * n * sizeof(float);
    const bool separate = needed + (int64_t{1} << 30) <= d.FreeBytes() || d.info().kind == "cpu";
    for (int32_t l = 0; l < (separate ? s.layers : 1); ++l) {
      PagedKvLayer layer = base;
      layer.k = alloc(7000 + 2 * l);
      layer.v = alloc(7001 + 2 * l);
      if (layer.k == nullptr || layer.v == nullptr) {
        Die("out of device memory for the KV cache (" + HumanBytes(2.0 * n * sizeof(float)) +
            " per layer)");
      }
      cache_.layers.push_back(layer);
    }
    cache_.shared = !separate;
    while (static_cast<int32_t>(cache_.layers.size()) < s.layers) {
      cache_.layers.push_back(cache_.layers.front());
    }
    cache_.bytes = static_cast<int64_t>(ptrs_.size()) * n * sizeof(float);
  }
  ~KvCacheOwner() {
    d_.Synchronize();
    for (void* p : ptrs_) d_.Free(p);
  }
  const KvCache& cache() const { return cache_; }

 private:
  Device& d_;
  std::vector<void*> ptrs_;
  KvCache cache_;
};

struct StepPlan {
  int32_t num_tokens = 0;
  const int32_t* tokens = nullptr;
  DeviceBatch batch;
  int32_t logit_rows = 0;
  int32_t logit_row_begin = 0;  // first row of `normed` that gets logits
};

// Profile of one step: (category, mark) after every kernel call; seconds per category come from
// consecutive marks.
using Profile = std::vector<std::pair<const char*, int>>;

// One forward step, the calls of worker/model/llama_model.cc (TP=1) in the same order.
void RunStep(Device& d, const Shape& s, const ModelWeights& w, const Activations& a,
             const KvCache& kv, const StepPlan& p, Profile* profile) {
  const KernelOps& k = d.ops();
  const Stream st = d.stream();
  const int32_t n = p.num_tokens, h = s.hidden, qd = s.q_dim(), kvd = s.kv_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  auto mark = [&](const char* category) {
    if (profile != nullptr) profile->emplace_back(category, d.Mark());
  };
  mark(nullptr);
  k.embedding_gather(w.embed, 0, s.vocab, h, p.tokens, n, a.residual, st);
  mark("embedding");
  k.rms_norm(a.residual, w.layers[0].input_norm, n, h, s.eps, a.normed, st);
  mark("norm");
  for (int32_t l = 0; l < s.layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    k.linear(a.normed, n, h, lw.q, qd, a.q, st);
    mark("linear");
    k.linear(a.normed, n, h, lw.k, kvd, a.k, st);
    mark("linear");
    k.linear(a.normed, n, h, lw.v, kvd, a.v, st);
    mark("linear");
    k.rope(a.q, a.k, p.batch.positions, n, s.q_heads, s.kv_heads, s.head_dim, a.inv_freq, st);
    mark("rope");
    k.kv_cache_write(a.k, a.v, p.batch.slots, n, kv.layers[l], st);
    mark("kv_cache_write");
    k.paged_attention(a.q, s.q_heads, kv.layers[l], p.batch.attention, scale, a.attn, st);
    mark("attention");
    k.linear(a.attn, n, qd, lw.o, h, a.proj, st);
    mark("linear");
    k.add_rms_norm(a.residual, a.proj, lw.post_norm, n, h, s.eps, a.normed, st);
    mark("norm");
    k.linear(a.normed, n, h, lw.gate, s.inter, a.gate, st);
    mark("linear");
    k.linear(a.normed, n, h, lw.up, s.inter, a.up, st);
    mark("linear");
    k.silu_mul(a.gate, a.up, n, s.inter, a.act, st);
    mark("silu_mul");
    k.linear(a.act, n, s.inter, lw.down, h, a.proj, st);
    mark("linear");
    const bf16* next_norm = l + 1 < s.layers ? w.layers[l + 1].input_norm : w.final_norm;
    k.add_rms_norm(a.residual, a.proj, next_norm, n, h, s.eps, a.normed, st);
    mark("norm");
  }
  k.linear(a.normed + static_cast<size_t>(p.logit_row_begin) * h, p.logit_rows, h, w.lm_head,
           s.vocab, a.logits, st);
  mark("lm_head");
}

Json ProfileStep(Device& d, const Shape& s, const ModelWeights& w, const Activations& a,
                 const KvCache& kv, const StepPlan& p, std::string* line) {
  Profile profile;
  d.ResetMarks();
  RunStep(d, s, w, a, kv, p, &profile);
  d.Synchronize();
  std::map<std::string, double> sums;
  for (size_t i = 1; i < profile.size(); ++i) {
    sums[profile[i].first] += d.Seconds(profile[i - 1].second, profile[i].second);
  }
  Json j = Json::Object();
  double total = 0;
  std::vector<std::pair<double, std::string>> parts;  // sorted by time for the table
  for (const auto& [name, seconds] : sums) {
    j.Set(name, seconds);
    total += seconds;
    parts.emplace_back(seconds, name);
  }
  std::sort(parts.rbegin(), parts.rend());
  *line = "";
  for (const auto& [seconds, name] : parts) {
    *line += (line->empty() ? "" : ", ") + name + " " + Fmt("%.0f%%", 100.0 * seconds / total);
  }
  return j;
}

struct ModelPhase {
  Arena arena;
  ModelWeights weights;
  Activations acts;
  ModelPhase(Device& d, const Shape& s, int64_t max_tokens, int64_t max_logit_rows) : arena(d) {
    weights = MakeWeights(arena, s);
    acts = MakeActivations(arena, s, max_tokens, max_logit_rows);
    const std::vector<float> f = InvFreq(s);
    d.Upload(const_cast<float*>(acts.inv_freq), f.data(), f.size() * sizeof(float));
    d.Synchronize();
  }
};

StepPlan MakePlan(Arena& arena, const Shape& s, const HostBatch& hb, bool prefill,
                  std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> token(0, s.vocab - 1);
  std::vector<int32_t> tokens(hb.num_tokens);
  for (auto& t : tokens) t = token(rng);
  StepPlan p;
  p.num_tokens = hb.num_tokens;
  p.tokens = arena.Ints(tokens);
  p.batch = Upload(arena, hb);
  // The model computes logits only for each sequence's last row.
  p.logit_rows = prefill ? 1 : hb.num_tokens;
  p.logit_row_begin = prefill ? hb.num_tokens - 1 : 0;
  return p;
}

void MeasurePrefill(Context& c, ModelPhase& m) {
  Device& d = c.d;
  const Shape& s = c.s;
  std::mt19937 rng(21);
  const int32_t T = c.o.prefill_tokens;
  const HostBatch hb = MakeHostBatch(s, 1, T, /*prefill=*/true, rng);
  Arena arena(d);
  const StepPlan plan = MakePlan(arena, s, hb, true, rng);
  KvCacheOwner kv(d, s, hb.blocks_per_seq);
  const Timing t = TimeWork(d, [&](int64_t) {
    RunStep(d, s, m.weights, m.acts, kv.cache(), plan, nullptr);
  }, c.o, 1000);
  std::string parts;
  const Json breakdown = ProfileStep(d, s, m.weights, m.acts, kv.cache(), plan, &parts);

  const int64_t linear_flops =
      2 * int64_t{T} * s.layers * s.LayerMatrixParams() + 2 * int64_t{s.hidden} * s.vocab;
  const int64_t attention_flops = s.layers * AttentionFlops(s, hb);
  const double useful = static_cast<double>(linear_flops + attention_flops);
  const double executed =
      static_cast<double>(linear_flops) * d.linear_flop_multiplier() + attention_flops;
  const double rate = useful / t.best_s;
  const double fraction = rate / c.gemm_peak;
  Json j = Json::Object();
  j.Set("tokens", T);
  j.Set("sequences", 1);
  j.Set("step_s", t.best_s);
  j.Set("median_step_s", t.median_s);
  j.Set("tokens_per_s", T / t.best_s);
  j.Set("useful_flops", useful);
  j.Set("linear_flops", static_cast<double>(linear_flops));
  j.Set("attention_flops", static_cast<double>(attention_flops));
  j.Set("flops_per_s", rate);
  j.Set("linear_flop_multiplier", d.linear_flop_multiplier());
  j.Set("executed_flops_per_s", executed / t.best_s);
  j.Set("gemm_peak_flops_per_s", c.gemm_peak);
  j.Set("fraction_of_gemm_peak", fraction);
  j.Set("goal", 0.6);
  j.Set("goal_met", fraction >= 0.6);
  const Json* linear_s = breakdown.Find("linear");
  if (linear_s != nullptr && linear_s->number() > 0) {
    // How the Linear calls alone fare against the peak (useful FLOPs, without lm_head).
    j.Set("linear_fraction_of_gemm_peak",
          static_cast<double>(linear_flops - 2 * int64_t{s.hidden} * s.vocab) /
              linear_s->number() / c.gemm_peak);
  }
  j.Set("breakdown_s", breakdown);
  c.report.Set("prefill", std::move(j));
  c.table.push_back("prefill, " + std::to_string(T) + " tokens (1 sequence)");
  c.table.push_back("  " + Fmt("%.4f", t.best_s) + " s/step, " + Fmt("%.0f", T / t.best_s) +
                    " tok/s, " + Fmt("%.3g", rate / 1e12) + " TFLOP/s useful = " +
                    Fmt("%.1f%%", 100 * fraction) + " of the GEMM peak (goal 60%: " +
                    (fraction >= 0.6 ? "met" : "NOT met") + ")");
  c.table.push_back("  time: " + parts);
  c.Save();
}

void MeasureDecode(Context& c, ModelPhase& m) {
  Device& d = c.d;
  const Shape& s = c.s;
  std::mt19937 rng(31);
  const int32_t ctx = c.o.decode_context;
  Json list = Json::Array();
  c.table.push_back("decode step, context " + std::to_string(ctx) + " per sequence");
  c.table.push_back("  batch     s/step      tok/s   GB/s  %copy  graph s/step  graph tok/s");
  Json batch1 = Json::Object();
  for (const int b : c.o.decode_batches) {
    const HostBatch hb = MakeHostBatch(s, b, ctx, /*prefill=*/false, rng);
    Arena arena(d);
    const StepPlan plan = MakePlan(arena, s, hb, false, rng);
    KvCacheOwner kv(d, s, b * hb.blocks_per_seq);
    const Timing t = TimeWork(d, [&](int64_t) {
      RunStep(d, s, m.weights, m.acts, kv.cache(), plan, nullptr);
    }, c.o, 1000);
    std::string parts;
    const Json breakdown = ProfileStep(d, s, m.weights, m.acts, kv.cache(), plan, &parts);
    const double kv_read = static_cast<double>(s.layers) * b * ctx * s.KvBytesPerTokenLayer();
    const double bytes = static_cast<double>(s.WeightBytesPerStep()) + kv_read;
    Json j = Json::Object();
    j.Set("batch", b);
    j.Set("context", ctx);
    j.Set("step_s", t.best_s);
    j.Set("median_step_s", t.median_s);
    j.Set("tokens_per_s", b / t.best_s);
    j.Set("bytes_per_step", bytes);
    j.Set("bytes_per_s", bytes / t.best_s);
    j.Set("fraction_of_copy_bw", bytes / t.best_s / c.copy_bw);
    j.Set("kv_cache_bytes", kv.cache().bytes);
    j.Set("kv_shared_across_layers", kv.cache().shared);
    j.Set("breakdown_s", breakdown);

    std::string graph_cells = "            -            -";
    if (c.o.graphs && d.info().kind == "cuda") {
      // The step was just run (warm): the Linear workspace has its size, nothing allocates.
      Json g = Json::Object();
      std::string error;
      if (!d.BeginCapture()) {
        g.Set("error", "cudaStreamBeginCapture failed");
      } else {
        RunStep(d, s, m.weights, m.acts, kv.cache(), plan, nullptr);
        if (!d.EndCapture(&error)) {
          g.Set("error", error);
        } else {
          const Timing gt = TimeWork(d, [&](int64_t) { d.LaunchCaptured(); }, c.o, 1000);
          g.Set("nodes", static_cast<double>(d.captured_nodes()));
          g.Set("step_s", gt.best_s);
          g.Set("tokens_per_s", b / gt.best_s);
          g.Set("speedup", t.best_s / gt.best_s);
          graph_cells = Fmt("%13.5f", gt.best_s) + Fmt("%13.0f", b / gt.best_s);
          d.DropCaptured();
        }
      }
      j.Set("cuda_graph", std::move(g));
    }
    char line[200];
    std::snprintf(line, sizeof(line), "  %5d %10.5f %10.0f %6.0f %5.0f%%%s%s", b, t.best_s,
                  b / t.best_s, bytes / t.best_s / 1e9, 100 * bytes / t.best_s / c.copy_bw,
                  graph_cells.c_str(), kv.cache().shared ? "  (KV pool shared by layers)" : "");
    c.table.push_back(line);
    c.table.push_back("        time: " + parts);

    if (b == 1) {
      const double weight_bytes = static_cast<double>(s.WeightBytesPerStep());
      const double bound = weight_bytes / c.copy_bw;
      batch1.Set("step_s", t.best_s);
      batch1.Set("weight_bytes", weight_bytes);
      batch1.Set("copy_bytes_per_s", c.copy_bw);
      batch1.Set("hbm_bound_s", bound);
      batch1.Set("fraction_of_hbm_bound", bound / t.best_s);
      batch1.Set("hbm_bound_with_kv_s", (weight_bytes + kv_read) / c.copy_bw);
      if (const Json* g = j.Find("cuda_graph"); g != nullptr && g->Find("step_s") != nullptr) {
        batch1.Set("graph_fraction_of_hbm_bound", bound / g->Find("step_s")->number());
      }
      batch1.Set("goal", 0.8);
      batch1.Set("goal_met", bound / t.best_s >= 0.8);
    }
    list.Push(std::move(j));
    c.report.Set("decode", list);
    c.Save();
  }
  if (const Json* step = batch1.Find("step_s"); step != nullptr) {
    const double fraction = batch1.Find("fraction_of_hbm_bound")->number();
    c.table.push_back("  batch 1 vs the HBM bound (" + HumanBytes(s.WeightBytesPerStep()) +
                      " of weights / copy bandwidth = " +
                      Fmt("%.5f", batch1.Find("hbm_bound_s")->number()) + " s): " +
                      Fmt("%.1f%%", 100 * fraction) + " (goal 80%: " +
                      (fraction >= 0.8 ? "met" : "NOT met") + ")");
    c.report.Set("decode_batch1", std::move(batch1));
  }
  c.Save();
}

// ---------------------------------------------------------------------------------------------

int Main(int argc, char** argv) {
  const auto wall_start = std::chrono::steady_clock::now();
  Options o;
  const int parsed = ParseArgs(argc, argv, &o);
  if (parsed != 0) return parsed == 1 ? 0 : 2;
  if (o.dry_run && !o.device.empty() && o.device != "cpu") {
    std::fprintf(stderr, "caduceus-bench-kernels: --dry-run runs on the CPU (--device cpu)\n");
    return 2;
  }
#ifdef CADUCEUS_BENCH_WITH_CUDA
  const char* default_device = "cuda";
#else
  const char* default_device = "cpu";
#endif
  if (o.dry_run) o.device = "cpu";
  if (o.device.empty()) o.device = default_device;

  std::unique_ptr<Device> device;
  if (o.device == "cpu") {
    device = MakeCpuDevice();
  } else if (o.device == "cuda" || o.device.rfind("cuda:", 0) == 0) {
    int64_t ordinal = 0;
    if (o.device.size() > 5 && !ParseInt(o.device.substr(5), &ordinal)) {
      std::fprintf(stderr, "caduceus-bench-kernels: bad device '%s'\n", o.device.c_str());
      return 2;
    }
    std::string error;
    device = MakeCudaDevice(static_cast<int>(ordinal), &error);
    if (device == nullptr) {
      std::fprintf(stderr, "caduceus-bench-kernels: %s\n", error.c_str());
      return 2;
    }
  } else {
    std::fprintf(stderr, "caduceus-bench-kernels: unknown device '%s' (cpu, cuda[:K])\n",
                 o.device.c_str());
    return 2;
  }
  Device& d = *device;
  const bool cuda = d.info().kind == "cuda";
  if (o.shape.empty()) o.shape = cuda ? "llama3-8b" : "tiny";
  ApplyDefaults(cuda, &o);
  const Shape s = o.shape == "llama3-8b" ? Llama3_8B() : Tiny();

  Context c(d, o, s);
  c.report.Set("schema", "caduceus-bench-kernels/1");
  c.report.Set("mode", o.dry_run ? "dry-run" : "full");
  {
    Json dev = Json::Object();
    dev.Set("kind", d.info().kind);
    dev.Set("name", d.info().name);
    dev.Set("memory_bytes", d.info().memory_bytes);
    dev.Set("cache_bytes", d.info().cache_bytes);
    for (const auto& [k, v] : d.info().strings) dev.Set(k, v);
    for (const auto& [k, v] : d.info().numbers) dev.Set(k, v);
    c.report.Set("device", std::move(dev));
    Json shape = Json::Object();
    shape.Set("name", s.name);
    shape.Set("hidden", s.hidden);
    shape.Set("q_heads", s.q_heads);
    shape.Set("kv_heads", s.kv_heads);
    shape.Set("head_dim", s.head_dim);
    shape.Set("intermediate", s.inter);
    shape.Set("vocab", s.vocab);
    shape.Set("layers", s.layers);
    shape.Set("block_size", s.block_size);
    shape.Set("tp", 1);
    shape.Set("weight_bytes_per_step", s.WeightBytesPerStep());
    shape.Set("kv_cache_dtype", "fp32");
    c.report.Set("shape", std::move(shape));
  }
  std::printf("caduceus-bench-kernels: %s, %s, model %s%s\n", d.info().kind.c_str(),
              d.info().name.c_str(), s.name.c_str(), o.dry_run ? " (dry run)" : "");
  std::fflush(stdout);

  // (a) memory
  {
    const size_t bytes = static_cast<size_t>(o.copy_bytes);
    const Timing copy = TimeWork(d, d.MakeCopy(bytes), o);
    const Timing read = TimeWork(d, d.MakeStreamRead(bytes), o);
    c.copy_bw = 2.0 * bytes / copy.best_s;
    Json j = Json::Object();
    j.Set("buffer_bytes", bytes);
    j.Set("copy_d2d_bytes_per_s", c.copy_bw);
    j.Set("copy_d2d_note", "bytes read + bytes written per second");
    j.Set("stream_read_bytes_per_s", bytes / read.best_s);
    c.report.Set("memory", std::move(j));
    c.table.push_back("memory (" + HumanBytes(bytes) + " buffers)");
    c.table.push_back("  copy D2D      " + Fmt("%8.1f", c.copy_bw / 1e9) +
                      " GB/s (read + written)");
    c.table.push_back("  stream read   " + Fmt("%8.1f", bytes / read.best_s / 1e9) + " GB/s");
    c.Save();
  }
  // (b) GEMM peak
  {
    std::string impl;
    const Timing t = TimeWork(d, d.MakeGemm(o.gemm_size, &impl), o);
    const double flops = 2.0 * o.gemm_size * o.gemm_size * o.gemm_size;
    c.gemm_peak = flops / t.best_s;
    Json j = Json::Object();
    j.Set("impl", impl);
    j.Set("size", o.gemm_size);
    j.Set("seconds", t.best_s);
    j.Set("flops_per_s", c.gemm_peak);
    c.report.Set("gemm", std::move(j));
    c.table.push_back("gemm peak: " + Fmt("%.3g", c.gemm_peak / 1e12) + " TFLOP/s (" + impl +
                      ", " + std::to_string(o.gemm_size) + "^3)");
    c.Save();
  }
  // (c) kernels
  c.report.Set("kernels", Json::Array());
  if (o.micro) {
    char header[160];
    std::snprintf(header, sizeof(header), "  %-17s %-34s %10s %9s %7s %9s", "kernel", "shape",
                  "us/call", "GB/s", "%copy", "TFLOP/s");
    c.table.push_back("kernels (best loop; bytes = minimal traffic; %copy = of copy bandwidth)");
    c.table.push_back(header);
    MeasureElementwise(c);
    MeasureAttention(c);
    MeasureLinear(c);
    c.Save();
  }
  // (d), (e) synthetic steps; prefill first so the Linear workspace reaches its largest size
  // before any decode step is captured into a graph.
  {
    int max_batch = 1;
    for (const int b : o.decode_batches) max_batch = std::max(max_batch, b);
    const int64_t max_tokens = std::max(max_batch, o.prefill_tokens);
    ModelPhase m(d, s, max_tokens, max_batch);
    c.report.Set("weights_resident_bytes", m.arena.bytes());
    MeasurePrefill(c, m);
    MeasureDecode(c, m);
  }
  c.report.Set("wall_s", std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                       wall_start).count());
  c.Save();
  for (const std::string& line : c.table) std::printf("%s\n", line.c_str());
  std::printf("%s\n", c.report.Dump().c_str());
  return 0;
}

}  // namespace
}  // namespace caduceus::kernels::bench

int main(int argc, char** argv) { return caduceus::kernels::bench::Main(argc, argv); }
