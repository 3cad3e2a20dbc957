#!/usr/bin/env python3
"""caduceus-bench-engine keeps its JSON contract (a benchmark smoke run on the tiny model, so the
tool cannot rot; its figures are not judged here). Usage: test_bench_engine_smoke.py BIN MODEL"""
import json
import os
import subprocess
import sys

BIN, MODEL = sys.argv[1], sys.argv[2]
p = subprocess.run([os.path.join(BIN, "caduceus-bench-engine"), "--model", MODEL, "--prefill-tokens", "32",
                    "--decode-steps", "1", "--batch-sizes", "1,16", "--json"],
                   capture_output=True, text=True, timeout=600)
failed = []
if p.returncode != 0:
    failed.append(f"exit {p.returncode}: {p.stderr[-500:]}")
else:
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s_batch1", "decode_tokens_per_s_batch16",
                "peak_rss_bytes", "memory_read_bytes_per_s", "matmul_peak_gflops", "prefill_gflops",
                "decode_batch1_fraction_of_bandwidth_bound"]:
        if not (isinstance(out.get(key), (int, float)) and out[key] > 0):
            failed.append(f"{key} missing or not positive: {out.get(key)}")
for f in failed:
    print("FAIL", f)
print(f"{1 - bool(failed)} passed, {int(bool(failed))} failed")
sys.exit(1 if failed else 0)
