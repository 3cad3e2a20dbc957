#!/usr/bin/python3
"""Unit tests of the reference itself, on micro models written here (no test model needed).

- the safetensors reader (single file, sharded index, bf16/f32/f16 decoding, bad headers);
- the vectorized, KV-cached, batched forward against a deliberately naive loop implementation
  (explicit per-head loops, repeated KV heads, no cache) on a random GQA micro model;
- chunked prefill, batching and low-memory weight streaming give the same logits;
- llama3 rope_scaling properties.
Last line: "N passed, M failed"; exit status 1 on any failure.
"""

import json
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_reference as lr  # noqa: E402
from safetensors_np import SafetensorsDir, bf16_bits_to_float64  # noqa: E402
from test_runner import run_tests  # noqa: E402


def to_bf16_bits(x):
    """float64 -> bf16 bits, round to nearest even via float32."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, tensors, pad_header=True):
    """tensors: {name: (dtype, array)} with dtype one of BF16 (array of bits), F16, F32."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, arr) in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hj = json.dumps(header).encode()
    if pad_header:
        hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


MICRO = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=48, rms_norm_eps=1e-5, rope_theta=10000.0,
             hidden_act="silu", tie_word_embeddings=False)


def make_micro_model(dirname, seed=0, tied=False, sharded=False, cfg_extra=None):
    rng = np.random.default_rng(seed)
    cfg = dict(MICRO, tie_word_embeddings=tied, **(cfg_extra or {}))
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not tied:
        shapes["lm_head.weight"] = (v, h)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    values, tensors = {}, {}
    for n, s in shapes.items():
        x = 1 + 0.1 * rng.standard_normal(s) if "norm" in n else rng.standard_normal(s) / math.sqrt(s[-1]) * 2
        bits = to_bf16_bits(x)
        values[n] = bf16_bits_to_float64(bits)
        tensors[n] = ("BF16", bits)
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(cfg, f)
    names = sorted(tensors)
    if sharded:
        parts = [names[:len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for k, part in enumerate(parts):
            fname = f"model-{k + 1:05d}-of-00002.safetensors"
            write_safetensors(os.path.join(dirname, fname), {n: tensors[n] for n in part}, k == 0)
            weight_map.update({n: fname for n in part})
        with open(os.path.join(dirname, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    else:
        write_safetensors(os.path.join(dirname, "model.safetensors"), tensors)
    return cfg, values


def naive_logits(cfg, wts, ids):
    """All-position logits, written as plainly as possible: loops, no cache, repeated KV heads."""
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = h // nh
    eps = cfg["rms_norm_eps"]
    lm = wts["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else wts["lm_head.weight"]

    def norm(vec, w):
        return vec / math.sqrt(sum(float(t) * float(t) for t in vec) / len(vec) + eps) * w

    def rope(vec, pos):
        out = vec.copy()
        for i in range(d // 2):
            ang = pos * cfg["rope_theta"] ** (-2.0 * i / d)
            a, b = vec[i], vec[i + d // 2]
            out[i] = a * math.cos(ang) - b * math.sin(ang)
            out[i + d // 2] = b * math.cos(ang) + a * math.sin(ang)
        return out

    xs = [wts["model.embed_tokens.weight"][t].copy() for t in ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        ks, vs, qs = [], [], []
        for pos, x in enumerate(xs):
            y = norm(x, wts[p + "input_layernorm.weight"])
            q = wts[p + "self_attn.q_proj.weight"] @ y
            k = wts[p + "self_attn.k_proj.weight"] @ y
            v = wts[p + "self_attn.v_proj.weight"] @ y
            qs.append([rope(q[j * d:(j + 1) * d], pos) for j in range(nh)])
            ks.append([rope(k[j * d:(j + 1) * d], pos) for j in range(nkv)])
            vs.append([v[j * d:(j + 1) * d] for j in range(nkv)])
        new = []
        for pos, x in enumerate(xs):
            heads = []
            for j in range(nh):
                kvh = j // (nh // nkv)
                sc = [float(qs[pos][j] @ ks[t][kvh]) / math.sqrt(d) for t in range(pos + 1)]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                heads.append(sum(e[t] / sum(e) * vs[t][kvh] for t in range(pos + 1)))
            x = x + wts[p + "self_attn.o_proj.weight"] @ np.concatenate(heads)
            y = norm(x, wts[p + "post_attention_layernorm.weight"])
            g = wts[p + "mlp.gate_proj.weight"] @ y
            u = wts[p + "mlp.up_proj.weight"] @ y
            act = np.array([gi / (1 + math.exp(-gi)) * ui for gi, ui in zip(g, u)])
            new.append(x + wts[p + "mlp.down_proj.weight"] @ act)
        xs = new
    return np.array([lm @ norm(x, wts["model.norm.weight"]) for x in xs])


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def assert_close(a, b, tol=1e-10, what=""):
    err = np.max(np.abs(np.asarray(a) - np.asarray(b)) / (1 + np.abs(np.asarray(b))))
    assert err <= tol, f"{what}: max rel err {err:.3g} > {tol}"


@test
def bf16_decoding_exact():
    bits = np.array([0x3F80, 0xC000, 0x0001, 0x7F80, 0x3FC0, 0x8000], dtype=np.uint16)
    got = bf16_bits_to_float64(bits)
    want = [1.0, -2.0, 2.0 ** -133, math.inf, 1.5, -0.0]
    assert list(got) == want, got
    assert math.copysign(1, got[5]) == -1


@test
def reader_dtypes_and_metadata(tmp):
    path = os.path.join(tmp, "model.safetensors")
    a32 = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    a16 = np.array([0.5, -3.0, 65504.0], dtype=np.float16)
    write_safetensors(path, {"a": ("F32", a32), "b": ("F16", a16), "c": ("BF16", to_bf16_bits([1.0, 3.0]))},
                      pad_header=False)  # unaligned data section on purpose
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump({"x": 1}, f)
    st = SafetensorsDir(tmp)
    assert st.names() == ["a", "b", "c"]
    assert st.shape("a") == (2, 3)
    assert np.array_equal(st.float64("a"), a32.astype(np.float64))
    assert np.array_equal(st.float64("a", [1]), a32[[1]].astype(np.float64))
    assert np.array_equal(st.float64("b"), a16.astype(np.float64))
    assert list(st.float64("c")) == [1.0, 3.0]


@test
def reader_rejects_bad_offsets(tmp):
    path = os.path.join(tmp, "model.safetensors")
    hj = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"\0" * 16)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        f.write("{}")
    try:
        SafetensorsDir(tmp)
    except ValueError:
        return
    raise AssertionError("byte range not matching the shape was accepted")


@test
def forward_matches_naive_loops(tmp):
    cfg, wts = make_micro_model(tmp, seed=1, sharded=True)
    ids = [5, 17, 3, 60, 0, 22, 22, 41, 9]
    want = naive_logits(cfg, wts, ids)
    ref = lr.LlamaReference(tmp)
    seq = lr.Sequence(ref.cfg, len(ids))
    got = [ref.forward([seq], [ids[:4]])[0]]  # prefill of 4, then 1, 3, 1
    for chunk in ([ids[4]], ids[5:8], [ids[8]]):
        got.append(ref.forward([seq], [chunk])[0])
    for g, pos in zip(got, [3, 4, 7, 8]):
        assert_close(g, want[pos], 1e-12, f"position {pos}")


@test
def batched_equals_separate_and_streaming(tmp):
    cfg, wts = make_micro_model(tmp, seed=2, tied=True)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [50, 40], [9, 9, 9, 9]]
    ref = lr.LlamaReference(tmp)
    together = ref.generate(prompts, 6, top_k=5)
    for p, t in zip(prompts, together):
        alone = lr.LlamaReference(tmp, cache_gb=0).generate([p], 6, top_k=5)[0]
        assert alone["generated_ids"] == t["generated_ids"]
        assert_close(alone["step_margins"], t["step_margins"], 1e-12, "margins")
    # Streaming: nothing cached, every weight applied in chunks of a few rows.
    small = lr.LlamaReference(tmp, cache_gb=0)
    small.weights.chunk_bytes = 8 * cfg["hidden_size"] * 7
    streamed = small.generate(prompts, 6, top_k=5)
    for a, b in zip(streamed, together):
        assert a["generated_ids"] == b["generated_ids"]
        assert [i for i, _ in a["first_step_top_logits"]] == [i for i, _ in b["first_step_top_logits"]]
        assert_close([x for _, x in a["first_step_top_logits"]], [x for _, x in b["first_step_top_logits"]])
    # Greedy ids really are the argmax of the naive logits.
    want = naive_logits(cfg, wts, prompts[1] + together[1]["generated_ids"][:-1])
    assert [int(np.argmax(r)) for r in want[len(prompts[1]) - 1:]] == together[1]["generated_ids"]


@test
def top_k_ties_go_to_lowest_id(tmp):
    make_micro_model(tmp, seed=3)
    ref = lr.LlamaReference(tmp)
    # Make two lm_head rows identical: their logits tie exactly.
    ref.weights.cached["lm_head.weight"] = ref.st.float64("lm_head.weight").copy()
    lm = ref.weights.cached["lm_head.weight"]
    res = ref.generate([[1, 2, 3]], 1, top_k=61)[0]
    best = res["generated_ids"][0]
    lm[7] = lm[best]
    lm[50] = lm[best]
    res = ref.generate([[1, 2, 3]], 1, top_k=61)[0]
    low = min(7, best)
    assert res["generated_ids"] == [low], (res["generated_ids"], best)
    assert res["step_margins"] == [0.0]
    ids = [i for i, _ in res["first_step_top_logits"][:3]]
    assert ids == sorted({7, 50, best}), ids


@test
def llama3_rope_scaling():
    cfg = lr.LlamaConfig(dict(MICRO, hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
                              rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8192}))
    scaled = lr.rope_inv_freq(cfg)
    cfg.rope_scaling = None
    base = lr.rope_inv_freq(cfg)
    assert len(base) == 64 and base[0] == 1.0
    assert_close(base[1], 500000.0 ** (-2 / 128), 1e-15)
    wavelen = 2 * math.pi / base
    high = wavelen < 8192 / 4.0
    low = wavelen > 8192 / 1.0
    assert high.any() and low.any() and (~high & ~low).any()
    assert np.array_equal(scaled[high], base[high])
    assert_close(scaled[low], base[low] / 8.0, 1e-15)
    mid = ~high & ~low
    ratio = scaled[mid] / base[mid]
    assert np.all((ratio > 1 / 8.0) & (ratio < 1.0)) and np.all(np.diff(ratio) < 0)
    # Linear interpolation in old_ctx / wavelength between the two regimes.
    s = (8192 / wavelen[mid] - 1.0) / 3.0
    assert_close(ratio, (1 - s) / 8.0 + s, 1e-14)


def main():
    return run_tests(TESTS)


if __name__ == "__main__":
    sys.exit(main())
