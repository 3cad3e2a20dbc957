#!/usr/bin/python3
"""Independent implementation of docs/testmodel-spec.md's random stream (Python ints + numpy
float32 rounding), used once to produce the golden values in test_model_spec_test.cc.

Run: /usr/bin/python3 tools/make_test_model/test_model_spec_golden.py
"""
import math
import struct

import numpy as np

M = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M
    return h


def key(seed, name):
    return mix64(mix64(seed) ^ fnv1a64(name))


def normal(k, i):
    u = mix64((k + (i + 1) * 0x9E3779B97F4A7C15) & M)
    u1 = ((u >> 32) + 0.5) / 2.0**32
    u2 = (u & 0xFFFFFFFF) / 2.0**32
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def bf16_bits(x):
    f = np.float32(x)  # float64 -> float32, round to nearest even
    b = struct.unpack("<I", struct.pack("<f", f))[0]
    return (b + 0x7FFF + ((b >> 16) & 1)) >> 16


def main():
    print("mix64:", [hex(mix64(v)) for v in (0, 1, 0xDEADBEEF)])
    print("fnv1a64:", [hex(fnv1a64(s)) for s in ("", "a", "lm_head.weight")])
    k = key(1, "model.embed_tokens.weight")
    print("key(1, embed):", hex(k))
    print("normal(key, i) i=0..3:", [repr(normal(k, i)) for i in range(4)])
    h = 256
    kq = key(1, "model.layers.0.self_attn.q_proj.weight")
    print("tiny q_proj bf16 bits i=0..3:",
          [hex(bf16_bits((1.4 / math.sqrt(h)) * normal(kq, i))) for i in range(4)])
    kn = key(1, "model.norm.weight")
    print("tiny norm bf16 bits i=0..3:",
          [hex(bf16_bits(1.0 + 0.05 * normal(kn, i))) for i in range(4)])
    kl = key(1, "lm_head.weight")
    kr = key(1, "lm_head.weight#rowscale")
    out = []
    for j, c in ((0, 0), (0, 255), (1, 3), (128255, 7)):
        v = (16.0 / math.sqrt(h)) * math.exp(0.5 * normal(kr, j)) * normal(kl, j * h + c)
        out.append(hex(bf16_bits(v)))
    print("tiny lm_head bf16 bits (0,0) (0,255) (1,3) (128255,7):", out)


if __name__ == "__main__":
    main()
