"""The OpenAI-compatible HTTP API end to end: a real router (--http-listen, bearer token, audit log)
and a worker as separate processes, driven over HTTP/1.1 by Python's own http.client (no OpenAI
SDK here: PyPI is out of reach; the wire format is what the SDK sends and parses).

Checked against independent references: greedy chat completions equal the oracle's token ids (a
float64 reference forward pass and the real tokenizer's chat-template ids), and HTTP answers equal
what the gRPC API answers for the same request. Then streaming (SSE framing, role chunk, usage
chunk, [DONE]), stop sequences, every error path with its HTTP status and OpenAI error body,
back-pressure (429 with Retry-After), a client that disconnects mid-stream (its request is
cancelled and its KV blocks freed), the audit record naming the HTTP client (and refusing a gRPC
caller's forged one), and a graceful drain (503 for new calls, running streams finish).

usage: test_openai_http.py MODEL_DIR ORACLE_JSON
"""

import http.client
import json
import os
import signal
import sys
import tempfile
import time


import cluster
import router_client as rc
from caduceus.v1 import generation_pb2 as g

TOKEN = "s3cret-http-token"        # caller "clinic-chat"
BATCH_TOKEN = "s3cret-batch-token"  # caller "batch-summaries", priority floor 10
AGENT = "caduceus-http-test/1"
HTTP_THREADS = 16  # the router's --http-threads


class Env:
    pass


