#include "kernels/bench/bench_support.h"

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

namespace caduceus::kernels::bench {

namespace {

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
      "  --kv-dtype bf16|f32       KV cache element type (default bf16)\n"
      "  --no-cuda-graphs          skip the CUDA-graph replay of decode steps\n"
      "  --no-micro                skip (c), the per-kernel measurements\n"
      "  --json-out FILE           also write the JSON there, updated after every phase\n");
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

}  // namespace

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0' || v < 0) return false;
  *out = v;
  return true;
}

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
    } else if (a == "--kv-dtype") {
      ok = value(&v) && (v == "bf16" || v == "f32");
      o->kv_dtype = v == "f32" ? KvDtype::kF32 : KvDtype::kBf16;
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

const char* KvDtypeName(KvDtype d) { return d == KvDtype::kBf16 ? "bf16" : "f32"; }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "caduceus-bench-kernels: %s\n", what.c_str());
  std::fflush(stdout);
  std::exit(1);
}

// Warm-up call, one calibration call, then `repeats` loops of back-to-back calls lasting about
// target_ms each (timed by stream marks, so on a GPU it is the throughput of queued calls,
// launch overhead included when the host cannot keep ahead).
Timing TimeWork(Device& d, const Work& work, const Options& o, int64_t max_iters) {
  int64_t call = 0;
  d.ResetMarks();
  work(call++);
  d.Synchronize();
  // Warm-up for half the target time, the loop sized from its fastest call. Sizing from one call
  // undercounted badly where the first calls after a phase of single-threaded setup run slow (on
  // the 2-core CI VM the first ~0.5 s of calls ran up to 20x slower, 2026-12-01): the loop then
  // ran 1-2 calls, all in that window, and reported them as the kernel's speed.
  double one = 1e30, warm = 0;
  for (int n = 0; n < 64 && (n < 2 || warm < o.target_ms * 0.5e-3); ++n) {
    d.ResetMarks();
    const int a = d.Mark();
    work(call++);
    const int b = d.Mark();
    d.Synchronize();
    const double s = d.Seconds(a, b);
    one = std::min(one, s);
    warm += s;
  }
  one = std::max(one, 1e-7);
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

// A paged cache of `num_blocks` blocks per layer (s.kv_dtype elements), filled with random K/V.
PagedKvLayer MakeCache(Arena& arena, const Shape& s, int32_t num_blocks, uint64_t seed) {
  PagedKvLayer cache;
  cache.num_blocks = num_blocks;
  cache.block_size = s.block_size;
  cache.kv_heads = s.kv_heads;
  cache.head_dim = s.head_dim;
  cache.dtype = s.kv_dtype;
  const size_t n = static_cast<size_t>(num_blocks) * s.block_size * s.kv_dim();
  cache.k = arena.KvRandom(s.kv_dtype, n, seed);
  cache.v = arena.KvRandom(s.kv_dtype, n, seed + 1);
  return cache;
}

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

DeviceBatch Upload(Arena& arena, const HostBatch& b) {
  DeviceBatch db;
  db.attention.num_seqs = b.num_seqs;
  db.attention.query_start = arena.Ints(b.query_start);
  db.attention.positions = arena.Ints(b.positions);
  db.attention.block_tables = arena.Ints(b.block_tables);
  db.attention.max_blocks_per_seq = b.blocks_per_seq;
  db.attention.num_tokens = b.num_tokens;  // lets the CUDA kernel split a long context
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
}  // namespace caduceus::kernels::bench
