#!/usr/bin/python3
"""Tests of the FP8 (E4M3) side of the reference: decoding, the quantizer, FP8 checkpoints.

  test_fp8_reference.py
      unit tests on micro models written here (CTest reference_fp8_units);
  test_fp8_reference.py --quantize-tiny SRC DST_CHANNEL DST_TENSOR
      runs the quantizer CLI on SRC twice (per channel; per tensor with --input-scale) and checks
      both outputs (CTest reference_fp8_quantize_tiny, which makes the tiny FP8 test models).
Last line: "N passed, M failed"; exit status 1 on any failure.

The expectations here are derived separately from the code under test where it matters: E4M3
values are also built from float32 bit patterns, and rounding is also checked by brute force
(distance to all 254 finite values).
"""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_reference as lr  # noqa: E402
import quantize_fp8 as qf  # noqa: E402
from safetensors_np import E4M3_TABLE, SafetensorsDir, e4m3_to_float64, read_header  # noqa: E402
from test_reference_units import make_micro_model, naive_logits, write_safetensors  # noqa: E402
from test_runner import run_tests  # noqa: E402

FINITE_CODES = np.array([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=np.uint8)

TINY_RANDOM = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, intermediate_size=96)

CHANNEL_CONFIG = {"quant_method": "compressed-tensors", "format": "float-quantized",
                  "config_groups": {"group_0": {"targets": ["Linear"],
                                                "weights": {"num_bits": 8, "type": "float",
                                                            "strategy": "channel",
                                                            "symmetric": True, "dynamic": False},
                                                "input_activations": None}},
                  "ignore": ["lm_head"]}
TENSOR_CONFIG = {"quant_method": "fp8", "activation_scheme": "dynamic"}


