#!/usr/bin/python3
"""Compare the C++ engine's greedy output with the float64 reference (or the stored oracle).

Tolerances (the engine computes in bf16/f32, the reference in float64):
  * generated ids must be identical step by step. A divergence is tolerated only at a step whose
    float64 top-1/top-2 margin is below TOLERATED_REL_MARGIN (1%) of |top-1 logit|; the rest of
    that prompt is then not compared (the two continuations have different contexts).
  * first-step top-10 logits: |engine - expected| <= TOP_ABS_TOL + TOP_REL_TOL * |expected|,
    i.e. 2e-3 absolute + 2e-3 relative, compared id by id. An id may be missing from one top-10
    only if its logit is within that tolerance of the other list's 10th logit (a boundary tie).

Modes:
  reference: --bin DIR --model DIR --prompts FILE_OR_BUILTIN --max-new-tokens N
             expected values from tests/reference/llama_reference.py run in-process (batched).
  oracle:    --bin DIR --model TINY_DIR --oracle FILE [--max-new-tokens N <= n_gen]
             expected values are the oracle's recorded tokens, margins and float64 top-10.
--prompts: an oracle-format JSON file (its prompts' "prompt_ids"), a JSON list of id lists, a
text file with one comma-separated id list per line, or builtin:short3 (three fixed prompts of
20-40 ids). --select picks prompts by index, --max-prompt-tokens truncates them.
The engine is run as BIN/caduceus-generate [--engine-args] --model DIR (--engine-model if given) --prompt-ids IDS --max-new-tokens N
--temperature 0 --ignore-eos --json --report-top-logits 10 (one fresh process per prompt); its
last stdout line must be a JSON object. --engine-cmd replaces "BIN/caduceus-generate" (a
command line, split on spaces) to test this script against a stand-in.
Last output line: "N passed, M failed"; exit status 1 on any failure, 2 on usage errors.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

TOLERATED_REL_MARGIN = 0.01
TOP_ABS_TOL = 2e-3
TOP_REL_TOL = 2e-3
TOP_K = 10

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE_DIR = os.path.join(os.path.dirname(HERE), "reference")

# Three fixed prompts (Llama-3 chat framing around plain-text ids), 20, 30 and 40 ids long.
BUILTIN_PROMPTS = {
    "short3": [
        [128000, 128006, 882, 128007, 271, 3923, 374, 279, 1176, 8614, 6514, 369, 63308, 30,
         128009, 128006, 78191, 128007, 271, 791],
        [128000, 128006, 9125, 128007, 271, 2675, 527, 264, 11190, 18328, 13, 128009, 128006, 882,
         128007, 271, 849, 21435, 279, 11704, 315, 21971, 13, 128009, 128006, 78191, 128007, 271,
         791, 1455],
        [128000, 128006, 882, 128007, 271, 32, 220, 2031, 4771, 6418, 8893, 18911, 449, 15748,
         6784, 323, 2875, 2136, 315, 11745, 13, 3639, 527, 279, 1455, 3062, 1828, 7504, 30, 128009,
         128006, 78191, 128007, 271, 791, 1455, 3062, 1828, 3094, 374],
    ],
}


class Expected:
    """What the engine must reproduce for one prompt."""

    def __init__(self, prompt_ids, gen_ids, margins, top1_logits, top_logits):
        self.prompt_ids = list(prompt_ids)
        self.gen_ids = list(gen_ids)
        self.margins = list(margins)
        self.top1_logits = list(top1_logits)
        self.top_logits = [(int(i), float(v)) for i, v in top_logits]


def expected_from_oracle(prompt, n):
    return Expected(prompt["prompt_ids"], prompt["gen_ids"][:n], prompt["step_margin_f64"][:n],
                    [t[1] for t in prompt["step_top2_f64"][:n]], prompt["first_step_top10_f64"])


def expected_from_reference(res):
    return Expected(res["prompt_ids"], res["generated_ids"], res["step_margins"],
                    [t[1] for t in res["step_top2"]], res["first_step_top_logits"])


def top_close(a, expected):
    return abs(a - expected) <= TOP_ABS_TOL + TOP_REL_TOL * abs(expected)


def compare_tokens(exp, got_ids):
    """Returns (ok, message)."""
    n = len(exp.gen_ids)
    if len(got_ids) != n:
        return False, f"engine generated {len(got_ids)} tokens, expected {n}"
    for step, (e, g) in enumerate(zip(exp.gen_ids, got_ids)):
        if e == g:
            continue
        margin, top1 = exp.margins[step], exp.top1_logits[step]
        rel = margin / abs(top1) if top1 else float("inf")
        detail = (f"step {step}: engine {g}, expected {e} (float64 margin {margin:.5g}, "
                  f"top-1 logit {top1:.5g}, relative {rel:.3g})")
        if rel < TOLERATED_REL_MARGIN:
            return True, f"tolerated near-tie divergence at {detail}; rest not compared"
        return False, f"divergence at {detail}"
    return True, f"{n} tokens identical"


def compare_top_logits(exp, got_pairs):
    """Returns (ok, message). got_pairs: engine's [[id, logit], ...], best first."""
    try:
        got = [(int(i), float(v)) for i, v in got_pairs]
    except (TypeError, ValueError):
        return False, f"malformed first_step_top_logits: {str(got_pairs)[:200]}"
    want = exp.top_logits[:TOP_K]
    if len(got) < len(want):
        return False, f"engine reported {len(got)} top logits, expected {len(want)}"
    got = got[:len(want)]
    got_map, want_map = dict(got), dict(want)
    errors, worst = [], 0.0
    for i, w in want:
        if i in got_map:
            worst = max(worst, abs(got_map[i] - w))
            if not top_close(got_map[i], w):
                errors.append(f"id {i}: engine {got_map[i]:.6f}, expected {w:.6f}")
        elif not top_close(got[-1][1], w):  # a boundary tie may push it out of the engine's list
            errors.append(f"id {i} (expected {w:.6f}) missing from the engine's top-{len(got)}")
    for i, g in got:
        if i not in want_map and not top_close(g, want[-1][1]):
            errors.append(f"engine's id {i} ({g:.6f}) is not in the expected top-{len(want)}")
    if any(a[1] < b[1] for a, b in zip(got, got[1:])):
        errors.append("engine's top logits are not sorted best first")
    if errors:
        return False, "; ".join(errors[:4])
    return True, f"top-{len(want)} logits agree (max |diff| {worst:.2e})"


