#!/usr/bin/python3
"""End to end through caduceus-router with real processes on loopback and an independent client
(Python grpcio, stubs generated from our protos):

  cluster A: router + replica 1 (TP=2, listed with --replica) + replica 2 (TP=1, registers itself
  with --router); a real Prometheus server scrapes the router and every worker rank.
    * greedy output through the router equals caduceus-generate and the oracle's tokens;
    * streamed text equals unary text (Generate and Chat);
    * 64 concurrent requests all complete with the right tokens;
    * a cancelled stream and an expired deadline free their KV blocks (seen in the metrics);
    * bad input gets INVALID_ARGUMENT, including invalid UTF-8 sent as raw bytes;
    * a shared prefix is reused (prefix-cache hits, cached prompt tokens);
    * promtool check metrics passes on every /metrics page, and PromQL queries for TTFT p99,
      tokens/s and KV usage return data; every metric the dashboard/alerts/rules use is exported;
    * killing replica 2's leader marks it down and requests keep succeeding on replica 1.
  clusters B to F (router_e2e_scenarios.py): queue limit and router drain, preemption,
  worker drain, replica failure, a frozen replica.

usage: test_router_e2e.py MODEL_DIR ORACLE_JSON [DEPLOY_CHECK_SCRIPT]
CADUCEUS_E2E_ONLY=REGEX runs only the checks and clusters whose names match (cluster A always
starts; a check may need the ones before it): for working on one of them. CTest runs them all."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request

import grpc

import cluster
import router_client as rc
import router_e2e_scenarios as scenarios
from caduceus.v1 import generation_pb2 as g

CHECKS = []


def check(name):
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn
    return wrap


class Env:
    pass


REGISTRY_TOKEN = "registry-secret-for-the-test"
# Well above --heartbeat-timeout 3: replica_down must see the killed (registered) replica counted
# down before the router forgets it (CI once missed a 1 s window with 4).
FORGET_AFTER = 12


def env_audit_path(env):
    env.audit_log = os.path.join(tempfile.mkdtemp(prefix="caduceus-audit-"), "audit.jsonl")
    return env.audit_log


def start_cluster_a(c, model):
    env = Env()
    env.router_addr = "127.0.0.1:%d" % cluster.free_port()
    env.router_metrics = "127.0.0.1:%d" % cluster.free_port()
    token = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
    token.write(REGISTRY_TOKEN + "\n")
    token.close()
    env.g1 = c.start_worker_group(model, 2, name="r1", extra=cluster.WORKER_KV)
    env.g2 = c.start_worker_group(model, 1, name="r2", extra=cluster.WORKER_KV,
                                  leader_extra=["--router", env.router_addr,
                                                "--registry-token-file", token.name])
    env.router = c.start("routerA", "caduceus-router",
                         ["--model", model, "--listen", env.router_addr,
                          "--metrics-listen", env.router_metrics, "--replica", env.g1.address,
                          "--heartbeat-timeout", 3, "--registry-token-file", token.name,
                          "--forget-replica-after", FORGET_AFTER, "--audit-log", env_audit_path(env)])
    cluster.wait_serving(env.router_addr, processes=[env.router])
    env.stub = rc.stub(env.router_addr)
    info = cluster.wait_until("two replicas up", lambda: rc.info_if(env.stub, 2), timeout=120)
    print("  router up:", info.model_id, "replicas", info.replicas_up, "blocks", info.kv_blocks_total)
    env.model = model
    return env


def generate_cli(model, prompt_ids, n):
    out = subprocess.run([os.path.join(cluster.BIN_DIR, "caduceus-generate"), "--model", model,
                          "--prompt-ids", ",".join(map(str, prompt_ids)), "--max-new-tokens", str(n),
                          "--temperature", "0", "--ignore-eos", "--json"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@check("greedy through the router equals caduceus-generate and the oracle")
def greedy_matches(env):
    for p in env.oracle["prompts"][:3]:
        r = env.stub.Generate(rc.ids_request(p["prompt_ids"], 16), timeout=120)
        want = generate_cli(env.model, p["prompt_ids"], 16)
        assert list(r.token_ids) == want["generated_ids"], (list(r.token_ids), want["generated_ids"])
        assert list(r.token_ids) == p["gen_ids"][:16]
        assert r.text == want["text"], (r.text, want["text"])
        assert r.finish_reason == g.FINISH_REASON_LENGTH
        assert list(r.prompt_token_ids) == p["prompt_ids"]
        assert r.usage.prompt_tokens == len(p["prompt_ids"]) and r.usage.generated_tokens == 16
        assert r.timing.time_to_first_token_seconds > 0
        print("    %s: %d tokens identical (replica %s)" % (p["prompt_ids"][:3], 16, r.replica))


@check("streamed text equals unary text (Generate, Chat)")
def stream_equals_unary(env):
    unary = env.stub.Generate(rc.text_request("The patient presents with", 24), timeout=120)
    text, ids, last = rc.collect_stream(
        env.stub.GenerateStream(rc.text_request("The patient presents with", 24), timeout=120))
    assert text == unary.text and ids == list(unary.token_ids), (text, unary.text)
    assert last.finish_reason == g.FINISH_REASON_LENGTH and last.usage.generated_tokens == 24
    msgs = [("system", "You are a careful clinical assistant."), ("user", "What is sepsis?")]
    unary = env.stub.Chat(rc.chat_request(msgs, 20), timeout=120)
    text, ids, _ = rc.collect_stream(env.stub.ChatStream(rc.chat_request(msgs, 20), timeout=120))
    assert text == unary.text and ids == list(unary.token_ids)
    print("    %r" % unary.text[:60])


@check("64 concurrent requests all complete correctly")
def concurrent(env):
    prompts = [p["prompt_ids"] for p in env.oracle["prompts"][:8]]
    expected = [p["gen_ids"][:12] for p in env.oracle["prompts"][:8]]
    results = [None] * 64
    errors = []

    def worker(i):
        try:
            r = env.stub.Generate(rc.ids_request(prompts[i % 8], 12), timeout=300)
            results[i] = list(r.token_ids)
        except grpc.RpcError as e:
            errors.append("%d: %s %s" % (i, e.code(), e.details()))

    start = time.time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(64):
        assert results[i] == expected[i % 8], (i, results[i], expected[i % 8])
    print("    64 x 12 tokens in %.1f s" % (time.time() - start))


def kv_idle(env):
    text = cluster.scrape(env.router_metrics)
    usage = cluster.metric_value(text, "caduceus_kv_cache_usage_ratio")
    running = cluster.metric_value(text, "caduceus_requests_running")
    return usage == 0 and running == 0


@check("a cancelled stream frees its KV blocks")
def cancel_frees(env):
    before = cluster.metric_value(cluster.scrape(env.router_metrics), "caduceus_requests_total",
                                  {"status": "cancelled"}) or 0
    call = env.stub.GenerateStream(rc.ids_request([128000, 9906], 3000), timeout=300)
    got = 0
    for m in call:
        got += len(m.token_ids)
        if got >= 3:
            break
    text = cluster.scrape(env.router_metrics)
    assert (cluster.metric_value(text, "caduceus_kv_cache_usage_ratio") or 0) > 0, "no blocks in use?"
    call.cancel()
    cluster.wait_until("blocks freed after cancel", lambda: kv_idle(env), timeout=20)
    after = cluster.metric_value(cluster.scrape(env.router_metrics), "caduceus_requests_total",
                                 {"status": "cancelled"})
    assert after == before + 1, (before, after)
    # The worker forgot the sequence too.
    for grp in (env.g1, env.g2):
        if grp.leader.alive():
            cluster.wait_until("worker released", lambda: cluster.metric_value(
                cluster.scrape(grp.metrics_address), "caduceus_worker_kv_blocks_used") == 0)


@check("an expired deadline answers DEADLINE_EXCEEDED and frees the blocks")
def deadline(env):
    rc.expect_error(lambda: env.stub.Generate(rc.ids_request([128000, 9906], 4000), timeout=0.5),
                 grpc.StatusCode.DEADLINE_EXCEEDED)
    cluster.wait_until("blocks freed after deadline", lambda: kv_idle(env), timeout=20)
    n = cluster.metric_value(cluster.scrape(env.router_metrics), "caduceus_requests_total",
                             {"status": "deadline_exceeded"})
    assert n and n >= 1, n


@check("bad input gets INVALID_ARGUMENT")
def bad_input(env):
    bad = grpc.StatusCode.INVALID_ARGUMENT
    rc.expect_error(lambda: env.stub.Generate(g.GenerateRequest(), timeout=10), bad, "empty prompt")
    rc.expect_error(lambda: env.stub.Generate(rc.ids_request([1], 4, top_p=1.5), timeout=10), bad, "top_p")
    rc.expect_error(lambda: env.stub.Generate(rc.ids_request([1], 9000), timeout=10), bad, "context")
    rc.expect_error(lambda: env.stub.Generate(rc.ids_request([1 << 20], 4), timeout=10), bad, "vocabulary")
    rc.expect_error(lambda: env.stub.Generate(rc.ids_request([1], 4, stop=["x"] * 17), timeout=10), bad,
                 "stop")
    rc.expect_error(lambda: env.stub.Chat(rc.chat_request([("doctor", "hi")], 4), timeout=10), bad, "role")
    # Invalid UTF-8 cannot be built with Python str: send raw bytes for field 2 (prompt).
    raw = bytes([0x12, 3, ord("a"), 0xff, ord("b")])
    call = grpc.insecure_channel(env.router_addr).unary_unary(
        "/caduceus.v1.Generation/Generate", request_serializer=lambda b: b,
        response_deserializer=lambda b: b)
    try:
        call(raw, timeout=10)
        raise AssertionError("invalid UTF-8 accepted")
    except grpc.RpcError as e:
        print("    raw invalid UTF-8: %s: %s" % (e.code().name, e.details()))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        assert "UTF-8" in e.details()
    # The same for the streams (gRPC's callback handler would say UNIMPLEMENTED, with no message).
    # ChatRequest field 2 is a ChatMessage whose field 2 (content) holds the bad byte.
    chat_raw = bytes([0x12, 9, 0x0a, 4]) + b"user" + bytes([0x12, 1, 0xff])
    for method, body in (("GenerateStream", raw), ("ChatStream", chat_raw)):
        stream = grpc.insecure_channel(env.router_addr).unary_stream(
            "/caduceus.v1.Generation/" + method, request_serializer=lambda b: b,
            response_deserializer=lambda b: b)
        try:
            list(stream(body, timeout=10))
            raise AssertionError("%s accepted invalid UTF-8" % method)
        except grpc.RpcError as e:
            print("    raw invalid UTF-8 to %s: %s: %s" % (method, e.code().name, e.details()))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.code())
            assert "UTF-8" in e.details(), e.details()
    # A request_id is a label echoed in every message, not a payload.
    too_long_id = rc.ids_request([1], 2)
    too_long_id.request_id = "x" * 257
    rc.expect_error(lambda: env.stub.Generate(too_long_id, timeout=10), bad, "request_id")
    rc.expect_error(lambda: list(env.stub.GenerateStream(too_long_id, timeout=10)), bad, "request_id")
    # Still serving.
    assert len(env.stub.Generate(rc.ids_request([128000, 9906], 2), timeout=60).token_ids) == 2


@check("every generation call leaves one audit line, without prompt or output text")
def audit_log(env):
    secret = "Patient Jane Roe, MRN 0042, reports chest pain"
    req = rc.text_request(secret, 6)
    req.request_id = "audit-ok"
    ok = env.stub.Generate(req, timeout=60)
    chat = rc.chat_request([("user", secret)], 4)
    chat.request_id = "audit-chat"
    rc.collect_stream(env.stub.ChatStream(chat, timeout=60))
    bad = rc.text_request(secret, 4)
    bad.params.sampling.temperature = -1.0
    rc.expect_error(lambda: env.stub.Generate(bad, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                    "temperature")
    tokenized = env.stub.Tokenize(g.TokenizeRequest(text=secret), timeout=10)
    revision = env.stub.GetModelInfo(g.GetModelInfoRequest(), timeout=10).revision

    def records():
        with open(env.audit_log) as f:
            return [json.loads(line) for line in f]  # every line is one JSON object
    wanted = {"audit-ok", "audit-chat"}
    lines = cluster.wait_until("audit lines of both calls", lambda: (lambda rs: rs if wanted <= {
        r["request_id"] for r in rs} else None)(records()), timeout=10)
    by_id = {r["request_id"]: r for r in lines}
    r = by_id["audit-ok"]
    assert r["method"] == "Generate" and r["status"] == "OK", r
    assert r["model"]["revision"] == revision and r["model"]["replica"] == ok.replica, r
    assert r["params"]["max_new_tokens"] == 6 and r["params"]["temperature"] == 0, r
    assert r["prompt_tokens"] == len(ok.prompt_token_ids) and r["generated_tokens"] == 6, r
    assert r["finish_reason"] == "length" and r["duration_seconds"] > 0, r
    assert r["caller"]["peer"].startswith("ipv4:127.0.0.1:") and not r["caller"]["api_token_checked"], r
    c = by_id["audit-chat"]
    assert c["method"] == "ChatStream" and c["status"] == "OK" and c["generated_tokens"] == 4, c
    bad = [x for x in lines if x["status"] == "INVALID_ARGUMENT" and "temperature" in x.get("error", "")]
    assert bad and bad[-1]["method"] == "Generate" and "params" not in bad[-1], bad
    tok = [x for x in lines if x["method"] == "Tokenize"]
    assert tok and tok[-1]["status"] == "OK" and tok[-1]["prompt_tokens"] == len(tokenized.token_ids), tok
    text = open(env.audit_log).read()
    assert "Jane Roe" not in text and ok.text not in text, "the audit log holds prompt or output text"
    print("    %d audit lines; Generate, ChatStream, Tokenize and a refused call recorded, no text"
          % len(lines))


@check("Score: continuation logprobs equal the float64 reference; text split as lm-eval-harness")
def score(env):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "reference"))
    from llama_reference import LlamaReference
    ref = LlamaReference(env.model, cache_gb=1.0)
    prompt = env.oracle["prompts"][0]
    greedy = prompt["gen_ids"][:4]
    off = [(greedy[0] + 7) % 128000] + greedy[1:]
    # A context longer than the prefill chunk (512): the scored rows span two steps.
    long_context = [128000] + [(1000 + 37 * i) % 120000 for i in range(520)]
    # The third case twice: where the second lands on the first's replica, its prefix cache
    # holds blocks with scored rows, which must be computed again (cached <= context - 1).
    cases = [(prompt["prompt_ids"], greedy, True), (prompt["prompt_ids"], off, False),
             (long_context[:505], [9906, 1917, 13, 578, 374] * 3, None),
             (long_context[:505], [9906, 1917, 13, 578, 374] * 3, None),
             (long_context, [9906, 11], None)]
    cached = []
    for context, continuation, want_greedy in cases:
        r = env.stub.Score(g.ScoreRequest(context_ids=context, continuation_ids=continuation),
                           timeout=120)
        want = ref.score(context, continuation)
        assert [t.token_id for t in r.tokens] == continuation, r.tokens
        assert list(r.context_token_ids) == context
        for k, (t, (logprob, best, margin)) in enumerate(zip(r.tokens, want)):
            assert abs(t.logprob - logprob) < 2e-3, (len(context), k, t.logprob, logprob)
            if margin > 1e-3:  # a near tie may go either way in float32
                assert t.greedy_token_id == best and t.is_greedy == (best == t.token_id), (k, t, best)
        assert abs(r.logprob - sum(w[0] for w in want)) < 1e-2, (r.logprob, want)
        if want_greedy is not None:
            assert r.is_greedy == want_greedy, r
        assert r.usage.prompt_tokens == len(context) + len(continuation)
        assert r.usage.cached_prompt_tokens <= len(context) - 1, r.usage
        cached.append(r.usage.cached_prompt_tokens)
        env.score_case = (context, continuation, want)  # the last: two prefill steps
    # Text: the context's trailing space moves to the continuation; the continuation is what
    # the whole text encodes to after the context's own encoding.
    whole = list(env.stub.Tokenize(g.TokenizeRequest(text="Question: Is aspirin an NSAID?\nAnswer: yes",
                                                     add_bos=True), timeout=10).token_ids)
    head = list(env.stub.Tokenize(g.TokenizeRequest(text="Question: Is aspirin an NSAID?\nAnswer:",
                                                    add_bos=True), timeout=10).token_ids)
    a = env.stub.Score(g.ScoreRequest(context="Question: Is aspirin an NSAID?\nAnswer:",
                                      continuation=" yes"), timeout=60)
    b = env.stub.Score(g.ScoreRequest(context="Question: Is aspirin an NSAID?\nAnswer: ",
                                      continuation="yes"), timeout=60)
    assert list(a.context_token_ids) == head and [t.token_id for t in a.tokens] == whole[len(head):]
    assert [t.token_id for t in b.tokens] == [t.token_id for t in a.tokens]
    assert abs(a.logprob - b.logprob) < 1e-6 and "".join(t.text for t in a.tokens) == " yes"
    rc.expect_error(lambda: env.stub.Score(g.ScoreRequest(context="x", continuation_ids=[5]),
                                           timeout=10), grpc.StatusCode.INVALID_ARGUMENT, "not both")
    rc.expect_error(lambda: env.stub.Score(g.ScoreRequest(context="x"), timeout=10),
                    grpc.StatusCode.INVALID_ARGUMENT, "continuation")
    rc.expect_error(lambda: env.stub.Score(g.ScoreRequest(context_ids=[1], continuation_ids=[1 << 20]),
                                           timeout=10), grpc.StatusCode.INVALID_ARGUMENT, "vocabulary")
    print("    %d cases equal the reference (cached prompt tokens %s); ' yes' after 'Answer:' "
          "logprob %.3f (tokens %s)" % (len(cases), cached, a.logprob, [t.token_id for t in a.tokens]))


@check("the worker registry wants its token and forgets replicas that stay down")
def registry(env):
    from caduceus.worker.v1 import worker_pb2, worker_pb2_grpc
    stub = worker_pb2_grpc.ReplicaRegistryStub(grpc.insecure_channel(env.router_addr))
    bogus = "127.0.0.1:%d" % cluster.free_port()  # nothing listens there
    request = worker_pb2.RegisterRequest(address=bogus)
    for metadata in ([], [("authorization", "Bearer wrong")]):
        rc.expect_error(lambda: stub.Register(request, metadata=metadata, timeout=10),
                     grpc.StatusCode.UNAUTHENTICATED, "registry")
    stub.Register(request, metadata=[("authorization", "bearer " + REGISTRY_TOKEN)], timeout=10)
    down = lambda: cluster.metric_value(cluster.scrape(env.router_metrics), "caduceus_replicas",
                                        {"state": "down"}) or 0
    cluster.wait_until("the bogus replica counted down", lambda: down() >= 1, timeout=10)
    start = time.time()
    cluster.wait_until("the bogus replica forgotten", lambda: down() == 0, timeout=FORGET_AFTER + 20)
    waited = time.time() - start
    assert "replica %s down for" % bogus in open(env.router.log_path, errors="replace").read()
    # The registered worker (same token, up all along) is still there.
    assert rc.info_if(env.stub, 2) is not None, "a live replica was forgotten"
    print("    no token / wrong token: UNAUTHENTICATED; a never-up replica forgotten after %.1f s"
          % waited)


@check("Tokenize answers valid UTF-8 for pieces of a character; token_bytes are exact")
def tokenize_pieces(env):
    # Emoji, CJK and superscripts are several byte-level tokens each: a piece alone is not UTF-8.
    text = "Na\u207a K\u207a \U0001F637 \U0002000B 38\u00b0C"
    r = env.stub.Tokenize(g.TokenizeRequest(text=text), timeout=30)  # parsing it is the check
    assert len(r.tokens) == len(r.token_ids) == len(r.token_bytes)
    assert b"".join(r.token_bytes) == text.encode("utf-8"), r.token_bytes
    split = [b for b in r.token_bytes if b.decode("utf-8", "replace") != b.decode("utf-8", "ignore")]
    assert split, "no token held part of a character: the text no longer tests that"
    assert all("\ufffd" in t for t, b in zip(r.tokens, r.token_bytes) if b in split)
    print("    %d tokens, %d of them part of a character" % (len(r.token_ids), len(split)))


@check("stop_token_ids stop a request that ignores EOS")
def stop_token_with_ignore_eos(env):
    prompt = env.oracle["prompts"][0]["prompt_ids"]
    free = list(env.stub.Generate(rc.ids_request(prompt, 12), timeout=120).token_ids)
    at = next(i for i in range(2, len(free)) if free[i] not in free[:i])
    req = rc.ids_request(prompt, 12)  # ignore_eos=True
    req.params.stop_token_ids.append(free[at])
    r = env.stub.Generate(req, timeout=120)
    assert list(r.token_ids) == free[:at + 1], (list(r.token_ids), free, at)
    assert r.finish_reason == g.FINISH_REASON_STOP_TOKEN, r.finish_reason
    print("    stopped after %d tokens at id %d" % (at + 1, free[at]))


@check("a shared prefix is reused")
def prefix_reuse(env):
    system = ("You are a clinical decision support assistant in a hospital. Answer concisely, cite "
              "guidelines where relevant, and flag anything that needs urgent escalation. ") * 3
    before = cluster.metric_value(cluster.scrape(env.router_metrics),
                                  "caduceus_prefix_cache_hits_total") or 0
    cached = []
    for q in ["What is sepsis?", "Define tachycardia.", "What is a normal INR?", "Dose of aspirin?"]:
        r = env.stub.Chat(rc.chat_request([("system", system), ("user", q)], 4), timeout=120)
        cached.append(r.usage.cached_prompt_tokens)
    after = cluster.metric_value(cluster.scrape(env.router_metrics), "caduceus_prefix_cache_hits_total")
    print("    cached prompt tokens per request:", cached, "hits", before, "->", after)
    assert max(cached) >= 16 and after > before


def start_prometheus(c, targets):
    prom_dir = tempfile.mkdtemp(prefix="caduceus-prom-")
    port = cluster.free_port()
    config = os.path.join(prom_dir, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: caduceus\n    static_configs:\n"
                "      - targets: [%s]\n" % ", ".join('"%s"' % t for t in targets))
    argv = ["--config.file=" + config, "--storage.tsdb.path=" + os.path.join(prom_dir, "data"),
            "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"]
    p = cluster.Process("prometheus", [shutil.which("prometheus")] + argv, c.log_dir)
    c.procs.append(p)
    return "http://127.0.0.1:%d" % port


def promql(url, query):
    with urllib.request.urlopen(url + "/api/v1/query?query=" + urllib.parse.quote(query), timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@check("Prometheus scrapes everything; promtool and PromQL agree")
def prometheus(env):
    pages = {"router": env.router_metrics, "r1-leader": env.g1.metrics_address,
             "r2-leader": env.g2.metrics_address}
    for name, addr in pages.items():
        text = cluster.scrape(addr)
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                             text=True)
        # promtool exits 1 on lint problems too; errors about parsing are what must not happen.
        assert "error while linting" not in out.stderr and "parse" not in out.stderr.lower(), out.stderr
        problems = [l for l in (out.stdout + out.stderr).splitlines()
                    if l.startswith("caduceus_") and "counter metrics should have" not in l]
        assert not problems, "%s: %s" % (name, problems)
    url = env.prom_url
    cluster.wait_until("prometheus targets up", lambda: len(promql(url, "up == 1")) >= 3, timeout=60)
    # Traffic inside the rate window.
    for _ in range(3):
        env.stub.Generate(rc.ids_request([128000, 9906, 11], 8), timeout=60)
    time.sleep(3)
    queries = {
        "ttft p99": "histogram_quantile(0.99, sum by (le) (rate(caduceus_time_to_first_token_seconds_bucket[1m])))",
        "tokens/s": "sum(rate(caduceus_generation_tokens_total[1m]))",
        "kv usage": "caduceus_kv_cache_usage_ratio",
        "worker step p50": "histogram_quantile(0.5, sum by (le) (rate(caduceus_worker_step_duration_seconds_bucket[1m])))",
    }
    for name, q in queries.items():
        result = cluster.wait_until(name, lambda q=q: promql(url, q), timeout=30)
        print("    %s: %s" % (name, result[0]["value"][1]))
    if env.deploy_check:
        out = subprocess.run([sys.executable, env.deploy_check, "--prometheus", url],
                             capture_output=True, text=True, timeout=120)
        print("    " + (out.stdout.strip().splitlines() or [""])[-1])
        assert out.returncode == 0, out.stdout + out.stderr


@check("killing a replica's leader marks it down; the other replica keeps serving")
def replica_down(env):
    env.g2.leader.signal(signal.SIGKILL)
    cluster.wait_until("replica marked down", lambda: cluster.metric_value(
        cluster.scrape(env.router_metrics), "caduceus_replicas", {"state": "down"}) == 1, timeout=30)
    for _ in range(4):
        r = env.stub.Generate(rc.ids_request([128000, 9906], 4), timeout=60)
        assert r.replica == env.g1.address, r.replica
    # Scoring on the tensor-parallel replica (vocab-parallel logits), which the Score check may
    # not have reached: the same answer as the reference.
    if getattr(env, "score_case", None):
        context, continuation, want = env.score_case
        r = env.stub.Score(g.ScoreRequest(context_ids=context, continuation_ids=continuation),
                           timeout=120)
        assert r.replica == env.g1.address, r.replica
        for t, (logprob, _, _) in zip(r.tokens, want):
            assert abs(t.logprob - logprob) < 2e-3, (t, logprob)
        print("    Score on the TP=2 replica equals the reference (%d tokens)" % len(r.tokens))


def main():
    model, oracle_path = sys.argv[1], sys.argv[2]
    c = cluster.Cluster()
    failures = []
    try:
        print("cluster A")
        env = start_cluster_a(c, model)
        with open(oracle_path) as f:
            env.oracle = json.load(f)
        env.deploy_check = sys.argv[3] if len(sys.argv) > 3 else None
        targets = [env.router_metrics, env.g1.metrics_address, env.g2.metrics_address]
        env.prom_url = start_prometheus(c, targets)
        only = re.compile(os.environ.get("CADUCEUS_E2E_ONLY", ""))
        for name, fn in CHECKS:
            if not only.search(name):
                continue
            print("- " + name)
            try:
                fn(env)
            except Exception as e:  # keep going: report every failing check
                failures.append("%s: %r" % (name, e))
                print("    FAILED: %r\n%s" % (e, traceback.format_exc()))
        c.close()
        for name, fn in (("cluster B", lambda: scenarios.cluster_b(c, model)),
                         ("cluster C", lambda: scenarios.cluster_c(c, model, env.oracle)),
                         ("cluster D", lambda: scenarios.cluster_d(c, model)),
                         ("cluster E", lambda: scenarios.cluster_e(c, model)),
                         ("cluster F", lambda: scenarios.cluster_f(c, model))):
            if not only.search(name):
                continue
            try:
                fn()
            except Exception as e:
                failures.append("%s: %r" % (name, e))
                # The line that failed and the processes' last words, before close() drops them.
                print("    FAILED: %r\n%s" % (e, traceback.format_exc()))
                c.dump_logs(sys.stdout)
            c.close()
        if failures:
            c.dump_logs()
    except Exception:
        c.dump_logs()
        raise
    finally:
        c.close()
    return cluster.report(failures, "checks failed")


if __name__ == "__main__":
    sys.exit(main())
