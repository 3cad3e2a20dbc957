#!/usr/bin/env python3
"""Resident memory of the engine on the small preset (2.5 GB of bf16 weights) stays under 1.15x
the weight files: weights are used in place from the memory-mapped shards, never copied.
Usage: test_small_rss.py BIN_DIR MODEL_DIR"""
import glob
import json
import os
import subprocess
import sys

BIN, MODEL = sys.argv[1], sys.argv[2]
weights = sum(os.path.getsize(f) for f in glob.glob(os.path.join(MODEL, "*.safetensors")))
p = subprocess.run([os.path.join(BIN, "caduceus-generate"), "--model", MODEL, "--prompt-ids",
                    "128000,9906,11,1268,527,499", "--max-new-tokens", "2", "--temperature", "0",
                    "--ignore-eos", "--json"], capture_output=True, text=True, timeout=600)
if p.returncode != 0:
    print(p.stderr)
    print("0 passed, 1 failed")
    sys.exit(1)
rss = json.loads(p.stdout.strip().splitlines()[-1])["peak_rss_bytes"]
ratio = rss / weights
print(f"weights {weights} bytes, peak RSS {rss} bytes, ratio {ratio:.3f} (limit 1.15)")
# Lower bound: the forward pass really used the weights (all but the embedding rows it never
# looked up: the embedding table is 1/6 of the small preset).
ok = ratio < 1.15 and rss > 0.75 * weights
print(f"{int(ok)} passed, {int(not ok)} failed")
sys.exit(0 if ok else 1)
