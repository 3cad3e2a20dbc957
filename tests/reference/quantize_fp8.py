#!/usr/bin/python3
"""Make a weight-only FP8 (E4M3) checkpoint from a bf16 Hugging Face Llama directory.

Usage:
  /usr/bin/python3 tests/reference/quantize_fp8.py --model SRC_DIR --out DST_DIR \
      [--strategy channel|tensor] [--input-scale]

Written from the format's definition (OCP float8_e4m3fn) and the checkpoint conventions stated in
README.md, independently of the C++ engine. Every rule is float32 arithmetic so that it can be
reproduced bit for bit elsewhere:
  W      = the stored weight widened exactly to float32 (BF16, F16 or F32 sources)
  amax_j = max_k |W[j, k]| (per channel; per tensor: the max over the whole tensor)
  s_j    = float32(amax_j / 448) (float32 division), or 1.0 where amax_j == 0
  q      = E4M3 round-to-nearest-even of float32(W[j, k] / s_j), magnitudes above 448 saturate to
           448 (0x7E / 0xFE), the sign of zero is kept.
The 7 projections of every layer (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj) become an
F8_E4M3 `.weight` [out, in] plus an F32 `.weight_scale` ([out, 1] per channel, [] per tensor);
with --input-scale also an F32 scalar `.input_scale` = 1.0 (loaders must ignore it). Every other
tensor is copied byte for byte. config.json gains the quantization_config (compressed-tensors
for channel, "fp8" for tensor); the other files of the source directory are copied.

The source is read through memory maps and written tensor by tensor (and in row chunks), so the
model is never in memory at once. The shard split of the source is kept (a scale goes to its
weight's shard); inside a file tensors are ordered by element size, largest first, then by
name, so that every tensor starts at a multiple of its element size.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import E4M3_TABLE, SafetensorsDir  # noqa: E402

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

E4M3_MAX = 448.0

# The 127 non-negative finite E4M3 values in code order 0x00..0x7E (which is increasing order),
# and the 126 midpoints between neighbours (exact: a handful of significant bits).
POSITIVE = np.array(E4M3_TABLE[:0x7F], dtype=np.float64)
assert np.all(np.diff(POSITIVE) > 0) and POSITIVE[0] == 0.0 and POSITIVE[-1] == E4M3_MAX
MIDPOINTS = (POSITIVE[:-1] + POSITIVE[1:]) / 2.0


def config_for(strategy):
    """The quantization_config written to config.json for a strategy."""
    if strategy == "tensor":
        return {"quant_method": "fp8", "activation_scheme": "dynamic"}
    if strategy == "channel":
        return {"quant_method": "compressed-tensors", "format": "float-quantized",
                "config_groups": {"group_0": {
                    "targets": ["Linear"],
                    "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                                "symmetric": True, "dynamic": False},
                    "input_activations": None}},
                "ignore": ["lm_head"]}
    raise ValueError(f"strategy {strategy!r}: channel or tensor")


def e4m3_round(y):
    """E4M3 codes (uint8, y's shape) of float32/float64 values y: nearest finite E4M3 value, ties
    to the code with the even mantissa (code & 1 == 0), |y| > 448 saturates to +-448, sign kept
    (also for values that round to zero). NaN or infinite inputs are refused.

    With the 126 midpoints between neighbouring non-negative values, the number of midpoints
    strictly below |y| is the code of the nearest value (so everything beyond the last
    midpoint, 432, is 448: saturation comes free); |y| equal to a midpoint is a tie and
    counts down to the lower code, which moves up by one when that code is odd."""
    y = np.asarray(y)
    if y.dtype not in (np.float32, np.float64):
        y = y.astype(np.float64)
    mids = MIDPOINTS.astype(y.dtype)  # exact in float32 too: a handful of significant bits
    a = np.abs(y).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError("cannot quantize NaN or infinite values")
    code = np.searchsorted(mids, a, side="left")  # 0..126
    tie = mids[np.minimum(code, len(mids) - 1)] == a
    code += tie & (code & 1).astype(bool)
    code = code.astype(np.uint8)
    code |= np.signbit(y.reshape(-1)).view(np.uint8) << np.uint8(7)
    return code.reshape(y.shape)


def scales_for(w32, strategy):
    """float32 scales of a float32 [out, in] weight: [out] per channel, 0-d per tensor."""
    if strategy == "channel":
        amax = np.max(np.abs(w32), axis=1) if w32.shape[1] else np.zeros(w32.shape[0], np.float32)
    else:
        amax = np.max(np.abs(w32)) if w32.size else np.float32(0)
    return finish_scales(np.asarray(amax, np.float32))


def finish_scales(amax):
    amax = np.asarray(amax, np.float32)
    with np.errstate(under="ignore"):
        scale = np.divide(amax, np.float32(E4M3_MAX), dtype=np.float32)
    scale = np.where(amax == 0, np.float32(1.0), scale).astype(np.float32)
    if np.any(scale == 0) or not np.all(np.isfinite(scale)):
        raise ValueError("weight magnitude too small or not finite for a float32 scale")
    return scale


def quantize_rows(w32, scale):
    """E4M3 codes of float32 rows w32 [r, in] with float32 scale (0-d, or [r] per row)."""
    s = np.asarray(scale, np.float32)
    if s.ndim:
        s = s[:, None]
    return e4m3_round(np.divide(w32, s, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# safetensors writing

_ITEMSIZE = {"F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4, "F64": 8}


def write_safetensors_stream(path, entries, metadata=None):
    """Writes one .safetensors file. entries: [(name, dtype, shape, producer)], producer() yields
    the tensor's bytes (numpy arrays or bytes) in order. Returns the data section's size.

    Layout: u64 little-endian header length N, N bytes of JSON (padded with spaces to a multiple
    of 8), then the tensors back to back in the order given."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, _ in entries:
        n = _ITEMSIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for name, _, _, producer in entries:
            want = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            got = 0
            for part in producer():
                data = part.tobytes() if isinstance(part, np.ndarray) else bytes(part)
                f.write(data)
                got += len(data)
            if got != want:
                raise AssertionError(f"{name}: wrote {got} bytes, header says {want}")
    return off


def ordered(entries):
    """Largest element size first, then by name: every tensor then starts aligned to its size."""
    return sorted(entries, key=lambda e: (-_ITEMSIZE[e[1]], e[0]))


# ---------------------------------------------------------------------------------------------
# the quantizer


def _widen_rows(st, name, r0, r1):
    """Rows r0:r1 of a BF16/F16/F32 tensor as float32 (exact)."""
    dtype = st.info(name).dtype
    data = st.stored(name)[r0:r1]
    if dtype == "BF16":
        return (data.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("F16", "F32"):
        return data.astype(np.float32)
    raise ValueError(f"{name}: cannot quantize a {dtype} weight (BF16, F16 or F32 only)")


def _row_step(cols, chunk_elems):
    return max(1, chunk_elems // max(1, cols))


def compute_scale(st, name, strategy, chunk_elems):
    rows, cols = st.shape(name)
    step = _row_step(cols, chunk_elems)
    amax = np.zeros(rows, np.float32)
    for r0 in range(0, rows, step):
        w = _widen_rows(st, name, r0, min(rows, r0 + step))
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{name} has NaN or infinite values")
        if cols:
            amax[r0:r0 + w.shape[0]] = np.max(np.abs(w), axis=1)
    if strategy == "tensor":
        amax = np.max(amax) if rows else np.float32(0)
    return finish_scales(amax)


def _weight_producer(st, name, scale, chunk_elems):
    def produce():
        rows, cols = st.shape(name)
        step = _row_step(cols, chunk_elems)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            s = scale[r0:r1] if scale.ndim else scale
            yield quantize_rows(_widen_rows(st, name, r0, r1), s)
    return produce


def _copy_producer(st, name, chunk_bytes=64 << 20):
    def produce():
        raw = st.stored(name).reshape(-1).view(np.uint8)
        for b in range(0, raw.size, chunk_bytes):
            yield raw[b:b + chunk_bytes]
    return produce


def _const_producer(arr):
    return lambda: iter([arr])


def quantize_dir(src, dst, strategy="channel", input_scale=False, chunk_elems=1 << 22,
                 log=None):
    """Writes the FP8 checkpoint of src into dst (created; must be empty or absent)."""
    if strategy not in ("channel", "tensor"):
        raise ValueError(f"strategy {strategy!r}: channel or tensor")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError("--out must differ from --model")
    st = SafetensorsDir(src)
    cfg = dict(st.config)
    if cfg.get("quantization_config") is not None:
        method = cfg["quantization_config"].get("quant_method")
        raise ValueError(f"{src} is already quantized ({method})")
    layers = cfg["num_hidden_layers"]
    projections = {f"model.layers.{i}.{p}.weight" for i in range(layers) for p in PROJECTIONS}
    missing = sorted(projections - set(st.names()))
    if missing:
        raise ValueError(f"projection weights missing from {src}: {missing[:3]}")
    for n in st.names():
        if n.endswith(("_scale", ".weight_scale_inv")):
            raise ValueError(f"{src} already holds scale tensors ({n})")

    index_path = os.path.join(src, "model.safetensors.index.json")
    sharded = os.path.exists(index_path)
    files = {}  # output file name -> entries
    for n in st.names():
        fname = os.path.basename(st.info(n).path)
        files.setdefault(fname, [])
    os.makedirs(dst, exist_ok=True)
    if any(os.scandir(dst)):
        raise ValueError(f"{dst} is not empty")
    weight_map, total = {}, 0
    for n in st.names():
        fname = os.path.basename(st.info(n).path)
        info = st.info(n)
        if n in projections:
            if len(info.shape) != 2:
                raise ValueError(f"{n} is not 2-D")
            scale = compute_scale(st, n, strategy, chunk_elems)
            stored_scale = scale.reshape(-1, 1) if strategy == "channel" else scale.reshape(())
            base = n[:-len(".weight")]
            files[fname].append((n, "F8_E4M3", info.shape,
                                 _weight_producer(st, n, scale, chunk_elems)))
            files[fname].append((base + ".weight_scale", "F32", stored_scale.shape,
                                 _const_producer(np.ascontiguousarray(stored_scale, "<f4"))))
            if input_scale:
                files[fname].append((base + ".input_scale", "F32", (),
                                     _const_producer(np.array(1.0, "<f4"))))
        else:
            files[fname].append((n, info.dtype, info.shape, _copy_producer(st, n)))
    for fname, entries in sorted(files.items()):
        entries = ordered(entries)
        if log:
            log(f"writing {fname}: {len(entries)} tensors")
        total += write_safetensors_stream(os.path.join(dst, fname), entries, {"format": "pt"})
        weight_map.update({e[0]: fname for e in entries})
    if sharded:
        with open(index_path) as f:
            index = json.load(f)
        index["metadata"] = dict(index.get("metadata") or {}, total_size=total)
        index["weight_map"] = dict(sorted(weight_map.items()))
        with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    cfg["quantization_config"] = config_for(strategy)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    skip = {"config.json", "model.safetensors.index.json"}
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.name in skip or entry.name.endswith(".safetensors") or not entry.is_file():
            continue
        shutil.copy2(entry.path, os.path.join(dst, entry.name))
    return cfg["quantization_config"]


def _is_previous_output(path):
    """True for a directory this tool (or anything else) wrote an FP8 config into: replaceable."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f).get("quantization_config") is not None
    except (OSError, ValueError, AttributeError):
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="source HF directory (bf16 safetensors)")
    ap.add_argument("--out", required=True, help="destination directory (replaced if it holds a "
                    "previous quantized model; otherwise must be empty or absent)")
    ap.add_argument("--strategy", choices=("channel", "tensor"), default="channel",
                    help="per-channel (compressed-tensors) or per-tensor (fp8) weight scales")
    ap.add_argument("--input-scale", action="store_true",
                    help="also write a dummy F32 scalar input_scale = 1.0 per projection")
    args = ap.parse_args(argv)
    dst = os.path.abspath(args.out.rstrip("/"))
    if os.path.exists(dst) and any(os.scandir(dst)) and not _is_previous_output(dst):
        ap.error(f"{dst} exists, is not empty and is not a quantized model directory")
    partial = dst + ".partial"
    if os.path.exists(partial):
        shutil.rmtree(partial)
    qc = quantize_dir(args.model, partial, args.strategy, args.input_scale,
                      log=lambda m: print(m, file=sys.stderr))
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.rename(partial, dst)
    print(json.dumps({"out": dst, "quantization_config": qc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
