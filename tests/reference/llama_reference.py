#!/usr/bin/python3
"""Float64 reference forward pass of Hugging Face LlamaForCausalLM, in numpy, used as a test oracle.

Written from the Llama papers and the published semantics of HF's LlamaForCausalLM, not from this
project's C++ engine. Every activation, the RoPE angles and the KV cache are float64; weights are
the checkpoint's values widened exactly to float64.

Usage:
  /usr/bin/python3 tests/reference/llama_reference.py --model DIR --prompt-ids 1,2,3 \
      --max-new-tokens N [--top K] [--json]
--prompt-ids may be repeated; the prompts then run as one batch (each weight is converted once
per step for all of them) and one JSON object per prompt is printed, one per line.

Greedy rule: argmax over all vocab logits, ties to the lowest id; EOS is not checked; positions
start at 0 for every prompt.

FP8 (E4M3) weight-only checkpoints (config.json quantization_config "fp8" or "compressed-tensors"
float-quantized, per-tensor or per-channel scales): each projection stored as F8_E4M3 is used as
decode(byte) * weight_scale (row j times scale[j]) in float64, which is exact; input_scale, if
present, is ignored (activations are not quantized). See fp8_projection_scales.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import SafetensorsDir  # noqa: E402


class LlamaConfig:
    def __init__(self, cfg):
        self.vocab_size = cfg["vocab_size"]
        self.hidden_size = cfg["hidden_size"]
        self.num_layers = cfg["num_hidden_layers"]
        self.num_heads = cfg["num_attention_heads"]
        self.num_kv_heads = cfg.get("num_key_value_heads") or self.num_heads
        self.intermediate_size = cfg["intermediate_size"]
        self.rms_norm_eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(cfg.get("rope_theta", 10000.0))
        self.head_dim = cfg.get("head_dim") or self.hidden_size // self.num_heads
        self.rope_scaling = cfg.get("rope_scaling")
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", False))
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act {act} not supported (Llama uses silu)")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ValueError("attention/mlp biases not supported (Llama has none)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def fp8_scheme(qc):
    """Validates a config.json quantization_config; returns the declared scale granularity:
    "tensor", "channel" or a set of both (compressed-tensors groups may differ). Refuses anything
    but E4M3 weight-only with per-tensor or per-channel scales."""
    if not isinstance(qc, dict):
        raise ValueError(f"quantization_config must be an object, got {qc!r}")
    method = qc.get("quant_method")
    if qc.get("weight_block_size") is not None:
        raise ValueError("quantization_config weight_block_size (block-wise FP8 scales) is not "
                         "supported; only per-tensor or per-channel weight scales")
    if method == "fp8":
        scheme = qc.get("activation_scheme", "dynamic")
        if scheme not in ("dynamic", "static"):
            raise ValueError(f"fp8 activation_scheme {scheme!r} not supported")
        fmt = qc.get("fmt", "e4m3")
        if fmt != "e4m3":
            raise ValueError(f"fp8 fmt {fmt!r} not supported (only e4m3)")
        return {"tensor"}
    if method == "compressed-tensors":
        if qc.get("format") != "float-quantized":
            raise ValueError(f"compressed-tensors format {qc.get('format')!r} not supported "
                             "(only float-quantized)")
        groups = qc.get("config_groups")
        if not isinstance(groups, dict) or not groups:
            raise ValueError("compressed-tensors quantization_config has no config_groups")
        strategies = set()
        for gname, group in groups.items():
            wq = (group or {}).get("weights")
            if not isinstance(wq, dict):
                raise ValueError(f"config group {gname}: no weights scheme")
            if wq.get("num_bits") != 8 or wq.get("type") != "float":
                raise ValueError(f"config group {gname}: weights must be num_bits 8, type float "
                                 f"(got {wq.get('num_bits')!r}, {wq.get('type')!r})")
            strategy = wq.get("strategy")
            if strategy not in ("tensor", "channel"):
                raise ValueError(f"config group {gname}: weight strategy {strategy!r} not "
                                 "supported (only tensor or channel)")
            if wq.get("symmetric") is False or wq.get("dynamic"):
                raise ValueError(f"config group {gname}: weights must be symmetric and static")
            if wq.get("group_size") is not None or wq.get("block_structure") is not None:
                raise ValueError(f"config group {gname}: group/block-wise weight scales not "
                                 "supported")
            strategies.add(strategy)
        return strategies
    raise ValueError(f"quantization_config quant_method {method!r} not supported "
                     "(only fp8 and compressed-tensors float-quantized)")


def fp8_projection_scales(st, cfg):
    """{weight name: float64 scale (0-d, or [out] per row)} for every projection stored as
    F8_E4M3; validates dtypes and shapes. Empty for an unquantized checkpoint."""
    qc = st.config.get("quantization_config")
    allowed = fp8_scheme(qc) if qc is not None else None
    projections = {f"model.layers.{layer}.{p}.weight"
                   for layer in range(cfg.num_layers) for p in PROJECTIONS}
    scales = {}
    for name in st.names():
        info = st.info(name)
        if name.endswith(".weight_scale"):
            weight = name[:-len("_scale")]
            if (weight not in projections or weight not in st
                    or st.info(weight).dtype != "F8_E4M3"):
                raise ValueError(f"{name}: a weight_scale for a tensor that is not an F8_E4M3 "
                                 "projection weight")
            continue
        if info.dtype != "F8_E4M3":
            continue
        if name not in projections:
            raise ValueError(f"{name} is F8_E4M3; only the 7 projection weights per layer may be")
        if allowed is None:
            raise ValueError(f"{name} is F8_E4M3 but config.json has no quantization_config")
        if len(info.shape) != 2:
            raise ValueError(f"{name}: F8_E4M3 weight must be 2-D [out, in], "
                             f"got {list(info.shape)}")
        sname = name + "_scale"
        if sname not in st:
            raise ValueError(f"{name} is F8_E4M3 but {sname} is missing")
        sinfo = st.info(sname)
        if sinfo.dtype != "F32":
            raise ValueError(f"{sname} must be F32, got {sinfo.dtype}")
        out = info.shape[0]
        if sinfo.shape in ((), (1,)):
            kind = "tensor"
        elif sinfo.shape in ((out, 1), (out,)):
            kind = "channel"
        else:
            raise ValueError(f"{sname} has shape {list(sinfo.shape)}; expected [], [1], "
                             f"[{out}, 1] or [{out}]")
        if kind not in allowed:
            raise ValueError(f"{sname}: {kind} scale but the quantization_config declares "
                             f"{sorted(allowed)}")
        scale = st.float64(sname).reshape(() if kind == "tensor" else (out,)).copy()
        if not np.all(np.isfinite(scale)):
            raise ValueError(f"{sname} has a non-finite scale")
        scales[name] = scale
    return scales


def rope_inv_freq(cfg):
    """inv_freq[i] = theta^(-2i/d), i < d/2, then the checkpoint's rope_scaling, if any."""
    d = cfg.head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    rs = cfg.rope_scaling
    if not rs:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return inv_freq
    if kind == "linear":
        return inv_freq / float(rs["factor"])
    if kind == "llama3":
        # Llama 3.1: frequencies whose wavelength exceeds old_ctx/low_freq_factor are divided by
        # `factor`; those shorter than old_ctx/high_freq_factor are kept; in between the two are
        # interpolated linearly in old_ctx/wavelength.
        factor = float(rs["factor"])
        low = float(rs["low_freq_factor"])
        high = float(rs["high_freq_factor"])
        old_ctx = float(rs["original_max_position_embeddings"])
        wavelen = 2.0 * math.pi / inv_freq
        low_freq_wavelen = old_ctx / low
        high_freq_wavelen = old_ctx / high
        smooth = (old_ctx / wavelen - low) / (high - low)
        interpolated = (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
        out = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        return np.where(medium, interpolated, out)
    raise ValueError(f"rope_scaling type {kind} not supported")


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative x gives the right 0
        return x / (1.0 + np.exp(-x))


def apply_rope(x, cos, sin):
    """HF rotate-half: element i pairs with i + d/2. x [R, heads, d]; cos, sin [R, d/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


class WeightStore:
    """Float64 weights converted on demand; kept while under a memory budget, else re-read.

    Tensors not kept are converted into one reused scratch buffer and applied chunk by chunk of
    rows, so a transient float64 copy never exceeds `chunk_bytes`.
    """

    def __init__(self, st, cache_bytes, chunk_bytes=128 << 20, scales=None):
        self.st = st
        self.scales = scales or {}  # FP8 weight name -> float64 scale (0-d or per row)
        self.cache_bytes = cache_bytes
        self.chunk_bytes = chunk_bytes
        self.cached = {}
        self.cached_total = 0
        self._out = np.empty(0)
        self._scratch = np.empty(0, np.uint32)

    def _buffers(self, n):
        if self._out.size < n:
            self._out = np.empty(n)
            self._scratch = np.empty(n, np.uint32)
        return self._out, self._scratch

    def _float64(self, name, rows=None, out=None, scratch=None):
        """The stored values as float64; an FP8 weight times its scale (exact in float64: at most
        4 significant bits times a float32's 24)."""
        w = self.st.float64(name, rows, out, scratch)
        scale = self.scales.get(name)
        if scale is not None:
            if scale.ndim:
                s = scale if rows is None else scale[rows]
                w *= s[:, None]
            else:
                w *= scale
        return w

    def get(self, name):
        """The whole tensor as float64, cached if the budget allows (small tensors: always)."""
        w = self.cached.get(name)
        if w is None:
            w = self._float64(name)
            if self.cached_total + w.nbytes <= self.cache_bytes or w.nbytes <= 1 << 20:
                self.cached[name] = w
                self.cached_total += w.nbytes
        return w

    def linear(self, x, name):
        """x @ W.T for a HF [out, in] weight."""
        w = self.cached.get(name)
        if w is not None:
            return x @ w.T
        rows, cols = self.st.shape(name)
        if self.cached_total + 8 * rows * cols <= self.cache_bytes:
            return x @ self.get(name).T
        step = max(1, min(rows, self.chunk_bytes // (8 * cols)))
        out_buf, scratch = self._buffers(step * cols)
        out = np.empty((x.shape[0], rows))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            chunk = self._float64(name, slice(r0, r1), out_buf, scratch)
            out[:, r0:r1] = x @ chunk.T
        return out


class Sequence:
    """One prompt's float64 KV cache: per layer [kv_heads, capacity, head_dim]."""

    def __init__(self, cfg, capacity):
        shape = (cfg.num_kv_heads, capacity, cfg.head_dim)
        self.k = [np.empty(shape) for _ in range(cfg.num_layers)]
        self.v = [np.empty(shape) for _ in range(cfg.num_layers)]
        self.length = 0


class LlamaReference:
    def __init__(self, model_dir, cache_gb=2.0):
        self.st = SafetensorsDir(model_dir)
        self.cfg = LlamaConfig(self.st.config)
        self.weights = WeightStore(self.st, int(cache_gb * (1 << 30)),
                                   scales=fp8_projection_scales(self.st, self.cfg))
        self.inv_freq = rope_inv_freq(self.cfg)
        self.lm_head = "lm_head.weight"
        if self.lm_head not in self.st:
            if not self.cfg.tie_word_embeddings:
                raise ValueError("lm_head.weight missing and tie_word_embeddings is false")
            self.lm_head = "model.embed_tokens.weight"

    def _attention(self, q, seq, layer, k, v):
        """q [T, H, d]; k, v [T, KV, d] for positions seq.length .. seq.length+T-1."""
        cfg = self.cfg
        t = q.shape[0]
        p0 = seq.length
        s = p0 + t
        seq.k[layer][:, p0:s] = k.transpose(1, 0, 2)
        seq.v[layer][:, p0:s] = v.transpose(1, 0, 2)
        keys, values = seq.k[layer][:, :s], seq.v[layer][:, :s]  # [KV, S, d]
        group = cfg.num_heads // cfg.num_kv_heads
        # Query head h reads KV head h // group: heads are laid out [KV, group].
        qg = q.transpose(1, 0, 2).reshape(cfg.num_kv_heads, group * t, cfg.head_dim)
        scores = (qg @ keys.transpose(0, 2, 1)) * (1.0 / math.sqrt(cfg.head_dim))
        scores = scores.reshape(cfg.num_kv_heads, group, t, s)
        future = np.arange(s)[None, :] > (p0 + np.arange(t))[:, None]  # [T, S]
        scores[..., future] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = probs.reshape(cfg.num_kv_heads, group * t, s) @ values  # [KV, G*T, d]
        return out.reshape(cfg.num_heads, t, cfg.head_dim).transpose(1, 0, 2)

    def forward(self, seqs, chunks):
        """Appends chunks[i] (token ids) to seqs[i]; returns the last position's logits [n, V]."""
        cfg, w = self.cfg, self.weights
        lengths = [len(c) for c in chunks]
        ids = np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks])
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError("token id out of range")
        pos = np.concatenate([np.arange(s.length, s.length + n) for s, n in zip(seqs, lengths)])
        angles = pos[:, None].astype(np.float64) * self.inv_freq[None, :]
        cos, sin = np.cos(angles), np.sin(angles)
        x = self.st.float64("model.embed_tokens.weight", ids)
        rows = x.shape[0]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        hd, nh, nkv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        for layer in range(cfg.num_layers):
            p = f"model.layers.{layer}."
            h = rms_norm(x, w.get(p + "input_layernorm.weight"), cfg.rms_norm_eps)
            q = apply_rope(w.linear(h, p + "self_attn.q_proj.weight").reshape(rows, nh, hd), cos, sin)
            k = apply_rope(w.linear(h, p + "self_attn.k_proj.weight").reshape(rows, nkv, hd), cos, sin)
            v = w.linear(h, p + "self_attn.v_proj.weight").reshape(rows, nkv, hd)
            attn = np.empty((rows, nh, hd))
            for i, seq in enumerate(seqs):
                a, b = bounds[i], bounds[i + 1]
                attn[a:b] = self._attention(q[a:b], seq, layer, k[a:b], v[a:b])
            x = x + w.linear(attn.reshape(rows, nh * hd), p + "self_attn.o_proj.weight")
            h = rms_norm(x, w.get(p + "post_attention_layernorm.weight"), cfg.rms_norm_eps)
            gate = w.linear(h, p + "mlp.gate_proj.weight")
            up = w.linear(h, p + "mlp.up_proj.weight")
            x = x + w.linear(silu(gate) * up, p + "mlp.down_proj.weight")
        for seq, n in zip(seqs, lengths):
            seq.length += n
        last = x[bounds[1:] - 1]
        last = rms_norm(last, w.get("model.norm.weight"), cfg.rms_norm_eps)
        return w.linear(last, self.lm_head)

    def score(self, context, continuation):
        """Log-likelihood of `continuation` after `context` (ids), feeding one token at a time:
        per continuation token (log-softmax at it, argmax, margin of the argmax over the
        runner-up)."""
        if not context or not continuation:
            raise ValueError("empty context or continuation")
        seq = Sequence(self.cfg, len(context) + len(continuation))
        out, chunk = [], list(context)
        for t in continuation:
            row = self.forward([seq], [chunk])[0]
            top = row.max()
            logprob = row[t] - (top + np.log(np.exp(row - top).sum()))
            best = int(np.argmax(row))
            rest = row.copy()
            rest[best] = -np.inf
            out.append((float(logprob), best, float(top - rest.max())))
            chunk = [t]
        return out

    def generate(self, prompts, max_new_tokens, top_k=10):
        """Greedy continuation of every prompt (run together as one batch); one dict each."""
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        t0 = time.time()
        seqs = [Sequence(self.cfg, len(p) + max_new_tokens) for p in prompts]
        results = [{"prompt_ids": list(map(int, p)), "generated_ids": [], "step_top2": [],
                    "step_margins": [], "first_step_top_logits": []} for p in prompts]
        chunks = [list(p) for p in prompts]
        for step in range(max_new_tokens):
            logits = self.forward(seqs, chunks)
            chunks = []
            for res, row in zip(results, logits):
                first = int(np.argmax(row))  # first maximum: ties go to the lowest id
                top1 = float(row[first])
                row2 = row.copy()
                row2[first] = -np.inf
                second = int(np.argmax(row2))
                top2 = float(row2[second])
                res["generated_ids"].append(first)
                res["step_top2"].append([first, top1, second, top2])
                res["step_margins"].append(top1 - top2)
                if step == 0:
                    order = np.lexsort((np.arange(row.shape[0]), -row))[:top_k]
                    res["first_step_top_logits"] = [[int(i), float(row[i])] for i in order]
                chunks.append([first])
        elapsed = time.time() - t0
        for res in results:
            res["seconds_batch"] = elapsed
        return results


def parse_ids(text):
    return [int(t) for t in text.replace(" ", "").split(",") if t]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory (config.json, safetensors)")
    ap.add_argument("--prompt-ids", action="append", required=True,
                    help="comma-separated token ids; repeat for a batch of prompts")
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--top", type=int, default=10, help="first-step top-K logits to report")
    ap.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    ap.add_argument("--cache-gb", type=float, default=2.0,
                    help="float64 weights kept between steps (the rest is re-converted)")
    args = ap.parse_args(argv)
    if args.max_new_tokens < 1:
        ap.error("--max-new-tokens must be >= 1")
    ref = LlamaReference(args.model, cache_gb=args.cache_gb)
    results = ref.generate([parse_ids(p) for p in args.prompt_ids], args.max_new_tokens, args.top)
    for res in results:
        if args.json:
            print(json.dumps(res))
        else:
            print("prompt_ids:", ",".join(map(str, res["prompt_ids"])))
            print("generated_ids:", ",".join(map(str, res["generated_ids"])))
            print("min margin: %.6g" % min(res["step_margins"]))
            print("first-step top:", " ".join("%d:%.6f" % (i, l)
                                              for i, l in res["first_step_top_logits"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
