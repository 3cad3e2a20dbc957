#!/usr/bin/env python3
"""caduceus-generate end to end on the tiny model: the JSON contract, chat, seeds, stop
sequences, clear errors for bad input. Usage: test_generate_cli.py BIN_DIR MODEL_DIR"""
import json
import os
import subprocess
import sys
import tempfile

BIN, MODEL = sys.argv[1], sys.argv[2]
GEN = os.path.join(BIN, "caduceus-generate")
results = []


def run(*args, expect_rc=0):
    p = subprocess.run([GEN, "--model", MODEL, *args], capture_output=True, text=True, timeout=300)
    if p.returncode != expect_rc:
        raise AssertionError(f"rc={p.returncode} (wanted {expect_rc}) for {args}: {p.stderr[-800:]}")
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def case(fn):
    try:
        fn()
        results.append((fn.__name__, None))
        print(f"PASS {fn.__name__}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        results.append((fn.__name__, e))
        print(f"FAIL {fn.__name__}: {e}")


@case
def json_contract_prompt_ids_used_exactly():
    out = last_json(run("--prompt-ids", "1,2,3", "--max-new-tokens", "5", "--temperature", "0",
                        "--ignore-eos", "--json"))
    assert out["prompt_ids"] == [1, 2, 3], out["prompt_ids"]
    assert len(out["generated_ids"]) == 5
    assert out["finish_reason"] == "length"
    assert isinstance(out["text"], str)
    assert out["usage"] == {"prompt_tokens": 3, "generated_tokens": 5}


@case
def greedy_is_deterministic_and_seeds_reproduce():
    a = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "8", "--temperature", "0", "--ignore-eos", "--json"))
    b = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "8", "--temperature", "0", "--ignore-eos", "--json"))
    assert a["generated_ids"] == b["generated_ids"]
    s1 = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "8", "--seed", "5", "--temperature", "50", "--ignore-eos", "--json"))
    s2 = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "8", "--seed", "5", "--temperature", "50", "--ignore-eos", "--json"))
    s3 = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "8", "--seed", "6", "--temperature", "50", "--ignore-eos", "--json"))
    assert s1["generated_ids"] == s2["generated_ids"]
    assert s1["generated_ids"] != s3["generated_ids"]


@case
def chat_file_renders_template_with_one_bos():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Dose of amoxicillin for otitis media?<|eot_id|>"}], f)
    out = last_json(run("--chat", f.name, "--max-new-tokens", "4", "--temperature", "0", "--json"))
    ids = out["prompt_ids"]
    assert ids[0] == 128000 and ids.count(128000) == 1
    assert ids.count(128009) == 2, ids  # system and user turns; the user's literal marker is text
    assert ids[-4:] == [128006, 78191, 128007, 271], ids[-4:]  # assistant header


@case
def stop_sequence_cuts_text_and_is_not_emitted():
    full = last_json(run("--prompt-ids", "128000,9906,11,1268", "--max-new-tokens", "24", "--temperature", "0",
                         "--ignore-eos", "--json"))
    text = full["text"]
    assert len(text) > 12, text
    stop = text[len(text) // 2: len(text) // 2 + 4]
    cut = last_json(run("--prompt-ids", "128000,9906,11,1268", "--max-new-tokens", "24", "--temperature", "0",
                        "--ignore-eos", "--stop", stop, "--json"))
    assert cut["finish_reason"] == "stop_sequence", cut["finish_reason"]
    assert cut["text"] == text[: text.find(stop)], (cut["text"], text, stop)


@case
def streaming_text_equals_json_text():
    streamed = run("--prompt-ids", "128000,9906", "--max-new-tokens", "12", "--temperature", "0", "--ignore-eos").stdout
    out = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "12", "--temperature", "0", "--ignore-eos", "--json"))
    assert streamed.rstrip("\n") == out["text"], (streamed, out["text"])


@case
def logprobs_are_reported_and_consistent():
    out = last_json(run("--prompt-ids", "128000,9906", "--max-new-tokens", "3", "--temperature", "0", "--ignore-eos",
                        "--logprobs", "3", "--json"))
    assert len(out["logprobs"]) == 3
    for entry, tok in zip(out["logprobs"], out["generated_ids"]):
        assert entry["id"] == tok
        assert entry["top"][0][0] == tok  # greedy: the chosen token is the most likely
        assert entry["logprob"] <= 0 and abs(entry["top"][0][1] - entry["logprob"]) < 1e-6


@case
def bad_input_gives_clear_errors():
    for args, needle in [(["--prompt-ids", "1,2", "--top-p", "1.5"], "top_p"),
                         (["--prompt-ids", "1,2", "--temperature", "-1"], "temperature"),
                         (["--prompt-ids", "1,999999"], "vocabulary"),
                         (["--prompt-ids", "1,x"], "not an integer"),
                         (["--prompt-ids", "1", "--max-new-tokens", "9000"], "context"),
                         (["--prompt", "a", "--prompt-ids", "1"], "exactly one")]:
        p = run(*args, expect_rc=2)
        assert needle in p.stderr, (args, p.stderr)
    p = subprocess.run([GEN, "--model", "/nonexistent", "--prompt-ids", "1"], capture_output=True, text=True)
    assert p.returncode != 0 and "/nonexistent" in p.stderr, p.stderr


failed = [n for n, e in results if e]
print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
