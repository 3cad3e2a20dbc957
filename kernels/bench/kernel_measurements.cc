// caduceus-bench-kernels (c): every kernel alone at the shapes a step uses.
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

struct Matrix {
  const char* name;
  int32_t in, out;
};

std::vector<Matrix> Matrices(const Shape& s) {
  // The model's projections (fused q|k|v and gate|up, worker/model/llama_weights.h).
  return {{"qkv_proj", s.hidden, s.q_dim() + 2 * s.kv_dim()},
          {"o_proj", s.q_dim(), s.hidden},
          {"gate_up_proj", s.hidden, 2 * s.inter},
          {"down_proj", s.inter, s.hidden},
          {"lm_head", s.hidden, s.vocab}};
}

}  // namespace

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
    {  // Rope: q and k heads of fused q|k|v rows rotated in place (read + write), positions read
      const int64_t bytes = n * (qd + kvd) * 8 + n * 4;
      const int64_t stride = qd + 2 * kvd;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<float*> qkv;
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
        qkv.push_back(arena.Floats(n * stride, 400 + i));
        std::vector<int32_t> host(n);
        for (auto& p : host) p = position(rng);
        pos.push_back(arena.Ints(host));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.rope(qkv[i % copies], stride, pos[i % copies], n, s.q_heads + s.kv_heads, s.head_dim,
               inv_freq, st);
      }, c.o);
      AddKernelResult(c, "rope",
                      tok + " heads=" + std::to_string(s.q_heads) + "+" +
                          std::to_string(s.kv_heads) + "x" + std::to_string(s.head_dim),
                      n, bytes, 0, copies, t);
    }
    {  // SiluMul: read the fused gate|up rows, write out
      const int64_t bytes = n * inter * 12;
      const int copies = RotatingCopies(c, bytes);
      Arena arena(d);
      std::vector<float*> gate_up, out;
      for (int i = 0; i < copies; ++i) {
        gate_up.push_back(arena.Floats(n * 2 * inter, 600 + i));
        out.push_back(arena.Get<float>(n * inter));
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.silu_mul(gate_up[i % copies], n, s.inter, out[i % copies], st);
      }, c.o);
      AddKernelResult(c, "silu_mul", tok + " d=" + std::to_string(inter), n, bytes, 0, copies, t);
    }
    {  // KvCacheWrite: read the fp32 k and v rows, write them (kv_dtype) into scattered slots
      const int64_t bytes = n * kvd * 8 + n * s.KvBytesPerTokenLayer() + n * 4;
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
        cache.dtype = s.kv_dtype;
        cache.k = arena.KvElements(s.kv_dtype, static_cast<size_t>(blocks) * s.block_size * kvd);
        cache.v = arena.KvElements(s.kv_dtype, static_cast<size_t>(blocks) * s.block_size * kvd);
        caches.push_back(cache);
      }
      const Timing t = TimeWork(d, [&](int64_t i) {
        k.kv_cache_write(kk[i % copies], vv[i % copies], kvd, slots[i % copies], n,
                         caches[i % copies], st);
      }, c.o);
      AddKernelResult(c, "kv_cache_write",
                      tok + " kv_dim=" + std::to_string(kvd) + " " + KvDtypeName(s.kv_dtype), n,
                      bytes, 0, copies, t);
    }
  }
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
      d.ops().paged_attention(q[i % copies], s.q_dim(), s.q_heads, caches[i % copies],
                              db.attention, scale, out[i % copies], d.stream());
    }, c.o);
    const std::string shape = (prefill ? "prefill T=" : "decode b=") +
                              std::to_string(prefill ? context : seqs) +
                              (prefill ? "" : " ctx=" + std::to_string(context)) + " " +
                              KvDtypeName(s.kv_dtype);
    AddKernelResult(c, prefill ? "attention_prefill" : "paged_attention", shape, hb.num_tokens,
                    bytes, AttentionFlops(s, hb), copies, t);
  };
  for (const int b : c.o.attention_batches) {
    for (const int ctx : c.o.attention_contexts) run(b, ctx, false);
  }
  run(1, c.o.prefill_tokens, true);
}

// The same projection with FP8 weights (LinearFp8): half the weight bytes, so decode rows should
// run up to twice as fast where Linear is bound by streaming its weights. The lm_head stays bf16.
static void MeasureLinearFp8(Context& c, const Matrix& mat, int m) {
  Device& d = c.d;
  const int64_t weight_bytes = int64_t{mat.in} * mat.out + int64_t{mat.out} * 4;
  const int64_t bytes = weight_bytes + int64_t{m} * (mat.in + mat.out) * 4;
  const int copies = RotatingCopies(c, bytes);
  Arena arena(d);
  std::vector<const uint8_t*> w;
  std::vector<const float*> scale, x;
  std::vector<float*> y;
  for (int i = 0; i < copies; ++i) {
    w.push_back(arena.Fp8s(static_cast<size_t>(mat.in) * mat.out, 1400 + i));
    scale.push_back(arena.Floats(static_cast<size_t>(mat.out), 1500 + i, 1e-3f, 2e-3f));
    x.push_back(arena.Floats(static_cast<size_t>(m) * mat.in, 1300 + i));
    y.push_back(arena.Get<float>(static_cast<size_t>(m) * mat.out));
  }
  const Timing t = TimeWork(d, [&](int64_t i) {
    d.ops().linear_fp8(x[i % copies], m, mat.in, w[i % copies], scale[i % copies], mat.out,
                       y[i % copies], d.stream());
  }, c.o);
  AddKernelResult(c, "linear_fp8",
                  std::string(mat.name) + " m=" + std::to_string(m) + " " +
                      std::to_string(mat.in) + "->" + std::to_string(mat.out),
                  m, bytes, 2 * int64_t{m} * mat.in * mat.out, copies, t);
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
      if (std::strcmp(mat.name, "lm_head") != 0) MeasureLinearFp8(c, mat, m);
    }
  }
}
}  // namespace caduceus::kernels::bench
