#!/usr/bin/python3
"""Tests of tests/integration/reference_compare.py, without the engine.

The comparison rules are checked directly, then the whole script is run end to end on a micro
model with engine_shim.py (the reference behind the engine's CLI) standing in for the engine, in
both modes, honest and with injected faults. Optional argument: TINY_MODEL_DIR ORACLE_JSON also
runs oracle mode on the tiny model through the shim (the real engine test's code path).
Last line: "N passed, M failed"; exit status 1 on any failure.
"""

import contextlib
import io
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import reference_compare as rc  # noqa: E402
from llama_reference import LlamaReference  # noqa: E402
from test_reference_units import make_micro_model  # noqa: E402
from test_runner import run_tests  # noqa: E402

SHIM = f"{sys.executable} {os.path.join(HERE, 'engine_shim.py')}"


def exp_with(gen, margins, top1, top):
    return rc.Expected([1, 2], gen, margins, top1, top)


TOP = [(10 + k, 100.0 - 3 * k) for k in range(10)]


def check_tokens():
    e = exp_with([5, 6, 7, 8], [10.0, 0.5, 30.0, 1.0], [100.0, 100.0, 100.0, 100.0], TOP)
    assert rc.compare_tokens(e, [5, 6, 7, 8])[0]
    ok, msg = rc.compare_tokens(e, [5, 9, 1, 1])  # margin 0.5% of top-1: tolerated, then stop
    assert ok and "tolerated" in msg, msg
    ok, msg = rc.compare_tokens(e, [5, 6, 9, 8])  # margin 30%: a real divergence
    assert not ok and "step 2" in msg, msg
    assert not rc.compare_tokens(e, [5, 6, 7])[0]
    assert not rc.compare_tokens(e, [5, 6, 7, 8, 9])[0]
    # Exactly 1% is not below 1%.
    e2 = exp_with([5], [2.0], [-200.0], TOP)
    assert not rc.compare_tokens(e2, [4])[0]


def check_top_logits():
    e = exp_with([1], [1.0], [100.0], TOP)
    assert rc.compare_top_logits(e, [list(p) for p in TOP])[0]
    near = [[i, v * (1 + 1.5e-3)] for i, v in TOP]
    assert rc.compare_top_logits(e, near)[0]
    far = [[i, v + (0.5 if i == 13 else 0.0)] for i, v in TOP]
    ok, msg = rc.compare_top_logits(e, far)
    assert not ok and "id 13" in msg, msg
    # A boundary tie: the engine's 10th is a different id with (almost) the same logit.
    tie = [list(p) for p in TOP[:9]] + [[999, TOP[9][1] + 1e-3]]
    assert rc.compare_top_logits(e, tie)[0]
    # The same swap far from the boundary is an error.
    swap = [list(p) for p in TOP[:9]] + [[999, 50.0]]
    assert not rc.compare_top_logits(e, swap)[0]
    # Two near-equal ids in swapped order are fine; a list out of order is not.
    tie2 = [list(p) for p in TOP]
    tie2[3], tie2[4] = [TOP[4][0], TOP[3][1]], [TOP[3][0], TOP[4][1]]
    assert not rc.compare_top_logits(e, tie2)[0]  # ids swapped with 3.0 apart: logits differ
    assert not rc.compare_top_logits(e, [list(p) for p in reversed(TOP)])[0]
    assert not rc.compare_top_logits(e, [list(p) for p in TOP[:9]])[0]
    assert not rc.compare_top_logits(e, [[1, "x"]] * 10)[0]
    assert not rc.compare_top_logits(e, None)[0]


def run_script(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = rc.main(args)
    text = out.getvalue()
    return code, text.strip().splitlines()[-1], text


def check_end_to_end():
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "m")
        make_micro_model(model, seed=5)
        prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8], [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]]
        pfile = os.path.join(tmp, "prompts.txt")
        with open(pfile, "w") as f:
            f.write("# micro prompts\n" + "\n".join(",".join(map(str, p)) for p in prompts) + "\n")
        base = ["--engine-cmd", SHIM, "--model", model, "--prompts", pfile, "--max-new-tokens", "6"]
        code, last, text = run_script(base)
        assert code == 0 and last == "6 passed, 0 failed", text
        code, last, text = run_script(base + ["--select", "2,0", "--max-prompt-tokens", "5,3"])
        assert code == 0 and last == "4 passed, 0 failed", text

        ref = LlamaReference(model).generate(prompts, 6, 10)
        # A step whose margin is far above 1% of the top logit, for the corruption test.
        p, step = next((p, s) for p, r in enumerate(ref) for s in range(6)
                       if r["step_margins"][s] > 0.05 * abs(r["step_top2"][s][1]))
        code, last, text = run_script(base[:1] + [f"{SHIM} --corrupt-step {step}"] + base[2:])
        assert code == 1 and "FAIL" in text, text
        code, last, text = run_script(base[:1] + [f"{SHIM} --logit-offset 1.0"] + base[2:])
        assert code == 1 and last == "3 passed, 3 failed", text
        code, last, text = run_script(base[:1] + [f"{SHIM} --exit-code 3"] + base[2:])
        assert code == 1 and last == "0 passed, 6 failed" and "exited with 3" in text, text
        code, last, text = run_script(["--engine-cmd", "/nonexistent/caduceus-generate"] + base[2:])
        assert code == 1 and "not found" in text, text

        # Oracle mode on an oracle file written from the reference.
        oracle = {"decoding": {"n_gen": 6}, "prompts": [
            {"prompt_ids": r["prompt_ids"], "gen_ids": r["generated_ids"],
             "step_margin_f64": r["step_margins"], "step_top2_f64": r["step_top2"],
             "first_step_top10_f64": r["first_step_top_logits"]} for r in ref]}
        ofile = os.path.join(tmp, "oracle.json")
        with open(ofile, "w") as f:
            json.dump(oracle, f)
        code, last, text = run_script(["--engine-cmd", SHIM, "--model", model, "--oracle", ofile])
        assert code == 0 and last == "6 passed, 0 failed", text
        code, last, text = run_script(["--engine-cmd", SHIM, "--model", model, "--oracle", ofile,
                                       "--max-new-tokens", "3", "--select", "1"])
        assert code == 0 and last == "2 passed, 0 failed", text
        # The same oracle file also serves as a --prompts file.
        code, last, text = run_script(base[:4] + ["--prompts", ofile, "--max-new-tokens", "2"])
        assert code == 0 and last == "6 passed, 0 failed", text


def main(argv):
    checks = [check_tokens, check_top_logits, check_end_to_end]
    if len(argv) == 3:
        def check_oracle_tiny():
            code, last, text = run_script(["--engine-cmd", SHIM, "--model", argv[1],
                                           "--oracle", argv[2]])
            print(text, end="")
            assert code == 0 and last.endswith(" 0 failed"), last
        checks.append(check_oracle_tiny)
    return run_tests(checks)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