def request(env, method, path, body=None, token=TOKEN, headers=None, raw=None):
    """One HTTP call on a fresh connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", env.http_port, timeout=300)
    h = {"User-Agent": AGENT}
    if body is not None or raw is not None:
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, payload


def post_json(env, path, body, **kw):
    status, headers, payload = request(env, "POST", path, body, **kw)
    return status, headers, json.loads(payload)


def post_retrying(env, path, body, **kw):
    """post_json, retried on 429 as OpenAI SDKs do: the router takes 2 running + 1 waiting, and
    what an earlier check left (a cancelled stream's last step) may still hold a slot."""
    for _ in range(50):
        status, headers, r = post_json(env, path, body, **kw)
        if status != 429:
            return status, headers, r
        time.sleep(0.2)
    raise AssertionError("still 429 after 50 tries: %s" % r)


def open_stream(env, path, body, headers=None):
    """Starts a streaming call; returns (connection, response) with the status line read."""
    conn = http.client.HTTPConnection("127.0.0.1", env.http_port, timeout=300)
    h = {"User-Agent": AGENT, "Content-Type": "application/json", "Authorization": "Bearer " + TOKEN}
    h.update(headers or {})
    conn.request("POST", path, body=json.dumps(dict(body, stream=True)), headers=h)
    return conn, conn.getresponse()


def next_event(response):
    """The next SSE event's data (a string), or None at the end of the body."""
    data = []
    while True:
        line = response.readline()
        if not line:
            return None
        line = line.decode().rstrip("\n")
        if line == "":
            if data:
                return "\n".join(data)
            continue
        assert line.startswith("data: "), "not an SSE data line: %r" % line
        data.append(line[len("data: "):])


def read_events(response):
    events = []
    while True:
        e = next_event(response)
        if e is None:
            return events
        events.append(e)


def greedy_body(**kw):
    body = {"temperature": 0, "ignore_eos": True}
    body.update(kw)
    return body


def token_ids(logprob_entries):
    """Ids from return_tokens_as_token_ids logprob entries ("token_id:N")."""
    out = []
    for e in logprob_entries:
        assert e["token"].startswith("token_id:"), e["token"]
        out.append(int(e["token"][len("token_id:"):]))
    return out


def grpc_metadata():
    return [("authorization", "Bearer " + TOKEN)]


def expect_error(status, headers, body, want_status, words, error_type=None):
    assert status == want_status, "want HTTP %d, got %d: %s" % (want_status, status, body)
    assert headers.get("content-type") == "application/json", headers
    err = body["error"]
    assert words in err["message"], "%r not in %r" % (words, err["message"])
    assert set(err) >= {"message", "type", "param", "code"}, err
    if error_type:
        assert err["type"] == error_type, err
    print("    HTTP %d %s: %s" % (status, err["type"], err["message"]))


# --- checks ---------------------------------------------------------------------------------

def check_models(env):
    status, _, body = request(env, "GET", "/v1/models")
    assert status == 200, body
    models = json.loads(body)
    assert models["object"] == "list" and len(models["data"]) == 1, models
    m = models["data"][0]
    assert m["id"] == env.served_name and m["object"] == "model", m
    info = env.stub.GetModelInfo(g.GetModelInfoRequest(), timeout=10, metadata=grpc_metadata())
    assert m["max_model_len"] == info.max_context and m["root"] == info.model_id, (m, info)
    assert m["revision"] == info.revision, m
    assert m["quantization"] == info.quantization == "none", (m, info.quantization)
    print("    /v1/models: %s (max_model_len %d, revision %s)" % (m["id"], m["max_model_len"], m["revision"]))


def check_chat_matches_oracle(env):
    for p in env.oracle["prompts"][:3]:
        status, _, body = post_json(env, "/v1/chat/completions", greedy_body(
            model=env.served_name, max_tokens=24, logprobs=True, return_tokens_as_token_ids=True,
            messages=[{"role": "system", "content": p["system"]}, {"role": "user", "content": p["user"]}]))
        assert status == 200, body
        choice = body["choices"][0]
        ids = token_ids(choice["logprobs"]["content"])
        assert ids == p["gen_ids"][:24], (ids, p["gen_ids"][:24])
        assert choice["finish_reason"] == "length", choice
        assert body["usage"]["prompt_tokens"] == len(p["prompt_ids"]), body["usage"]
        assert body["usage"]["completion_tokens"] == 24, body["usage"]
        assert body["usage"]["total_tokens"] == len(p["prompt_ids"]) + 24
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-"), body
        # The same request through gRPC: same text.
        want = env.stub.Chat(rc.chat_request([("system", p["system"]), ("user", p["user"])], 24),
                             timeout=120, metadata=grpc_metadata())
        assert choice["message"] == {"role": "assistant", "content": want.text}, (choice, want.text)
        assert list(want.token_ids) == ids
        print("    %d prompt tokens, 24 greedy tokens equal the oracle and gRPC Chat" % len(p["prompt_ids"]))


def check_completions(env):
    p = env.oracle["prompts"][3]
    body = greedy_body(model=env.served_name, prompt=p["prompt_ids"], max_tokens=20, logprobs=2,
                       return_tokens_as_token_ids=True)
    status, _, unary = post_json(env, "/v1/completions", body)
    assert status == 200, unary
    choice = unary["choices"][0]
    assert unary["object"] == "text_completion" and unary["id"].startswith("cmpl-"), unary
    assert [int(t[len("token_id:"):]) for t in choice["logprobs"]["tokens"]] == p["gen_ids"][:20]
    assert all(len(top) == 2 for top in choice["logprobs"]["top_logprobs"]), choice["logprobs"]
    want = env.stub.Generate(rc.ids_request(p["prompt_ids"], 20), timeout=120, metadata=grpc_metadata())
    assert choice["text"] == want.text, (choice["text"], want.text)
    # OpenAI's default length for completions is 16 tokens.
    status, _, short = post_json(env, "/v1/completions", greedy_body(prompt=p["prompt_ids"]))
    assert status == 200 and short["usage"]["completion_tokens"] == 16, short
    assert want.text.startswith(short["choices"][0]["text"])

    # Streamed: the same text, SSE framing, usage chunk, [DONE].
    conn, r = open_stream(env, "/v1/completions", dict(body, stream_options={"include_usage": True}))
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream", r.status
    events = read_events(r)
    conn.close()
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 20, chunks[-1]
    text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
    ids = [int(t[len("token_id:"):]) for c in chunks[:-1] if c["choices"][0]["logprobs"]
           for t in c["choices"][0]["logprobs"]["tokens"]]
    assert text == want.text and ids == p["gen_ids"][:20], (text, want.text)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert len({c["id"] for c in chunks}) == 1
    print("    completions: 20 tokens equal the oracle; streamed in %d chunks, same text" % (len(chunks) - 1))


def check_chat_stream_and_stop(env):
    messages = [{"role": "system", "content": "You are a careful clinical assistant."},
                {"role": "user", "content": "What is sepsis?"}]
    status, _, unary = post_json(env, "/v1/chat/completions", greedy_body(messages=messages, max_tokens=30))
    assert status == 200, unary
    text = unary["choices"][0]["message"]["content"]
    conn, r = open_stream(env, "/v1/chat/completions", greedy_body(messages=messages, max_tokens=30))
    assert r.status == 200, r.status
    events = read_events(r)
    conn.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, chunks[0]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == text, (streamed, text)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks)  # not asked for

    # A stop string from the middle of that text: the answer ends just before it.
    stop = text[len(text) // 2: len(text) // 2 + 3]
    status, _, stopped = post_json(env, "/v1/chat/completions",
                                   greedy_body(messages=messages, max_tokens=30, stop=stop))
    assert status == 200, stopped
    assert stopped["choices"][0]["message"]["content"] == text[:text.index(stop)], (stop, stopped)
    assert stopped["choices"][0]["finish_reason"] == "stop", stopped
    print("    chat stream: role chunk + %d chunks = unary text; stop %r ends it there" % (len(chunks) - 1, stop))


def check_errors(env):
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    expect_error(*post_json(env, "/v1/chat/completions", chat, token=None), 401, "bearer token",
                 "authentication_error")
    expect_error(*post_json(env, "/v1/chat/completions", chat, token="wrong"), 401, "bearer token")
    status, headers, body = request(env, "POST", "/v1/chat/completions", raw="{not json")
    expect_error(status, headers, json.loads(body), 400, "not valid JSON", "invalid_request_error")
    status, headers, body = request(env, "POST", "/v1/chat/completions",
                                    raw=b'{"messages": [{"role": "user", "content": "\xff"}]}')
    expect_error(status, headers, json.loads(body), 400, "not valid JSON")
    expect_error(*post_json(env, "/v1/chat/completions", dict(chat, n=2, stream=True)), 400,
                 "more than one choice is only served without")
    expect_error(*post_json(env, "/v1/chat/completions", dict(chat, model="gpt-4o")), 404,
                 "this server serves '%s'" % env.served_name)
    expect_error(*post_json(env, "/v1/chat/completions", dict(chat, temperature=-1)), 400,
                 "params.sampling")
    expect_error(*post_json(env, "/v1/chat/completions", dict(chat, max_tokens=10 ** 6)), 400,
                 "exceeds the model's context")
    expect_error(*post_json(env, "/v1/chat/completions",
                            {"messages": [{"role": "tool", "content": "x"}]}), 400, "role")
    expect_error(*post_json(env, "/v1/completions", {"prompt": [10 ** 8]}), 400, "outside the vocabulary")
    expect_error(*post_json(env, "/v1/nonsense", chat), 404, "no such endpoint")
    status, headers, body = request(env, "GET", "/v1/chat/completions")
    expect_error(status, headers, json.loads(body), 405, "use POST")
    assert headers.get("allow") == "POST", headers
    # Header bytes gRPC metadata cannot carry (they once made gRPC abort the router): a token
    # with them is simply wrong, a user agent keeps its ASCII, a request id must be UTF-8.
    expect_error(*post_json(env, "/v1/chat/completions", chat, token=None,
                            headers={"Authorization": "Bearer \u00fcmlaut".encode()}), 401, "bearer token")
    status, _, ok = post_json(env, "/v1/chat/completions", chat,
                              headers={"User-Agent": "ward-app/\u00fc\u20ac".encode()})
    assert status == 200, ok
    expect_error(*post_json(env, "/v1/chat/completions", chat, headers={"X-Request-Id": b"id\xff"}),
                 400, "X-Request-Id: not valid UTF-8")
    # A refused stream gets its HTTP status, not a 200 with an error event.
    conn, r = open_stream(env, "/v1/chat/completions", dict(chat, temperature=-1))
    expect_error(r.status, {"content-type": r.getheader("Content-Type")}, json.loads(r.read()), 400,
                 "params.sampling")
    conn.close()
    assert request(env, "GET", "/health", token=None)[0] == 200
    # The HTTP metrics count every one of these, those refused before the gRPC service too.
    text = cluster.scrape(env.metrics_addr)

    def http_calls(endpoint, code):
        return cluster.metric_value(text, "caduceus_http_requests_total",
                                    {"endpoint": endpoint, "code": str(code)}) or 0
    assert http_calls("chat_completions", 401) == 3, text
    assert http_calls("chat_completions", 400) >= 8 and http_calls("chat_completions", 404) == 1
    assert http_calls("chat_completions", 405) == 1 and http_calls("other", 404) == 1
    assert http_calls("completions", 400) == 1 and http_calls("health", 200) >= 1
    assert http_calls("chat_completions", 200) >= 1
    print("    caduceus_http_requests_total counts each of them by endpoint and code")


def check_hostile_input(env):
    """300 requests with random header bytes (Authorization, User-Agent, X-Request-Id,
    Content-Type) and random or truncated bodies, seeded: every one gets an answer with a JSON
    error body or a 200, and the router stays up (a non-ASCII token once made gRPC abort it)."""
    import random
    rng = random.Random(5)
    valid = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()

    printable_and_high = list(range(0x20, 0x100))  # what CivetWeb passes on in a header
    anything = [b for b in range(1, 256) if b not in (10, 13)]  # all an HTTP client can send

    def junk(n):
        alphabet = printable_and_high if rng.random() < 0.8 else anything
        return bytes(rng.choice(alphabet) for _ in range(n))

    statuses = {}
    for i in range(300):
        headers = {}
        for name in ("Authorization", "User-Agent", "X-Request-Id", "Content-Type"):
            if rng.random() < 0.5:
                value = junk(rng.randint(0, 40))
                if name == "Authorization" and rng.random() < 0.5:
                    value = b"Bearer " + (TOKEN.encode() if rng.random() < 0.5 else value)
                headers[name] = value.strip() or b"x"
        # A valid body a third of the time: the headers then reach the gRPC call (the crash).
        body = rng.choice([valid, valid[:rng.randint(0, len(valid))], junk(rng.randint(0, 200))])
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        try:
            status, hdrs, payload = request(env, "POST", path, token=None, headers=headers, raw=body)
        except (http.client.HTTPException, ConnectionError):
            # CivetWeb may refuse a request line or header it cannot parse by closing.
            statuses["closed"] = statuses.get("closed", 0) + 1
            continue
        statuses[status] = statuses.get(status, 0) + 1
        if status != 200 and hdrs.get("content-type") == "application/json":
            assert "error" in json.loads(payload), payload
        assert env.router.alive(), "router died on request %d: %r %r" % (i, headers, body)
    assert env.router.alive()
    assert request(env, "GET", "/health", token=None)[0] == 200
    print("    300 hostile requests: %s; router up" % dict(sorted(statuses.items(), key=str)))


def check_concurrent_clients(env):
    """12 clients at once over HTTP (streams and unary, chat and completions), retrying on 429
    as a well-behaved client does (the router takes 2 running + 1 waiting): every answer equals
    the one the same greedy request gets alone."""
    import threading
    prompts = [[128000, 1000 + 17 * i, 2000 + 3 * i] for i in range(12)]
    alone = [env.stub.Generate(rc.ids_request(p, 24), timeout=120, metadata=grpc_metadata()).text
             for p in prompts]
    results, errors, retries = [None] * len(prompts), [], [0]

    def client(i):
        body = greedy_body(prompt=prompts[i], max_tokens=24)
        try:
            for _ in range(600):
                if i % 2 == 0:
                    conn, r = open_stream(env, "/v1/completions", body)
                    if r.status == 429:
                        r.read()
                        conn.close()
                        retries[0] += 1
                        time.sleep(0.05)
                        continue
                    assert r.status == 200, r.status
                    events = read_events(r)
                    conn.close()
                    assert events[-1] == "[DONE]"
                    results[i] = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
                else:
                    status, headers, out = post_json(env, "/v1/completions", body)
                    if status == 429:
                        assert headers.get("retry-after") == "1"
                        retries[0] += 1
                        time.sleep(0.05)
                        continue
                    assert status == 200, out
                    results[i] = out["choices"][0]["text"]
                return
            raise AssertionError("client %d: still refused after 600 tries" % i)
        except Exception as e:  # reported by the main thread
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert results == alone, [(i, r, a) for i, (r, a) in enumerate(zip(results, alone)) if r != a]
    print("    12 concurrent clients: all answers equal their requests alone (%d retries after 429)"
          % retries[0])


def check_priority(env):
    """--max-num-seqs 2 full of background work (priority 10): an urgent request (priority 0)
    preempts one of them, finishes first, and both background answers are still exactly what
    they are alone."""
    prompts = [[128000, 9906, 11], [128000, 791, 8893]]
    before = cluster.metric_value(cluster.scrape(env.metrics_addr), "caduceus_preemptions_total") or 0
    streams = []
    for i, prompt in enumerate(prompts):
        conn, r = open_stream(env, "/v1/completions", greedy_body(prompt=prompt, max_tokens=400, priority=10),
                              headers={"X-Request-Id": "background-%d" % i})
        first = next_event(r)
        assert r.status == 200 and first is not None
        streams.append((conn, r, first))
    t0 = time.time()
    status, _, urgent = post_json(env, "/v1/completions", greedy_body(prompt=[128000, 40], max_tokens=8, priority=0))
    urgent_s = time.time() - t0
    assert status == 200 and urgent["usage"]["completion_tokens"] == 8, urgent
    texts = []
    for conn, r, first in streams:
        events = [first] + read_events(r)
        conn.close()
        assert events[-1] == "[DONE]"
        texts.append("".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]))
    t_background = time.time() - t0
    after = cluster.metric_value(cluster.scrape(env.metrics_addr), "caduceus_preemptions_total")
    assert after > before, "the urgent request preempted nobody (%s -> %s)" % (before, after)
    for prompt, text in zip(prompts, texts):
        want = env.stub.Generate(rc.ids_request(prompt, 400), timeout=120, metadata=grpc_metadata())
        assert text == want.text, (text[:60], want.text[:60])
    print("    urgent request done in %.2f s while 2 x 400-token background streams ran (%.2f s); "
          "%d preemption(s); background outputs unchanged" % (urgent_s, t_background, after - before))