def run_engine(cmd_prefix, model, prompt_ids, n, timeout):
    """Runs one engine process; returns (result dict or None, error message or None)."""
    cmd = cmd_prefix + ["--model", model, "--prompt-ids", ",".join(map(str, prompt_ids)),
                        "--max-new-tokens", str(n), "--temperature", "0", "--ignore-eos", "--json",
                        "--report-top-logits", str(TOP_K)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None, f"engine not found: {cmd[0]}"
    except subprocess.TimeoutExpired:
        return None, f"engine timed out after {timeout} s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return None, f"engine exited with {proc.returncode}: " + " | ".join(tail)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        return None, "engine printed nothing on stdout"
    try:
        res = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        # Streamed text without a final newline would share the JSON's line: allow that.
        brace = lines[-1].find("{")
        try:
            res = json.loads(lines[-1][brace:]) if brace > 0 else None
        except json.JSONDecodeError:
            res = None
        if res is None:
            return None, f"last stdout line is not JSON ({e}): {lines[-1][:200]}"
    if not isinstance(res, dict):
        return None, "last stdout line is not a JSON object"
    missing = [k for k in ("prompt_ids", "generated_ids", "text", "finish_reason",
                           "first_step_top_logits") if k not in res]
    if missing:
        return None, f"engine JSON lacks {missing}"
    if list(res["prompt_ids"]) != list(prompt_ids):
        return None, "engine JSON prompt_ids differ from the prompt sent"
    return res, None


def reference_expectations(model, prompts, n, cache_gb):
    """Runs the float64 reference on all prompts as one batch. Its weights are released on
    return, before the engine loads the same model."""
    sys.path.insert(0, REFERENCE_DIR)
    from llama_reference import LlamaReference
    ref = LlamaReference(model, cache_gb=cache_gb)
    return [expected_from_reference(r) for r in ref.generate(prompts, n, TOP_K)]


def load_prompts(spec, select, max_tokens):
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTIN_PROMPTS:
            raise ValueError(f"unknown builtin prompts {name}; have {sorted(BUILTIN_PROMPTS)}")
        prompts = [list(p) for p in BUILTIN_PROMPTS[name]]
    else:
        with open(spec) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = [[int(t) for t in line.split(",") if t.strip()]
                    for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if isinstance(data, dict):
            data = [p["prompt_ids"] for p in data["prompts"]]
        prompts = [list(map(int, p)) for p in data]
    if select:
        prompts = [prompts[int(i)] for i in select.split(",")]
    if max_tokens:
        caps = [int(c) for c in max_tokens.split(",")]
        if len(caps) == 1:
            caps *= len(prompts)
        if len(caps) != len(prompts):
            raise ValueError("--max-prompt-tokens: give one value or one per prompt")
        prompts = [p[:c] for p, c in zip(prompts, caps)]
    if not prompts or any(not p for p in prompts):
        raise ValueError("no prompts, or an empty prompt")
    return prompts


def main(argv=None):
    ap = argparse.ArgumentParser(description="engine vs float64 reference / oracle")
    ap.add_argument("--bin", help="directory holding caduceus-generate")
    ap.add_argument("--engine-cmd", help="command replacing BIN/caduceus-generate")
    ap.add_argument("--model", required=True)
    ap.add_argument("--engine-model", help="model directory for the engine (default: --model); "
                    "e.g. a bf16 checkpoint the engine quantizes at load time against the "
                    "reference on an FP8 checkpoint quantized independently")
    ap.add_argument("--engine-args", default="", help="extra engine flags, e.g. '--quantization fp8'")
    ap.add_argument("--prompts", help="FILE or builtin:NAME (reference mode)")
    ap.add_argument("--oracle", help="oracle JSON for --model (oracle mode)")
    ap.add_argument("--select", help="comma-separated prompt indices")
    ap.add_argument("--max-prompt-tokens", help="truncate prompts: one value or one per prompt")
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--engine-timeout", type=float, default=900.0, help="seconds per engine run")
    ap.add_argument("--cache-gb", type=float, default=2.0, help="reference weight cache (GB)")
    args = ap.parse_args(argv)

    if bool(args.oracle) == bool(args.prompts):
        ap.error("give exactly one of --oracle FILE and --prompts FILE_OR_BUILTIN")
    if args.engine_cmd:
        cmd_prefix = shlex.split(args.engine_cmd)
    elif args.bin:
        cmd_prefix = [os.path.join(args.bin, "caduceus-generate")]
    else:
        ap.error("give --bin DIR or --engine-cmd CMD")

    t0 = time.time()
    try:
        if args.oracle:
            with open(args.oracle) as f:
                oracle = json.load(f)
            n = args.max_new_tokens or oracle["decoding"]["n_gen"]
            if n > oracle["decoding"]["n_gen"]:
                ap.error(f"the oracle holds only {oracle['decoding']['n_gen']} tokens per prompt")
            oracle_prompts = oracle["prompts"]
            if args.select:
                oracle_prompts = [oracle_prompts[int(i)] for i in args.select.split(",")]
            expected = [expected_from_oracle(p, n) for p in oracle_prompts]
            source = "oracle"
        else:
            if not args.max_new_tokens:
                ap.error("--max-new-tokens is required with --prompts")
            n = args.max_new_tokens
            prompts = load_prompts(args.prompts, args.select, args.max_prompt_tokens)
            expected = reference_expectations(args.model, prompts, n, args.cache_gb)
            source = "float64 reference"
    except (OSError, ValueError, KeyError, IndexError) as e:
        print(f"setup failed: {e}")
        print("0 passed, 1 failed")
        return 1
    print(f"{source}: {len(expected)} prompts x {n} tokens ready in {time.time() - t0:.1f} s")

    passed = failed = 0
    for idx, exp in enumerate(expected):
        t1 = time.time()
        res, err = run_engine(cmd_prefix + shlex.split(args.engine_args),
                              args.engine_model or args.model, exp.prompt_ids, n,
                              args.engine_timeout)
        if err:
            print(f"FAIL prompt {idx} ({len(exp.prompt_ids)} ids): {err}")
            failed += 2
            continue
        took = time.time() - t1
        for what, (ok, msg) in (("tokens", compare_tokens(exp, list(res["generated_ids"]))),
                                ("top-logits", compare_top_logits(exp, res["first_step_top_logits"]))):
            print(f"{'ok  ' if ok else 'FAIL'} prompt {idx} ({len(exp.prompt_ids)} ids) {what}: {msg}")
            passed, failed = passed + ok, failed + (not ok)
        print(f"     engine {took:.1f} s, finish_reason {res.get('finish_reason')!r}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