def e4m3_via_float32_bits(code):
    """Second derivation of an E4M3 value: normal numbers rebias the exponent (7 -> 127) and
    move the 3 mantissa bits to the top of float32's 23; subnormals are m * 2^-9."""
    sign, exp, man = code >> 7, (code >> 3) & 0xF, code & 7
    if exp == 0:
        v = man * 2.0 ** -9
        return -v if sign else v
    bits = (sign << 31) | ((exp - 7 + 127) << 23) | (man << 20)
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def brute_round(x):
    """E4M3 codes of float64 values x by exhaustive search: saturate beyond 448, else the
    nearest of the 254 finite values, ties to the even code, zero keeping x's sign."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    vals = np.array([e4m3_via_float32_bits(int(c)) for c in FINITE_CODES])
    out = np.empty(x.size, np.uint8)
    for i0 in range(0, x.size, 4096):
        xs = x[i0:i0 + 4096]
        d = np.abs(xs[:, None] - vals[None, :])
        best = d.min(axis=1, keepdims=True)
        cand = d == best
        # Among equally near codes: the even one; between +0 and -0 the one with x's sign.
        tie = cand.sum(axis=1, keepdims=True) > 1
        pick = np.where(tie, cand & ((FINITE_CODES & 1) == 0)[None, :], cand)
        sign_ok = (FINITE_CODES >> 7)[None, :] == np.signbit(xs)[:, None].astype(np.uint8)
        pick = np.where(pick.sum(axis=1, keepdims=True) > 1, pick & sign_ok, pick)
        assert np.all(pick.sum(axis=1) == 1), "brute force found no unique code"
        out[i0:i0 + 4096] = FINITE_CODES[np.argmax(pick, axis=1)]
    sat = np.abs(x) > 448.0
    out[sat] = np.where(np.signbit(x[sat]), 0xFE, 0x7E)
    return out


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def expect_refusal(fn, *words):
    try:
        fn()
    except ValueError as e:
        msg = str(e)
        assert all(w in msg for w in words), f"refused with {msg!r}, expected words {words}"
        return
    raise AssertionError(f"not refused (expected an error mentioning {words})")


# ---------------------------------------------------------------------------------------------
# decoding and rounding


@test
def decode_known_codes():
    codes = np.array([0x38, 0x7E, 0x01, 0x08, 0xB8, 0x00, 0x80, 0x07, 0x40, 0xFE], np.uint8)
    want = [1.0, 448.0, 2.0 ** -9, 2.0 ** -6, -1.0, 0.0, -0.0, 7 * 2.0 ** -9, 2.0, -448.0]
    got = e4m3_to_float64(codes)
    assert got.dtype == np.float64 and list(got) == want, got
    assert not np.signbit(got[5]) and np.signbit(got[6])
    assert np.isnan(e4m3_to_float64(np.array([0x7F, 0xFF], np.uint8))).all()
    assert np.isnan(E4M3_TABLE).sum() == 2


@test
def decode_table_matches_float32_bit_construction():
    for c in FINITE_CODES:
        want = e4m3_via_float32_bits(int(c))
        got = E4M3_TABLE[c]
        assert got == want and np.signbit(got) == np.signbit(want), (hex(c), got, want)
    pos = E4M3_TABLE[:0x7F]
    assert np.all(np.diff(pos) > 0) and pos.max() == 448.0 and pos[1] == 2.0 ** -9
    assert np.array_equal(E4M3_TABLE[0x80:0xFF], -pos)


@test
def every_finite_code_round_trips():
    vals = E4M3_TABLE[FINITE_CODES]
    for dt in (np.float64, np.float32):
        got = qf.e4m3_round(vals.astype(dt))
        assert np.array_equal(got, FINITE_CODES), np.nonzero(got != FINITE_CODES)


@test
def ties_go_to_even():
    cases = {1.0625: 0x38, 1.1875: 0x3A, 1.9375: 0x40, 1.5 * 2 ** -9: 0x02, 0.5 * 2 ** -9: 0x00,
             2.5 * 2 ** -9: 0x02, 3.5 * 2 ** -9: 0x04, 432.0: 0x7E, 400.0: 0x7C,
             15 * 2 ** -10: 0x08}  # between 7*2^-9 (0x07) and 2^-6 (0x08)
    for x, code in cases.items():
        for dt in (np.float64, np.float32):
            got = int(qf.e4m3_round(np.array([x], dt))[0])
            assert got == code, (x, dt, hex(got), hex(code))
            got = int(qf.e4m3_round(np.array([-x], dt))[0])
            assert got == code | 0x80, (-x, dt, hex(got))
    # Every midpoint between neighbours goes to the even code; one float32 ulp off, to the nearer.
    pos = E4M3_TABLE[:0x7F]
    mids = ((pos[:-1] + pos[1:]) / 2).astype(np.float32)
    lo = np.arange(126)
    assert np.array_equal(qf.e4m3_round(mids), np.where(lo & 1, lo + 1, lo).astype(np.uint8))
    assert np.array_equal(qf.e4m3_round(np.nextafter(mids, np.float32(0))), lo.astype(np.uint8))
    assert np.array_equal(qf.e4m3_round(np.nextafter(mids, np.float32(1e9))),
                          (lo + 1).astype(np.uint8))


@test
def saturation_zero_sign_and_nan():
    x = np.array([460.0, -460.0, 448.0001, 1e30, -1e30, 464.0, 479.0, 0.0, -0.0, -1e-5, 1e-30])
    want = [0x7E, 0xFE, 0x7E, 0x7E, 0xFE, 0x7E, 0x7E, 0x00, 0x80, 0x80, 0x00]
    assert list(qf.e4m3_round(x)) == want, [hex(c) for c in qf.e4m3_round(x)]
    assert list(qf.e4m3_round(x.astype(np.float32))) == want
    expect_refusal(lambda: qf.e4m3_round(np.array([1.0, np.nan])), "NaN")
    expect_refusal(lambda: qf.e4m3_round(np.array([np.inf])), "NaN")


@test
def rounding_matches_brute_force():
    rng = np.random.default_rng(7)
    n = 40000
    mag = 2.0 ** rng.uniform(-16, 10, n)  # float32 subnormal-free; below, around and above E4M3
    x = (np.where(rng.random(n) < 0.5, -1, 1) * mag).astype(np.float32)
    # plus bf16-like values (short mantissas) that hit exact ties often
    bf = rng.integers(-2 ** 8, 2 ** 8, 4000) * 2.0 ** rng.integers(-16, 2, 4000)
    bf = bf.astype(np.float32)
    x = np.concatenate([x, bf, [np.float32(2.0 ** -140), np.float32(-(2.0 ** -149))]])
    got = qf.e4m3_round(x)
    want = brute_round(x.astype(np.float64))
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(float(x[i]), hex(got[i]), hex(want[i])) for i in bad[:5]]


@test
def scales_are_float32_as_specified():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((6, 37)) * 0.05).astype(np.float32)
    w[2] = 0.0
    w[4, 5] = -3.0  # a negative amax
    s = qf.scales_for(w, "channel")
    assert s.dtype == np.float32 and s.shape == (6,)
    for j in range(6):
        amax = np.float32(np.max(np.abs(w[j])))
        want = np.float32(1.0) if amax == 0 else np.float32(amax) / np.float32(448.0)
        assert s[j] == want and isinstance(want, np.float32), (j, s[j], want)
    assert s[2] == 1.0 and s[4] == np.float32(3.0) / np.float32(448.0)
    t = qf.scales_for(w, "tensor")
    assert t.dtype == np.float32 and t.shape == () and t == np.float32(3.0) / np.float32(448.0)
    assert qf.scales_for(np.zeros((3, 4), np.float32), "tensor") == 1.0
    # Codes are the rounding of the float32 quotient; each row's amax lands on +-448.
    for scale in (s, t):
        codes = qf.quantize_rows(w, scale)
        quot = w / (scale[:, None] if scale.ndim else scale)
        assert quot.dtype == np.float32
        assert np.array_equal(codes, brute_round(quot.astype(np.float64)).reshape(w.shape))
    codes = qf.quantize_rows(w, s)
    assert codes[4, 5] == 0xFE and np.all(codes[2] == 0)
    for j in (0, 1, 3, 5):
        k = np.argmax(np.abs(w[j]))
        assert codes[j, k] & 0x7F == 0x7E, (j, hex(codes[j, k]))


# ---------------------------------------------------------------------------------------------
# checkpoints


def quantize(src, dst, strategy, input_scale=False, chunk_elems=1 << 22):
    return qf.quantize_dir(src, dst, strategy, input_scale, chunk_elems=chunk_elems)


def dequantized(st_q, name):
    """decode(codes) * scale, derived here from the stored bytes with the bit-built values."""
    codes = np.asarray(st_q.stored(name))
    table = np.array([e4m3_via_float32_bits(c) if c not in (0x7F, 0xFF) else math.nan
                      for c in range(256)])
    scale = np.asarray(st_q.stored(name + "_scale"), dtype=np.float64)
    scale = scale.reshape(-1, 1) if scale.size > 1 else scale.reshape(())
    return table[codes] * scale


def projection_names(cfg):
    return [f"model.layers.{i}.{p}.weight" for i in range(cfg["num_hidden_layers"])
            for p in lr.PROJECTIONS]


@test
def writer_layout_is_valid(tmp):
    path = os.path.join(tmp, "x.safetensors")
    entries = qf.ordered([
        ("b", "F8_E4M3", (3, 5), qf._const_producer(np.arange(15, dtype=np.uint8).reshape(3, 5))),
        ("a", "BF16", (3,), qf._const_producer(np.array([0x3F80, 0x4000, 0xC000], "<u2"))),
        ("s", "F32", (), qf._const_producer(np.array(0.5, "<f4"))),
        ("c", "F32", (3, 1), qf._const_producer(np.array([[1.0], [2.0], [4.0]], "<f4")))])
    size = qf.write_safetensors_stream(path, entries, {"format": "pt"})
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    assert n % 8 == 0 and header["__metadata__"] == {"format": "pt"}
    assert os.path.getsize(path) == 8 + n + size
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), spans  # no holes
    for k, v in header.items():
        if k != "__metadata__":
            assert v["data_offsets"][0] % qf._ITEMSIZE[v["dtype"]] == 0, (k, v)
    tensors, _ = read_header(path)
    assert tensors["s"].shape == () and tensors["b"].dtype == "F8_E4M3"


@test
def quantized_channel_forward_is_exact(tmp):
    src, dst = os.path.join(tmp, "bf16"), os.path.join(tmp, "fp8")
    cfg, wts = make_micro_model(src, seed=11, cfg_extra=TINY_RANDOM)
    for fname in ("tokenizer.json", "generation_config.json"):
        with open(os.path.join(src, fname), "w") as f:
            f.write('{"copied": "%s"}' % fname)
    t0 = time.time()
    qc = quantize(src, dst, "channel", chunk_elems=1000)  # several row chunks per weight
    elapsed = time.time() - t0
    assert qc == CHANNEL_CONFIG
    with open(os.path.join(dst, "config.json")) as f:
        out_cfg = json.load(f)
    assert out_cfg == dict(cfg, quantization_config=CHANNEL_CONFIG)
    for fname in ("tokenizer.json", "generation_config.json"):
        with open(os.path.join(src, fname)) as a, open(os.path.join(dst, fname)) as b:
            assert a.read() == b.read()
    assert not os.path.exists(os.path.join(dst, "model.safetensors.index.json"))
    st_src, st_q = SafetensorsDir(src), SafetensorsDir(dst)
    projections = projection_names(cfg)
    assert set(st_q.names()) == set(st_src.names()) | {n + "_scale" for n in projections}
    deq = {}
    for n in st_src.names():
        if n not in projections:
            assert st_q.info(n).dtype == "BF16"
            assert np.array_equal(st_q.stored(n), st_src.stored(n)), n
            continue
        info, sinfo = st_q.info(n), st_q.info(n + "_scale")
        assert info.dtype == "F8_E4M3" and info.shape == st_src.shape(n)
        assert sinfo.dtype == "F32" and sinfo.shape == (info.shape[0], 1)
        w32 = wts[n].astype(np.float32)
        assert np.array_equal(w32.astype(np.float64), wts[n])  # bf16 -> float32 exactly
        scale = np.asarray(st_q.stored(n + "_scale"))[:, 0]
        amax = np.max(np.abs(w32), axis=1)
        assert np.array_equal(scale, np.where(amax == 0, np.float32(1), amax / np.float32(448)))
        want_codes = brute_round((w32 / scale[:, None]).astype(np.float64)).reshape(info.shape)
        assert np.array_equal(np.asarray(st_q.stored(n)), want_codes), n
        deq[n] = dequantized(st_q, n)
        # Quantization error: at most half a step, 2^-4 relative (normal) or 2^-10 * scale.
        err = np.abs(deq[n] - wts[n])
        # (The float32 quotient's own rounding, 2^-24 relative, fits in the slack of the bound.)
        bound = np.maximum(np.abs(wts[n]) * 2.0 ** -4,
                           scale[:, None].astype(np.float64) * 2.0 ** -10)
        assert np.all(err <= bound), n
        assert np.max(err) > 0
    ref = lr.LlamaReference(dst)
    assert sorted(ref.weights.scales) == sorted(projections)
    for n in projections:
        assert np.array_equal(ref.weights.get(n), deq[n]), n
    full = {n: (deq[n] if n in deq else wts[n]) for n in wts}
    ids = [5, 299, 17, 0, 123, 123, 64, 250]
    want = naive_logits(cfg, full, ids)
    seq = lr.Sequence(ref.cfg, len(ids))
    got = [ref.forward([seq], [ids[:5]])[0], ref.forward([seq], [ids[5:]])[0]]
    for g, pos in zip(got, [4, 7]):
        err = np.max(np.abs(g - want[pos]) / (1 + np.abs(want[pos])))
        assert err <= 1e-12, (pos, err)
    # Streaming rows (nothing cached, chunks of 5 rows): the row-slice path applies row scales.
    small = lr.LlamaReference(dst, cache_gb=0)
    small.weights.chunk_bytes = 8 * cfg["intermediate_size"] * 5
    streamed = small.forward([lr.Sequence(small.cfg, len(ids))], [ids])[0]
    err = np.max(np.abs(streamed - want[-1]) / (1 + np.abs(want[-1])))
    assert err <= 1e-12, err
    # The unquantized model still has no scales, and its logits differ (quantization did happen).
    plain = lr.LlamaReference(src)
    assert plain.weights.scales == {}
    diff = plain.forward([lr.Sequence(plain.cfg, len(ids))], [ids])[0] - want[-1]
    assert 0 < np.max(np.abs(diff))
    print(f"     (quantized {len(projections)} projections in {elapsed:.3f} s)")


@test
def quantized_tensor_sharded_with_input_scale(tmp):
    src = os.path.join(tmp, "bf16")
    cfg, wts = make_micro_model(src, seed=12, sharded=True, cfg_extra=TINY_RANDOM)
    with_is, without = os.path.join(tmp, "fp8-is"), os.path.join(tmp, "fp8")
    assert quantize(src, with_is, "tensor", input_scale=True) == TENSOR_CONFIG
    assert quantize(src, without, "tensor") == TENSOR_CONFIG
    with open(os.path.join(src, "model.safetensors.index.json")) as f:
        src_map = json.load(f)["weight_map"]
    with open(os.path.join(with_is, "model.safetensors.index.json")) as f:
        index = json.load(f)
    projections = projection_names(cfg)
    extra = {n[:-len("weight")] + s for n in projections for s in ("weight_scale", "input_scale")}
    assert set(index["weight_map"]) == set(src_map) | extra
    for n, fname in index["weight_map"].items():
        base = n if n in src_map else n[:n.rindex(".")] + ".weight"
        assert fname == src_map[base], n  # same shard as the weight it belongs to
    st = SafetensorsDir(with_is)
    total = sum(st.info(n).end - st.info(n).begin for n in st.names())
    assert index["metadata"]["total_size"] == total
    for n in projections:
        sname, iname = n + "_scale", n[:-len("weight")] + "input_scale"
        assert st.info(sname).shape == () and st.info(sname).dtype == "F32"
        assert st.info(iname).shape == () and float(st.stored(iname)) == 1.0
        amax = np.max(np.abs(wts[n].astype(np.float32)))
        assert st.stored(sname) == amax / np.float32(448)
    deq = {n: dequantized(st, n) for n in projections}
    ref = lr.LlamaReference(with_is)
    ids = [1, 2, 3, 290, 7]
    want = naive_logits(cfg, {n: deq.get(n, w) for n, w in wts.items()}, ids)[-1]
    got = ref.forward([lr.Sequence(ref.cfg, len(ids))], [ids])[0]
    assert np.max(np.abs(got - want) / (1 + np.abs(want))) <= 1e-12
    ref2 = lr.LlamaReference(without)
    assert np.array_equal(got, ref2.forward([lr.Sequence(ref2.cfg, len(ids))], [ids])[0])


def rewrite(src, dst, cfg_update=None, tensors_update=None, drop=()):
    """Copies single-file checkpoint src to dst with config / tensors changed."""
    st = SafetensorsDir(src)
    tensors = {n: (st.info(n).dtype, np.array(st.stored(n))) for n in st.names() if n not in drop}
    tensors.update(tensors_update or {})
    os.makedirs(dst)
    write_safetensors(os.path.join(dst, "model.safetensors"), tensors)
    cfg = dict(st.config)
    for k, v in (cfg_update or {}).items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


@test
def scale_shape_variants_accepted(tmp):
    src = os.path.join(tmp, "bf16")
    cfg, _ = make_micro_model(src, seed=13, cfg_extra=TINY_RANDOM)
    ch, te = os.path.join(tmp, "ch"), os.path.join(tmp, "te")
    quantize(src, ch, "channel")
    quantize(src, te, "tensor", input_scale=True)
    ids = [9, 8, 7, 6]

    def logits(d):
        ref = lr.LlamaReference(d)
        return ref.forward([lr.Sequence(ref.cfg, len(ids))], [ids])[0]

    st_ch, st_te = SafetensorsDir(ch), SafetensorsDir(te)
    names = projection_names(cfg)
    flat = rewrite(ch, os.path.join(tmp, "ch-flat"), tensors_update={
        n + "_scale": ("F32", np.array(st_ch.stored(n + "_scale")).reshape(-1)) for n in names})
    one = rewrite(te, os.path.join(tmp, "te-one"), tensors_update={
        n + "_scale": ("F32", np.array(st_te.stored(n + "_scale")).reshape(1)) for n in names})
    assert np.array_equal(logits(ch), logits(flat))
    assert np.array_equal(logits(te), logits(one))
    # Per-tensor scales under a compressed-tensors "tensor" group; static activation scheme.
    ct = json.loads(json.dumps(CHANNEL_CONFIG))
    ct["config_groups"]["group_0"]["weights"]["strategy"] = "tensor"
    ct_dir = rewrite(te, os.path.join(tmp, "te-ct"), cfg_update={"quantization_config": ct})
    static = rewrite(te, os.path.join(tmp, "te-static"), cfg_update={
        "quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}})
    assert np.array_equal(logits(te), logits(ct_dir))
    assert np.array_equal(logits(te), logits(static))
    # Only some projections quantized (the rest bf16) is fine too.
    part = rewrite(src, os.path.join(tmp, "part"),
                   cfg_update={"quantization_config": CHANNEL_CONFIG},
                   tensors_update={n: (st_ch.info(n).dtype, np.array(st_ch.stored(n)))
                                   for n in names[:3]} |
                   {n + "_scale": ("F32", np.array(st_ch.stored(n + "_scale"))) for n in names[:3]})
    ref = lr.LlamaReference(part)
    assert sorted(ref.weights.scales) == sorted(names[:3])


@test
def unsupported_configs_refused(tmp):
    src = os.path.join(tmp, "bf16")
    cfg, _ = make_micro_model(src, seed=14, cfg_extra=TINY_RANDOM)
    ch, te = os.path.join(tmp, "ch"), os.path.join(tmp, "te")
    quantize(src, ch, "channel")
    quantize(src, te, "tensor")
    names = projection_names(cfg)
    st_ch = SafetensorsDir(ch)
    k = [0]

    def variant(base, **kw):
        k[0] += 1
        d = rewrite(base, os.path.join(tmp, f"v{k[0]}"), **kw)
        return lambda: lr.LlamaReference(d)

    def ct_with(**weights):
        qc = json.loads(json.dumps(CHANNEL_CONFIG))
        qc["config_groups"]["group_0"]["weights"].update(weights)
        return {"quantization_config": qc}

    block = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    expect_refusal(variant(te, cfg_update={"quantization_config": block}), "weight_block_size")
    expect_refusal(variant(te, cfg_update={"quantization_config": {"quant_method": "gptq",
                                                                   "bits": 4}}), "gptq")
    expect_refusal(variant(ch, cfg_update=ct_with(strategy="block", block_structure=[128, 128])),
                   "block")
    expect_refusal(variant(ch, cfg_update=ct_with(strategy="group", group_size=128)), "group")
    expect_refusal(variant(ch, cfg_update=ct_with(num_bits=4, type="int")), "num_bits")
    pack = dict(CHANNEL_CONFIG, format="pack-quantized")
    expect_refusal(variant(ch, cfg_update={"quantization_config": pack}), "pack-quantized")
    # F8 weights without any quantization_config; a missing scale; scale shape vs. declared
    # strategy (per-channel scales under the per-tensor "fp8" method); a bad scale shape; an
    # F8 tensor that is not a projection; a non-F32 scale.
    expect_refusal(variant(ch, cfg_update={"quantization_config": None}), "no quantization_config")
    expect_refusal(variant(ch, drop=(names[4] + "_scale",)), names[4] + "_scale", "missing")
    expect_refusal(variant(ch, cfg_update={"quantization_config": TENSOR_CONFIG}), "channel")
    two_by_two = np.ones((2, 2), "<f4")
    expect_refusal(variant(ch, tensors_update={names[0] + "_scale": ("F32", two_by_two)}), "shape")
    emb = np.zeros((TINY_RANDOM["vocab_size"], TINY_RANDOM["hidden_size"]), np.uint8)
    expect_refusal(variant(ch, tensors_update={"model.embed_tokens.weight": ("F8_E4M3", emb)}),
                   "model.embed_tokens.weight")
    bad_scale = np.array(st_ch.stored(names[1] + "_scale")).astype("<f2")
    expect_refusal(variant(ch, tensors_update={names[1] + "_scale": ("F16", bad_scale)}), "F32")
    # A scale next to a bf16 weight.
    one = np.array(1.0, "<f4")
    expect_refusal(variant(src, tensors_update={names[2] + "_scale": ("F32", one)}), "weight_scale")
    # The quantizer refuses an already quantized source and a non-empty destination.
    expect_refusal(lambda: quantize(ch, os.path.join(tmp, "again"), "channel"), "already quantized")
    expect_refusal(lambda: quantize(src, ch, "channel"), "not empty")


@test
def cli_replaces_previous_output_only(tmp):
    src, dst = os.path.join(tmp, "bf16"), os.path.join(tmp, "out")
    make_micro_model(src, seed=15, cfg_extra=TINY_RANDOM)
    script = os.path.join(HERE, "quantize_fp8.py")
    for strategy in ("tensor", "channel"):  # the second run replaces the first
        res = subprocess.run([sys.executable, script, "--model", src, "--out", dst,
                              "--strategy", strategy], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        printed = json.loads(res.stdout.strip().splitlines()[-1])
        assert printed["quantization_config"] == (TENSOR_CONFIG if strategy == "tensor"
                                                  else CHANNEL_CONFIG)
    assert SafetensorsDir(dst).config["quantization_config"] == CHANNEL_CONFIG
    assert not os.path.exists(dst + ".partial")
    other = os.path.join(tmp, "other")
    os.makedirs(other)
    with open(os.path.join(other, "keep.txt"), "w") as f:
        f.write("x")
    res = subprocess.run([sys.executable, script, "--model", src, "--out", other],
                         capture_output=True, text=True)
    assert res.returncode != 0 and os.path.exists(os.path.join(other, "keep.txt"))


# ---------------------------------------------------------------------------------------------
# --quantize-tiny: make and check the FP8 versions of the generated tiny model


def quantize_tiny(src, dst_channel, dst_tensor):
    script = os.path.join(HERE, "quantize_fp8.py")
    runs = [(dst_channel, "channel", []), (dst_tensor, "tensor", ["--input-scale"])]
    for dst, strategy, extra in runs:
        t0 = time.time()
        subprocess.run([sys.executable, script, "--model", src, "--out", dst,
                        "--strategy", strategy] + extra, check=True)
        print(f"quantized {strategy}: {dst} in {time.time() - t0:.1f} s")
    st_src = SafetensorsDir(src)
    ids = [128000, 791, 6864, 315, 9822, 374, 12366, 13, 578]
    plain = lr.LlamaReference(src)
    base = plain.forward([lr.Sequence(plain.cfg, len(ids))], [ids])[0]
    for dst, strategy, extra in runs:
        st = SafetensorsDir(dst)
        projections = {f"model.layers.{i}.{p}.weight" for i in range(plain.cfg.num_layers)
                       for p in lr.PROJECTIONS}
        for n in st_src.names():
            if n not in projections:
                assert np.array_equal(st.stored(n), st_src.stored(n)), n
                continue
            assert st.info(n).dtype == "F8_E4M3"
            w = st_src.float64(n)
            scale = np.asarray(st.stored(n + "_scale"), np.float64)
            scale = scale if strategy == "tensor" else scale.reshape(-1, 1)
            err = np.abs(dequantized(st, n) - w)
            assert np.all(err <= np.maximum(np.abs(w) * 2.0 ** -4, scale * 2.0 ** -10)), n
            assert (n[:-len("weight")] + "input_scale" in st) == bool(extra)
        for f in os.listdir(src):
            if not f.endswith(".safetensors"):
                assert os.path.exists(os.path.join(dst, f)), f
        ref = lr.LlamaReference(dst)
        got = ref.forward([lr.Sequence(ref.cfg, len(ids))], [ids])[0]
        rel = np.linalg.norm(got - base) / np.linalg.norm(base)
        print(f"{strategy}: last-position logits vs bf16: relative L2 difference {rel:.4f}, "
              f"argmax {int(np.argmax(got))} vs {int(np.argmax(base))}")
        assert np.all(np.isfinite(got)) and 0 < rel < 0.3, rel
    print("quantize-tiny: ok")
    return 0


def main(argv):
    if argv[:1] == ["--quantize-tiny"]:
        if len(argv) != 4:
            print("usage: test_fp8_reference.py --quantize-tiny SRC DST_CHANNEL DST_TENSOR")
            return 2
        return quantize_tiny(*argv[1:])
    return run_tests(TESTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
