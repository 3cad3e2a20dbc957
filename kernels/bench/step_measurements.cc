// caduceus-bench-kernels (d), (e): synthetic prefill and decode steps of the whole model, built
// from the real kernels in the order worker/model/llama_model.cc calls them.
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

// Fused like the model's (worker/model/llama_weights.h): q|k|v and gate|up are one matrix each.
struct LayerWeights {
  const bf16 *qkv, *o, *gate_up, *down, *input_norm, *post_norm;
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
    lw.qkv = matrix(s.hidden, s.q_dim() + 2 * s.kv_dim());
    lw.o = matrix(s.q_dim(), s.hidden);
    lw.gate_up = matrix(s.hidden, 2 * s.inter);
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
  float *residual, *normed, *qkv, *attn, *proj, *gate_up, *act, *logits;
  const float* inv_freq;
};

Activations MakeActivations(Arena& arena, const Shape& s, int64_t tokens, int64_t logit_rows) {
  Activations a;
  a.residual = arena.Get<float>(tokens * s.hidden);
  a.normed = arena.Get<float>(tokens * s.hidden);
  a.qkv = arena.Get<float>(tokens * (s.q_dim() + 2 * s.kv_dim()));
  a.attn = arena.Get<float>(tokens * s.q_dim());
  a.proj = arena.Get<float>(tokens * s.hidden);
  a.gate_up = arena.Get<float>(tokens * 2 * s.inter);
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
    const size_t elem = static_cast<size_t>(KvDtypeBytes(s.kv_dtype));
    // n elements of s.kv_dtype, uniform in [-1, 1) (bf16: rounded to nearest even).
    auto alloc = [&](uint64_t seed) -> void* {
      void* p = d.Alloc(n * elem);
      if (p != nullptr) {
        if (s.kv_dtype == KvDtype::kBf16) {
          d.FillBf16(static_cast<bf16*>(p), n, seed, -1.0f, 1.0f);
        } else {
          d.FillF32(static_cast<float*>(p), n, seed, -1.0f, 1.0f);
        }
        ptrs_.push_back(p);
      }
      return p;
    };
    PagedKvLayer base;
    base.num_blocks = num_blocks;
    base.block_size = s.block_size;
    base.kv_heads = s.kv_heads;
    base.head_dim = s.head_dim;
    base.dtype = s.kv_dtype;
    // Keep 1 GiB (GPU) free for the Linear workspace and cuBLAS.
    const int64_t needed = static_cast<int64_t>(s.layers) * 2 * n * elem;
    const bool separate = needed + (int64_t{1} << 30) <= d.FreeBytes() || d.info().kind == "cpu";
    for (int32_t l = 0; l < (separate ? s.layers : 1); ++l) {
      PagedKvLayer layer = base;
      layer.k = alloc(7000 + 2 * l);
      layer.v = alloc(7001 + 2 * l);
      if (layer.k == nullptr || layer.v == nullptr) {
        Die("out of device memory for the KV cache (" + HumanBytes(2.0 * n * elem) +
            " per layer)");
      }
      cache_.layers.push_back(layer);
    }
    cache_.shared = !separate;
    while (static_cast<int32_t>(cache_.layers.size()) < s.layers) {
      cache_.layers.push_back(cache_.layers.front());
    }
    cache_.bytes = static_cast<int64_t>(ptrs_.size() * n * elem);
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
  const int32_t qkv = qd + 2 * kvd;  // the fused projection's width, the stride of its rows
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
    k.linear(a.normed, n, h, lw.qkv, qkv, a.qkv, st);
    mark("linear");
    k.rope(a.qkv, qkv, p.batch.positions, n, s.q_heads + s.kv_heads, s.head_dim, a.inv_freq, st);
    mark("rope");
    k.kv_cache_write(a.qkv + qd, a.qkv + qd + kvd, qkv, p.batch.slots, n, kv.layers[l], st);
    mark("kv_cache_write");
    k.paged_attention(a.qkv, qkv, s.q_heads, kv.layers[l], p.batch.attention, scale, a.attn, st);
    mark("attention");
    k.linear(a.attn, n, qd, lw.o, h, a.proj, st);
    mark("linear");
    k.add_rms_norm(a.residual, a.proj, lw.post_norm, n, h, s.eps, a.normed, st);
    mark("norm");
    k.linear(a.normed, n, h, lw.gate_up, 2 * s.inter, a.gate_up, st);
    mark("linear");
    k.silu_mul(a.gate_up, n, s.inter, a.act, st);
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

}  // namespace

void MeasureModelSteps(Context& c) {
  const Options& o = c.o;
  int max_batch = 1;
  for (const int b : o.decode_batches) max_batch = std::max(max_batch, b);
  const int64_t max_tokens = std::max(max_batch, o.prefill_tokens);
  ModelPhase m(c.d, c.s, max_tokens, max_batch);
  c.report.Set("weights_resident_bytes", m.arena.bytes());
  MeasurePrefill(c, m);
  MeasureDecode(c, m);
}

}  // namespace caduceus::kernels::bench
