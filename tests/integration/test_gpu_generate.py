#!/usr/bin/python3
"""GPU end to end: the tiny preset on cuda:0 gives the same greedy tokens as on the CPU (and as
the oracle), for the first prompts of the oracle file, with its decode steps replayed from CUDA
graphs (the default; the first prompt also without them). Exits 77 (CTest: Skipped) when this
machine has no CUDA device, never 0.

usage: test_gpu_generate.py BIN_DIR MODEL_DIR ORACLE_JSON [PROMPTS]   (default 4 prompts)"""

import json
import subprocess
import sys

SKIP = 77
N = 16


def generate(bin_dir, model, ids, device, graphs=True):
    out = subprocess.run([bin_dir + "/caduceus-generate", "--model", model, "--device", device,
                          "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", str(N),
                          "--temperature", "0", "--ignore-eos", "--json",
                          "--cuda_graphs=%s" % ("true" if graphs else "false")],
                         capture_output=True, text=True, timeout=600)
    return out


def result(out):
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    bin_dir, model, oracle_path = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    with open(oracle_path) as f:
        prompts = json.load(f)["prompts"][:count]
    failures = 0
    for i, p in enumerate(prompts):
        gpu = generate(bin_dir, model, p["prompt_ids"], "cuda:0")
        if gpu.returncode != 0:
            if "CUDA device" in gpu.stderr or "cannot load the CUDA backend" in gpu.stderr:
                print("SKIPPED: no usable CUDA device here (%s)" % gpu.stderr.strip().splitlines()[-1])
                return SKIP
            print("FAIL: cuda:0 run failed: %s" % gpu.stderr)
            return 1
        cpu = generate(bin_dir, model, p["prompt_ids"], "cpu")
        got = result(gpu)["generated_ids"]
        want = result(cpu)["generated_ids"]
        ok = got == want and got == p["gen_ids"][:N]
        print("prompt %d: cuda %s cpu %s oracle %s -> %s" % (i, got, want, p["gen_ids"][:N],
                                                           "ok" if ok else "MISMATCH"))
        failures += not ok
        # 16 tokens: one prefill, one eager decode step (sizes the workspaces), one captured,
        # and the other 13 replayed, without a failed capture or launch.
        graphs = result(gpu)["cuda_graphs"]
        print("  cuda graphs: %s" % graphs)
        if graphs["replays"] != N - 3 or graphs["failures"] != 0:
            print("FAIL: expected %d decode steps replayed from CUDA graphs" % (N - 3))
            failures += 1
        if i == 0:
            eager = generate(bin_dir, model, p["prompt_ids"], "cuda:0", graphs=False)
            if eager.returncode != 0 or result(eager)["generated_ids"] != got or \
                    result(eager)["cuda_graphs"]["replays"] != 0:
                print("FAIL: cuda:0 without graphs: %s" % (eager.stderr or eager.stdout))
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
