"""Read a Hugging Face model directory with nothing but numpy.

A safetensors file is: 8 bytes little-endian u64 N, then N bytes of JSON mapping tensor names to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte after the header),
an optional "__metadata__" entry, then the raw little-endian tensor bytes. A sharded checkpoint
adds model.safetensors.index.json whose "weight_map" names the shard file of each tensor.

Files are memory-mapped; nothing is converted until asked for, and then one tensor (or a slice of
its rows) at a time, so the float64 copy of a multi-GB checkpoint never exists all at once.

F8_E4M3 tensors (OCP float8_e4m3fn) are decoded to their float64 values by a 256-entry table built
from the format's definition (see e4m3_value); any scale that goes with them is the caller's
business (llama_reference.py applies weight_scale).
"""

import json
import math
import os
import struct

import numpy as np

# safetensors dtype -> numpy dtype of the stored bytes (bf16 is kept as raw uint16 bits).
_STORED_DTYPES = {
    "BF16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype("u1"),
}


def e4m3_value(code):
    """The value of one OCP float8_e4m3fn byte, from the definition: sign bit 7, exponent bits
    6..3 with bias 7, mantissa bits 2..0; exponent field 0 is subnormal (m/8 * 2^-6); no
    infinities; 0x7F and 0xFF (exponent and mantissa all ones) are NaN; largest finite 448."""
    code = int(code)
    if not 0 <= code <= 255:
        raise ValueError(f"E4M3 code {code} out of range")
    sign = -1.0 if code & 0x80 else 1.0
    exp = (code >> 3) & 0xF
    man = code & 0x7
    if exp == 0xF and man == 0x7:
        return math.nan
    if exp == 0:
        return sign * (man / 8.0) * 2.0 ** -6
    return sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)


# E4M3_TABLE[code] = float64 value of the byte (nan for 0x7F, 0xFF); -0.0 for 0x80.
E4M3_TABLE = np.array([e4m3_value(c) for c in range(256)], dtype=np.float64)
E4M3_TABLE.flags.writeable = False


def e4m3_to_float64(codes, out=None):
    """Decodes uint8 E4M3 codes (any shape) to float64; out (flat float64) is reused if given."""
    codes = np.asarray(codes, dtype=np.uint8)
    n = codes.size
    result = np.empty(n, np.float64) if out is None else out[:n]
    np.take(E4M3_TABLE, codes.reshape(-1), out=result)
    return result.reshape(codes.shape)


def bf16_bits_to_float64(bits, out=None, scratch=None):
    """bf16 is the high half of a float32: widen the 16 bits into float32's top half (exact).

    out (float64) and scratch (uint32), flat buffers of at least bits.size elements, are reused
    when given: fresh multi-hundred-MB arrays every step cost more in page faults than the work.
    """
    bits = np.asarray(bits)
    n = bits.size
    wide = np.empty(n, np.uint32) if scratch is None else scratch[:n]
    np.left_shift(bits.reshape(-1), 16, out=wide, dtype=np.uint32)
    result = np.empty(n, np.float64) if out is None else out[:n]
    with np.errstate(invalid="ignore"):  # NaN payloads would warn; weights have none
        np.copyto(result, wide.view(np.float32))
    return result.reshape(bits.shape)


class TensorInfo:
    __slots__ = ("name", "path", "dtype", "shape", "begin", "end")

    def __init__(self, name, path, dtype, shape, begin, end):
        self.name, self.path, self.dtype, self.shape = name, path, dtype, tuple(shape)
        self.begin, self.end = begin, end

    @property
    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path):
    """Returns ({name: TensorInfo}, data_start) for one .safetensors file, validating offsets."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            raise ValueError(f"{path}: header length {header_len} exceeds file size {size}")
        header = json.loads(f.read(header_len).decode("utf-8"))
    data_start = 8 + header_len
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry["dtype"]
        if dtype not in _STORED_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        begin, end = entry["data_offsets"]
        info = TensorInfo(name, path, dtype, entry["shape"], begin, end)
        if end - begin != info.numel * _STORED_DTYPES[dtype].itemsize:
            raise ValueError(f"{path}: tensor {name} byte range does not match its shape")
        if not 0 <= begin <= end <= size - data_start:
            raise ValueError(f"{path}: tensor {name} lies outside the file")
        tensors[name] = info
    return tensors, data_start


class SafetensorsDir:
    """Lazy access to every tensor of a HF checkpoint directory (single file or sharded)."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        with open(os.path.join(model_dir, "config.json")) as f:
            self.config = json.load(f)
        index_path = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            weight_map = None
            files = ["model.safetensors"]
        self._tensors = {}
        self._maps = {}
        self._data_start = {}
        for fname in files:
            path = os.path.join(model_dir, fname)
            tensors, data_start = read_header(path)
            self._data_start[path] = data_start
            self._tensors.update(tensors)
        if weight_map is not None:
            missing = [n for n in weight_map if n not in self._tensors]
            if missing:
                raise ValueError(f"index names tensors absent from the shards: {missing[:5]}")

    def names(self):
        return sorted(self._tensors)

    def __contains__(self, name):
        return name in self._tensors

    def info(self, name):
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"tensor {name} not in {self.model_dir}") from None

    def shape(self, name):
        return self.info(name).shape

    def stored(self, name):
        """The tensor's bytes as a read-only memory-mapped array of its stored dtype."""
        info = self.info(name)
        mm = self._maps.get(info.path)
        if mm is None:
            mm = np.memmap(info.path, dtype=np.uint8, mode="r")
            self._maps[info.path] = mm
        start = self._data_start[info.path] + info.begin
        raw = mm[start:start + (info.end - info.begin)]
        return raw.view(_STORED_DTYPES[info.dtype]).reshape(info.shape)

    def float64(self, name, rows=None, out=None, scratch=None):
        """The tensor (or rows: a slice or index array over its first axis) as float64.

        With out (flat float64) and scratch (flat uint32) buffers, the result is a view of out.
        """
        data = self.stored(name)
        if rows is not None:
            data = data[rows]
        dtype = self.info(name).dtype
        if dtype == "BF16":
            return bf16_bits_to_float64(data, out, scratch)
        if dtype == "F8_E4M3":
            return e4m3_to_float64(data, out)
        if out is None:
            return np.asarray(data, dtype=np.float64)
        result = out[:data.size].reshape(data.shape)
        np.copyto(result, data)
        return result
