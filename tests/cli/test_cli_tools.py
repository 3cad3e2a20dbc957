#!/usr/bin/python3
"""caduceus-cli and caduceus-bench against a real router with one TP=1 CPU worker on the tiny
model: served answers equal caduceus-generate's local ones (prompt ids, text, chat), streaming
gives the same text as the unary call, router errors surface as "error: CODE: ..." with exit 1,
and the load generator completes every request with ordered percentiles.

Environment (set by CTest): CADUCEUS_BIN_DIR, CADUCEUS_TESTDATA_DIR, PYTHONPATH with the
generated stubs (tests/integration/cluster.py needs them)."""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import cluster  # noqa: E402

BIN = os.environ["CADUCEUS_BIN_DIR"]
MODEL = os.path.join(os.environ["CADUCEUS_TESTDATA_DIR"], "tiny-seed1")
CLI = os.path.join(BIN, "caduceus-cli")
GEN = os.path.join(BIN, "caduceus-generate")
BENCH = os.path.join(BIN, "caduceus-bench")
GREEDY = ["--max-new-tokens", "8", "--temperature", "0", "--ignore-eos"]
COMPARED = ("prompt_ids", "generated_ids", "text", "finish_reason", "usage")
results = []


def run(argv, expect_rc=0, timeout=300):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if expect_rc is not None and p.returncode != expect_rc:
        raise AssertionError("rc=%d (wanted %d) for %s:\n%s" %
                             (p.returncode, expect_rc, " ".join(argv), p.stderr[-1500:]))
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def case(fn):
    try:
        fn()
        results.append((fn.__name__, None))
        print("PASS %s" % fn.__name__, flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        results.append((fn.__name__, e))
        print("FAIL %s: %s" % (fn.__name__, e), flush=True)


def wait_for_info(router_address, router_proc, timeout=120):
    """Polls `caduceus-cli info` the way deployment checks do, until it exits 0 with a replica up."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if not router_proc.alive():
            raise RuntimeError("router exited with %s:\n%s" % (router_proc.popen.returncode,
                                                                router_proc.tail()))
        p = run([CLI, "--router", router_address, "info", "--timeout", "2"], expect_rc=None)
        if p.returncode == 0:
            info = last_json(p)
            if info["replicas_up"] >= 1:
                return info
            last = "replicas_up=0"
        else:
            last = p.stderr.strip()
        time.sleep(0.3)
    raise TimeoutError("caduceus-cli info never succeeded (last: %s)" % last)


def main():
    c = cluster.Cluster()
    try:
        group = c.start_worker_group(MODEL, 1, name="w", extra=["--kv-cache-bytes", 64 << 20])
        cluster.wait_serving(group.address, processes=group.ranks)
        address = "127.0.0.1:%d" % cluster.free_port()
        router = c.start("router", "caduceus-router",
                         ["--model", MODEL, "--listen", address,
                          "--metrics-listen", "127.0.0.1:%d" % cluster.free_port(),
                          "--replica", group.address])
        info = wait_for_info(address, router)
        print("router up: %s" % json.dumps(info), flush=True)
        cli = [CLI, "--router", address]
        checks(cli, address, info)
        secured_router_checks(c, group.address)
    except BaseException:
        c.dump_logs()
        raise
    else:
        if any(e for _, e in results):
            c.dump_logs()
    finally:
        c.close()


def checks(cli, address, info):
    @case
    def info_describes_the_tiny_model():
        assert info["vocab_size"] == 128256, info
        assert info["bos_token_id"] == 128000, info
        assert info["max_context"] > 0 and info["tp_size"] == 1, info
        assert info["has_chat_template"] is True, info

    @case
    def generate_prompt_ids_matches_local_engine():
        ids = "128000,9906,11,1268,527,499"
        served = last_json(run(cli + ["generate", "--prompt-ids", ids, *GREEDY, "--json"]))
        local = last_json(run([GEN, "--model", MODEL, "--prompt-ids", ids, *GREEDY, "--json"]))
        for key in COMPARED:
            assert served[key] == local[key], (key, served[key], local[key])
        assert served["finish_reason"] == "length"
        assert served["request_id"] and served["replica"], served
        for key in ("time_to_first_token_s", "total_s", "queue_s"):
            assert served["timings"][key] >= 0, served["timings"]
        assert "logprobs" not in served

    @case
    def generate_prompt_text_matches_local_engine():
        served = last_json(run(cli + ["generate", "--prompt", "Hello, how are", *GREEDY, "--json"]))
        local = last_json(run([GEN, "--model", MODEL, "--prompt", "Hello, how are", *GREEDY, "--json"]))
        for key in COMPARED:
            assert served[key] == local[key], (key, served[key], local[key])
        assert served["prompt_ids"][0] == 128000  # BOS added, once

    @case
    def chat_matches_local_chat():
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Dose of amoxicillin for otitis media?"}], f)
        served = last_json(run(cli + ["chat", "--messages", f.name, *GREEDY, "--json"]))
        local = last_json(run([GEN, "--model", MODEL, "--chat", f.name, *GREEDY, "--json"]))
        for key in COMPARED:
            assert served[key] == local[key], (key, served[key], local[key])
        streamed = run(cli + ["chat", "--messages", f.name, *GREEDY]).stdout
        assert streamed == served["text"] + "\n", (streamed, served["text"])
        os.unlink(f.name)

    @case
    def stream_text_equals_unary_text():
        args = ["generate", "--prompt-ids", "128000,9906", "--max-new-tokens", "12",
                "--temperature", "0", "--ignore-eos"]
        unary = last_json(run(cli + args + ["--json"]))
        streamed = run(cli + args).stdout
        assert streamed == unary["text"] + "\n", (streamed, unary["text"])
        # --json --stream: the text streams, then the same object as the unary call.
        p = run(cli + args + ["--json", "--stream"])
        both = last_json(p)
        for key in COMPARED:
            assert both[key] == unary[key], (key, both[key], unary[key])
        before = p.stdout[: p.stdout.rstrip("\n").rfind("\n") + 1]
        assert before == unary["text"] + "\n", (before, unary["text"])
        assert both["request_id"], both

    @case
    def logprobs_have_caduceus_generate_shape():
        args = ["--prompt-ids", "128000,9906", "--max-new-tokens", "3", "--temperature", "0",
                "--ignore-eos", "--logprobs", "2", "--json"]
        served = last_json(run(cli + ["generate", *args]))
        local = last_json(run([GEN, "--model", MODEL, *args]))
        assert served["generated_ids"] == local["generated_ids"]
        assert len(served["logprobs"]) == 3, served["logprobs"]
        for s, l in zip(served["logprobs"], local["logprobs"]):
            assert s["id"] == l["id"] and len(s["top"]) == 2, (s, l)
            assert s["top"][0][0] == s["id"], s  # greedy: the chosen token is the most likely
            assert abs(s["logprob"] - l["logprob"]) < 1e-3, (s, l)

    @case
    def request_id_is_echoed():
        out = last_json(run(cli + ["generate", "--prompt-ids", "128000,9906", *GREEDY,
                                   "--request-id", "cli-test-7", "--json"]))
        assert out["request_id"] == "cli-test-7", out["request_id"]

    @case
    def tokenize_text_and_messages():
        out = last_json(run(cli + ["tokenize", "--text", "Hello<|eot_id|>", "--add-bos",
                                   "--allow-special"]))
        assert out["token_ids"][0] == 128000 and out["token_ids"][-1] == 128009, out
        assert len(out["tokens"]) == len(out["token_ids"]), out
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([{"role": "user", "content": "Hi"}], f)
        chat = last_json(run(cli + ["tokenize", "--messages", f.name]))
        assert chat["token_ids"][0] == 128000, chat
        assert chat["token_ids"][-4:] == [128006, 78191, 128007, 271], chat  # assistant header
        os.unlink(f.name)

    @case
    def score_text_and_ids_agree_with_generation():
        # The greedy continuation of a prompt scores as greedy, with the logprobs generate reports.
        args = ["--prompt-ids", "128000,9906", "--max-new-tokens", "3", "--temperature", "0",
                "--ignore-eos", "--logprobs", "1", "--json"]
        gen = last_json(run(cli + ["generate", *args]))
        ids = last_json(run(cli + ["score", "--context-ids", "128000,9906", "--continuation-ids",
                                   ",".join(map(str, gen["generated_ids"]))]))
        assert [t["token_id"] for t in ids["tokens"]] == gen["generated_ids"], ids
        assert ids["is_greedy"] and ids["context_token_ids"] == [128000, 9906], ids
        for t, l in zip(ids["tokens"], gen["logprobs"]):
            assert abs(t["logprob"] - l["logprob"]) < 1e-3, (t, l)
        assert abs(ids["logprob"] - sum(t["logprob"] for t in ids["tokens"])) < 1e-6, ids
        text = last_json(run(cli + ["score", "--context", "Answer:", "--continuation", " yes"]))
        assert text["context_token_ids"][0] == 128000 and text["tokens"], text
        assert "".join(t["text"] for t in text["tokens"]) == " yes", text
        run(cli + ["score", "--context", "a"], expect_rc=2)
        run(cli + ["score", "--continuation", "b", "--context-ids", "1"], expect_rc=2)

    @case
    def router_errors_exit_1_with_code_name():
        p = run(cli + ["generate", "--prompt-ids", "1,2", "--top-p", "1.5", "--json"], expect_rc=1)
        assert "error: INVALID_ARGUMENT:" in p.stderr and "top_p" in p.stderr, p.stderr
        assert p.stdout == "", p.stdout
        p = run(cli + ["generate", "--prompt-ids", "1,2", "--top-p", "1.5"], expect_rc=1)
        assert "error: INVALID_ARGUMENT:" in p.stderr, p.stderr
        p = run([CLI, "--router", "127.0.0.1:%d" % cluster.free_port(), "info", "--timeout", "2"],
                expect_rc=1)
        assert "error: UNAVAILABLE:" in p.stderr, p.stderr

    @case
    def usage_errors_exit_2():
        for args in (["generate"], ["generate", "--prompt", "a", "--prompt-ids", "1"],
                     ["generate", "--prompt-ids", "1,x"], ["chat"], ["frobnicate"], []):
            p = run(cli + args, expect_rc=2)
            assert p.stderr.startswith("error: "), (args, p.stderr)

    @case
    def bench_completes_every_request():
        p = run([BENCH, "--router", address, "--concurrency", "4", "--requests", "12",
                 "--prompt-len", "16", "--output-len", "8", "--json"])
        r = last_json(p)
        assert r["requests"] == 12 and r["concurrency"] == 4 and r["rate"] is None, r
        assert r["completed"] == 12 and r["errors"] == {}, r
        assert r["output_tokens"] == 12 * 8, r
        assert r["duration_s"] > 0 and r["throughput"]["requests_per_s"] > 0, r
        assert r["throughput"]["output_tokens_per_s"] > 0, r
        for metric in ("ttft_s", "itl_s", "latency_s"):
            m = r[metric]
            assert 0 <= m["p50"] <= m["p90"] <= m["p99"], (metric, m)
            assert m["mean"] > 0, (metric, m)
        assert r["ttft_s"]["p50"] <= r["latency_s"]["p50"], r

    @case
    def bench_counts_errors_by_status():
        # Every request asks for more tokens than the context holds: all refused, none lost.
        p = run([BENCH, "--router", address, "--concurrency", "3", "--requests", "5",
                 "--prompt-len", "8", "--output-len", "100000000", "--json"], expect_rc=1)
        r = last_json(p)
        assert r["completed"] == 0 and r["errors"] == {"INVALID_ARGUMENT": 5}, r
        assert "INVALID_ARGUMENT x5, e.g.: " in p.stderr, p.stderr

    @case
    def bench_open_loop_with_jitter():
        p = run([BENCH, "--router", address, "--concurrency", "2", "--requests", "6", "--rate", "20",
                 "--prompt-len", "12", "--prompt-len-jitter", "4", "--output-len", "4", "--json"])
        r = last_json(p)
        assert r["rate"] == 20 and r["completed"] == 6 and r["errors"] == {}, r
        table = run([BENCH, "--router", address, "--requests", "2", "--prompt-len", "8",
                     "--output-len", "2"]).stdout
        assert "ttft" in table and "p99" in table, table


def make_tls_files(directory):
    """A self-signed certificate for 127.0.0.1 (the address the client dials), or None."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], capture_output=True, text=True)
    return (cert, key) if p.returncode == 0 else None


def secured_router_checks(c, replica):
    """--api-token-file and --tls-ca against a router that requires both. It shares the worker
    (info needs a replica up) but runs last and only answers info and tokenize, which send the
    worker nothing but Info/Health probes."""
    directory = tempfile.mkdtemp(prefix="caduceus-cli-tls-")
    token = os.path.join(directory, "token")
    with open(token, "w") as f:
        f.write("s3cret-token\n")  # the trailing newline must not count
    tls = make_tls_files(directory)
    address = "127.0.0.1:%d" % cluster.free_port()
    args = ["--model", MODEL, "--listen", address,
            "--metrics-listen", "127.0.0.1:%d" % cluster.free_port(), "--replica", replica,
            "--api-token-file", token]
    if tls:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    router = c.start("secured-router", "caduceus-router", args)
    base = [CLI, "--router", address, "--timeout", "5"] + (["--tls-ca", tls[0]] if tls else [])

    @case
    def bearer_token_and_tls():
        if not tls:
            print("(openssl failed: token only, no TLS)")
        deadline = time.time() + 60
        while True:
            p = run(base + ["--api-token-file", token, "info"], expect_rc=None)
            if p.returncode == 0 or time.time() > deadline or not router.alive():
                break
            time.sleep(0.3)
        assert p.returncode == 0, (p.stderr, router.tail())
        assert last_json(p)["vocab_size"] == 128256
        out = last_json(run(base + ["--api-token-file", token, "tokenize", "--text", "Hi"]))
        assert out["token_ids"], out
        p = run(base + ["info"], expect_rc=1)
        assert "error: UNAUTHENTICATED:" in p.stderr, p.stderr
        with open(os.path.join(directory, "wrong"), "w") as f:
            f.write("nope")
        p = run(base + ["--api-token-file", os.path.join(directory, "wrong"), "info"], expect_rc=1)
        assert "error: UNAUTHENTICATED:" in p.stderr, p.stderr
        if tls:  # plaintext to a TLS port fails as a call error, not a hang
            plain = [CLI, "--router", address, "--timeout", "5", "--api-token-file", token, "info"]
            p = run(plain, expect_rc=1)
            assert "error: UNAVAILABLE:" in p.stderr, p.stderr


if __name__ == "__main__":
    main()
    failed = [n for n, e in results if e]
    print("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
    sys.exit(1 if failed or not results else 0)