def running_and_waiting(env):
    text = cluster.scrape(env.metrics_addr)
    return (cluster.metric_value(text, "caduceus_requests_running"),
            cluster.metric_value(text, "caduceus_requests_waiting"))


def check_backpressure_and_disconnect(env):
    """--max-num-seqs 2 --max-waiting-requests 1: two streams run, one waits, the next is 429.
    Then every client hangs up: their requests are cancelled and nothing stays running."""
    long_body = greedy_body(prompt=[128000, 9906], max_tokens=7000)
    streams = []
    for i in range(2):
        conn, r = open_stream(env, "/v1/completions", long_body, headers={"X-Request-Id": "http-gone-%d" % i})
        assert r.status == 200 and next_event(r) is not None
        streams.append(conn)
    # The third waits for a sequence slot (its status line comes with its first token).
    waiting = http.client.HTTPConnection("127.0.0.1", env.http_port, timeout=300)
    waiting.request("POST", "/v1/completions", body=json.dumps(dict(long_body, stream=True)),
                    headers={"Authorization": "Bearer " + TOKEN, "X-Request-Id": "http-gone-2"})
    cluster.wait_until("one request waiting", lambda: running_and_waiting(env) == (2, 1), timeout=30)
    status, headers, body = post_json(env, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    expect_error(status, headers, body, 429, "waiting queue full", "rate_limit_error")
    assert headers.get("retry-after") == "1", headers
    t0 = time.time()
    for conn in streams + [waiting]:
        conn.sock.shutdown(2)
        conn.close()
    cluster.wait_until("nothing running after the clients left",
                       lambda: running_and_waiting(env) == (0, 0), timeout=60)
    cluster.wait_until("no HTTP call in flight", lambda: cluster.metric_value(
        cluster.scrape(env.metrics_addr), "caduceus_http_requests_in_flight") == 0, timeout=30)
    gone = cluster.metric_value(cluster.scrape(env.metrics_addr), "caduceus_http_requests_total",
                                {"endpoint": "completions", "code": "499"})
    assert gone == 3, "hung-up streams counted as 499: %s" % gone
    print("    3 clients hung up: all requests ended %.1f s later (7000 tokens each were asked)"
          % (time.time() - t0))
    env.cancelled_ids = ["http-gone-0", "http-gone-1", "http-gone-2"]


def audit_lines(env):
    with open(env.audit_log) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_audit(env):
    # A gRPC caller that forges the HTTP front's metadata is still recorded as itself.
    forged = grpc_metadata() + [("x-caduceus-http-front", "guess"), ("x-caduceus-http-peer", "ipv4:10.6.6.6:1")]
    req = rc.ids_request([128000, 9906], 2)
    req.request_id = "grpc-forged"
    env.stub.Generate(req, timeout=60, metadata=forged)
    status, _, _ = post_json(env, "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "Patient Jane Roe"}], "max_tokens": 2},
                             headers={"X-Request-Id": "http-audit"})
    assert status == 200
    # The batch caller asks for priority 0 and gets its floor, 10.
    status, _, _ = post_json(env, "/v1/completions", {"prompt": [128000, 9906], "max_tokens": 2, "priority": 0},
                             token=BATCH_TOKEN, headers={"X-Request-Id": "http-batch"})
    assert status == 200
    lines = {}
    cluster.wait_until("audit lines", lambda: lines.update({l["request_id"]: l for l in audit_lines(env)})
                       or {"grpc-forged", "http-audit", "http-batch"} <= set(lines), timeout=10)
    batch = lines["http-batch"]
    assert batch["caller"]["name"] == "batch-summaries" and batch["params"]["priority"] == 10, batch
    assert lines["http-audit"]["caller"]["name"] == "clinic-chat", lines["http-audit"]
    assert BATCH_TOKEN not in open(env.audit_log).read() and TOKEN not in open(env.audit_log).read()
    # Usage by caller: the batch caller made exactly one call (2 prompt + 2 generated tokens).
    text = cluster.scrape(env.metrics_addr)
    usage = lambda caller, kind: cluster.metric_value(text, "caduceus_caller_tokens_total",
                                                      {"caller": caller, "kind": kind})
    assert usage("batch-summaries", "prompt") == 2 and usage("batch-summaries", "generated") == 2, text
    assert cluster.metric_value(text, "caduceus_caller_requests_total",
                                {"caller": "batch-summaries", "status": "ok"}) == 1
    assert usage("clinic-chat", "generated") > 100  # everything else in this test
    http_line, grpc_line = lines["http-audit"], lines["grpc-forged"]
    assert http_line["method"] == "Chat" and http_line["status"] == "OK", http_line
    assert http_line["caller"]["api"] == "http", http_line["caller"]
    assert http_line["caller"]["peer"].startswith("ipv4:127.0.0.1:"), http_line["caller"]
    assert http_line["caller"]["user_agent"] == AGENT, http_line["caller"]
    assert http_line["caller"]["api_token_checked"] is True
    assert "Jane" not in json.dumps(http_line), "prompt text in the audit line"
    assert grpc_line["caller"]["api"] == "grpc" and "10.6.6.6" not in grpc_line["caller"]["peer"], grpc_line
    for rid in getattr(env, "cancelled_ids", []):
        assert lines[rid]["status"] == "CANCELLED" and lines[rid]["generated_tokens"] < 7000, lines[rid]
    print("    audit: HTTP caller %s (%s); forged gRPC metadata ignored; hung-up streams CANCELLED"
          % (http_line["caller"]["peer"], http_line["caller"]["user_agent"]))


def check_drain(env):
    conn, r = open_stream(env, "/v1/chat/completions",
                          greedy_body(messages=[{"role": "user", "content": "hi"}], max_tokens=300))
    assert r.status == 200 and next_event(r) is not None
    env.router.signal(signal.SIGTERM)
    time.sleep(0.5)
    status, headers, body = post_json(env, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    expect_error(status, headers, body, 503, "draining", "service_unavailable")
    events = read_events(r)
    conn.close()
    assert events[-1] == "[DONE]", events[-2:]
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length", last
    code = env.router.wait(60)
    assert code == 0, "router exit code %s" % code
    print("    drain: new call 503, running stream finished (300 tokens), router exited 0")


def check_logit_bias(env):
    # Against the oracle's own first-step ranking (llama.cpp and float64): banning the top token
    # makes the greedy answer start with the oracle's second; forcing a token repeats it. The
    # logprobs stay the model's (the banned token is still the top-1 alternative).
    p = env.oracle["prompts"][0]
    top = [t for t, _ in p["first_step_top10"]]
    assert top[0] == p["gen_ids"][0]

    def first_ids(bias, n):
        body = greedy_body(model=env.served_name, prompt=p["prompt_ids"], max_tokens=n, logprobs=1,
                           return_tokens_as_token_ids=True, logit_bias=bias)
        status, _, r = post_retrying(env, "/v1/completions", body)
        assert status == 200, r
        lp = r["choices"][0]["logprobs"]
        return [int(t[len("token_id:"):]) for t in lp["tokens"]], lp["top_logprobs"]

    banned, tops = first_ids({str(top[0]): -100}, 1)
    assert banned == [top[1]], (banned, top[:3])
    assert list(tops[0].keys()) == ["token_id:%d" % top[0]], tops[0]  # raw distribution
    # The random test model's logits are large (top-1 about 216), so +100 forces a token of the
    # oracle's top 10, not any token.
    forced, _ = first_ids({str(top[9]): 100}, 1)
    assert forced == [top[9]], (forced, top)
    status, headers, body = post_retrying(env, "/v1/completions", greedy_body(
        model=env.served_name, prompt=p["prompt_ids"], logit_bias={"128256": 5}))
    expect_error(status, headers, body, 400, "logit_bias: token 128256 is outside the vocabulary")
    print("    banned top-1 -> oracle's top-2 (%d); +100 on its 10th -> %d; out-of-vocabulary "
          "id refused" % (top[1], forced[0]))


def check_several_choices(env):
    # OpenAI's n (unary): n requests at once; with a seed s, choice i is the request with seed
    # s + i. The router takes 2 running + 1 waiting, so n = 3 may meet a 429 that a client
    # retries (as OpenAI SDKs do); n = 4 cannot fit and fails whole, the others cancelled.
    p = env.oracle["prompts"][1]

    def ids(choice):
        return [int(t[len("token_id:"):]) for t in choice["logprobs"]["tokens"]]

    sampled = dict(model=env.served_name, prompt=p["prompt_ids"], max_tokens=12, temperature=1.0,
                   seed=7, logprobs=1, return_tokens_as_token_ids=True, ignore_eos=True)
    status, _, multi = post_retrying(env, "/v1/completions", dict(sampled, n=3),
                                     headers={"X-Request-Id": "multi"})
    assert status == 200, multi
    assert multi["id"] == "cmpl-multi" and len(multi["choices"]) == 3, multi
    assert [c["index"] for c in multi["choices"]] == [0, 1, 2]
    for i, choice in enumerate(multi["choices"]):
        status, _, one = post_retrying(env, "/v1/completions", dict(sampled, seed=7 + i))
        assert status == 200, one
        assert ids(choice) == ids(one["choices"][0]) and choice["text"] == one["choices"][0]["text"], i
    assert len({tuple(ids(c)) for c in multi["choices"]}) > 1, "seeds 7, 8, 9 gave one answer"
    usage = multi["usage"]
    assert usage["prompt_tokens"] == len(p["prompt_ids"]) and usage["completion_tokens"] == 36, usage
    # Greedy: every choice is the oracle's.
    status, _, greedy = post_retrying(env, "/v1/completions", greedy_body(
        model=env.served_name, prompt=p["prompt_ids"], max_tokens=12, n=2, logprobs=1,
        return_tokens_as_token_ids=True))
    assert status == 200 and all(ids(c) == p["gen_ids"][:12] for c in greedy["choices"]), greedy
    # More choices than the replica takes at once: 429 for the call, nothing left running.
    status, headers, body = post_json(env, "/v1/completions", dict(sampled, n=4, max_tokens=200))
    expect_error(status, headers, body, 429, "waiting queue full")
    cluster.wait_until("the other choices cancelled", lambda: running_and_waiting(env) == (0, 0))
    print("    n=3 with seed 7 = seeds 7, 8, 9 one by one; usage counts the prompt once; greedy "
          "n=2 = oracle; n=4 over capacity -> 429, the rest cancelled")


def check_idle_connections_do_not_starve_new_clients(env):
    # CivetWeb holds a pool thread per open connection, idle keep-alive time included. The
    # router runs --http-threads HTTP_THREADS: as many idle keep-alive clients as threads (SDK
    # connection pools) must not leave a new client unserved. Connections are kept only while
    # at most half the threads hold one; later responses say "Connection: close".
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN}
    body = json.dumps({"model": env.served_name, "prompt": [1, 2, 3], "max_tokens": 2})
    idle, kept = [], 0
    for _ in range(HTTP_THREADS + 2):
        conn = http.client.HTTPConnection("127.0.0.1", env.http_port, timeout=10)
        conn.request("POST", "/v1/completions", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        if (r.getheader("Connection") or "").lower() != "close":
            kept += 1
            idle.append(conn)  # stays open, idle, holding its thread
        else:
            conn.close()
    assert 1 <= kept <= HTTP_THREADS // 2 + 1, "kept %d of %d connections" % (kept, HTTP_THREADS + 2)
    started = time.time()
    status, _, _ = request(env, "POST", "/v1/completions", json.loads(body))
    waited = time.time() - started
    assert status == 200 and waited < 5, (status, waited)
    # The kept connections still serve their clients' next calls.
    for conn in idle:
        conn.request("POST", "/v1/completions", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        conn.close()
    print("    %d idle keep-alive connections of %d threads; a new client served in %.3f s"
          % (kept, HTTP_THREADS, waited))


CHECKS = [check_models, check_chat_matches_oracle, check_completions, check_chat_stream_and_stop,
          check_errors, check_logit_bias, check_several_choices, check_hostile_input,
          check_concurrent_clients,
          check_idle_connections_do_not_starve_new_clients, check_priority,
          check_backpressure_and_disconnect, check_audit, check_drain]


def main():
    model, oracle_path = sys.argv[1], sys.argv[2]
    env = Env()
    with open(oracle_path) as f:
        env.oracle = json.load(f)
    c = cluster.Cluster()
    failures = []
    try:
        tmp = tempfile.mkdtemp(prefix="caduceus-http-")
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write("# name token [min_priority]\nclinic-chat %s\nbatch-summaries %s 10\n"
                    % (TOKEN, BATCH_TOKEN))
        env.audit_log = os.path.join(tmp, "audit.jsonl")
        env.served_name = os.path.basename(model.rstrip("/"))
        grp = c.start_worker_group(model, 1, name="h", extra=cluster.WORKER_KV)
        router_addr = "127.0.0.1:%d" % cluster.free_port()
        env.metrics_addr = "127.0.0.1:%d" % cluster.free_port()
        env.http_port = cluster.free_port()
        env.router = c.start("router", "caduceus-router", [
            "--model", model, "--listen", router_addr, "--metrics-listen", env.metrics_addr,
            "--replica", grp.address, "--http-listen", "127.0.0.1:%d" % env.http_port,
            "--api-token-file", token_file, "--audit-log", env.audit_log,
            "--max-num-seqs", 2, "--max-waiting-requests", 1, "--drain-timeout", 60,
            "--http-threads", HTTP_THREADS])
        cluster.wait_serving(router_addr, processes=[env.router] + grp.ranks)
        env.stub = rc.stub(router_addr)
        cluster.wait_until("replica up over HTTP",
                           lambda: request(env, "GET", "/v1/models")[0] == 200, timeout=120)
        failures = cluster.run_checks(CHECKS, env, c, always=(check_drain,))
    finally:
        c.close()
    sys.exit(cluster.report(failures))


if __name__ == "__main__":
    main()
