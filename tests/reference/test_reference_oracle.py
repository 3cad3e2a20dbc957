#!/usr/bin/python3
"""The float64 reference must reproduce the stored oracle of the tiny seed-1 test model.

Usage: test_reference_oracle.py TINY_MODEL_DIR ORACLE_JSON
For each of the oracle's prompts: the greedy tokens must be identical, the first-step top-10
(ids and logits) and every step's top-1/top-2 (ids, logits, margin) must agree with the oracle's
independent float64 forward to 1e-6 relative (plus 2e-5 absolute: the oracle stores 5 decimals).
Last line: "N passed, M failed"; exit status 1 on any failure.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import LlamaReference  # noqa: E402

REL_TOL = 1e-6
ABS_TOL = 2e-5


def close(a, b):
    return abs(a - b) <= ABS_TOL + REL_TOL * max(abs(a), abs(b))


def check_prompt(idx, oracle, got):
    """Returns a list of failure messages (empty: pass)."""
    errors = []
    want = oracle["gen_ids"]
    if got["generated_ids"] != want:
        step = next(i for i, (a, b) in enumerate(zip(got["generated_ids"], want)) if a != b)
        errors.append(f"greedy tokens differ from step {step}: got {got['generated_ids'][step]}, "
                      f"oracle {want[step]} (oracle margin {oracle['step_margin_f64'][step]})")
    top = got["first_step_top_logits"]
    want_top = oracle["first_step_top10_f64"]
    if [i for i, _ in top] != [i for i, _ in want_top]:
        errors.append(f"first-step top-10 ids {[i for i, _ in top]} != {[i for i, _ in want_top]}")
    else:
        for (i, a), (_, b) in zip(top, want_top):
            if not close(a, b):
                errors.append(f"first-step logit of {i}: {a:.6f} vs oracle {b:.6f}")
    for step, (g, w) in enumerate(zip(got["step_top2"], oracle["step_top2_f64"])):
        if g[0] != w[0] or g[2] != w[2]:
            errors.append(f"step {step}: top-2 ids {g[0]},{g[2]} vs oracle {w[0]},{w[2]}")
            break
        if not (close(g[1], w[1]) and close(g[3], w[3])):
            errors.append(f"step {step}: top-2 logits {g[1]:.6f},{g[3]:.6f} vs {w[1]},{w[3]}")
            break
        if not close(got["step_margins"][step], oracle["step_margin_f64"][step]):
            errors.append(f"step {step}: margin {got['step_margins'][step]:.6f} vs "
                          f"{oracle['step_margin_f64'][step]}")
            break
    return [f"prompt {idx}: {e}" for e in errors]


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        print("0 passed, 1 failed")
        return 2
    model_dir, oracle_path = argv[1], argv[2]
    with open(oracle_path) as f:
        oracle = json.load(f)
    prompts = oracle["prompts"]
    n_gen = oracle["decoding"]["n_gen"]
    t0 = time.time()
    ref = LlamaReference(model_dir)
    results = ref.generate([p["prompt_ids"] for p in prompts], n_gen, top_k=10)
    elapsed = time.time() - t0
    passed = failed = 0
    for idx, (p, got) in enumerate(zip(prompts, results)):
        errors = check_prompt(idx, p, got)
        if errors:
            failed += 1
            for e in errors:
                print("FAIL", e)
        else:
            passed += 1
            print(f"ok   prompt {idx}: {len(p['prompt_ids'])} prompt + {n_gen} greedy tokens, "
                  f"min margin {min(got['step_margins']):.5f}")
    print(f"reference: {len(prompts)} prompts x {n_gen} tokens in {elapsed:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
