"""The router's lifecycle scenarios of the end-to-end test (test_router_e2e.py runs them after
cluster A), each on a cluster of its own:

  cluster B: router with a tiny queue + one TP=1 replica:
    * the waiting-queue limit answers RESOURCE_EXHAUSTED;
    * SIGTERM drains: health NOT_SERVING, new requests UNAVAILABLE, the running one completes,
      exit code 0.
  cluster C: one TP=1 replica with a KV cache too small for 8 concurrent requests:
    * preemption by recompute happens and every output equals the request run alone;
    * prompt text never reaches the router's log (no --log-payloads).
  cluster D: two TP=1 replicas; SIGTERM to one leader (scale-in):
    * its running streams finish, new requests go to the other replica, nothing fails with
      UNAVAILABLE, and the draining worker exits 0 once the router released its sequences;
    * a stream still running when a leaver's drain times out moves and goes on.
  cluster E: replicas die under running and queued requests:
    * a sampled stream continues on another replica with exactly the tokens, text and logprobs
      of the request run alone; the queued request moves too;
    * a request sent to a replica that just died moves;
    * a request moves at most --max-request-failovers (1) times.
  cluster F: a replica frozen (SIGSTOP) in the middle of a stream:
    * the router abandons it after --heartbeat-timeout without a health answer, and the stream
      goes on on the other replica.
"""

import signal
import threading
import time

import grpc

import cluster
import router_client as rc
from caduceus.v1 import generation_pb2 as g
from grpc_health.v1 import health_pb2, health_pb2_grpc


def interrupted_stream(stub, prompt, n, interrupt, timeout=300):
    """A greedy stream of n tokens; `interrupt()` runs once its first message has come (it runs
    on the replica under test then). Returns the whole stream: (text, ids, last message)."""
    it = iter(stub.GenerateStream(rc.ids_request(prompt, n), timeout=timeout))
    first = next(it)
    interrupt()
    text, ids, last = rc.collect_stream(it)
    return first.text_delta + text, list(first.token_ids) + ids, last


def assert_as_if_alone(stub, prompt, n, text, ids, replica):
    """A stream that moved equals the same request run alone on the replica it moved to."""
    want = stub.Generate(rc.ids_request(prompt, n), timeout=300)
    assert want.replica == replica, (want.replica, replica)
    assert ids == list(want.token_ids) and text == want.text, "the moved stream differs"


def cluster_b(c, model):
    print("cluster B: queue limit and drain")
    router_addr = "127.0.0.1:%d" % cluster.free_port()
    metrics_addr = "127.0.0.1:%d" % cluster.free_port()
    grp = c.start_worker_group(model, 1, name="b", extra=cluster.WORKER_KV)
    router = c.start("routerB", "caduceus-router",
                     ["--model", model, "--listen", router_addr, "--metrics-listen", metrics_addr,
                      "--replica", grp.address, "--max-num-seqs", 1, "--max-waiting-requests", 2,
                      "--drain-timeout", 60])
    cluster.wait_serving(router_addr, processes=[router])
    stub = rc.stub(router_addr)
    cluster.wait_until("replica up", lambda: rc.info_if(stub, 1), timeout=120)
    # One running + two waiting fill it; the next is refused.
    calls = [stub.GenerateStream(rc.ids_request([128000, 9906], 400), timeout=300)]
    first = next(iter(calls[0]))  # the first is running
    calls += [stub.GenerateStream(rc.ids_request([128000, 9906], 400), timeout=300) for _ in range(2)]
    cluster.wait_until("two requests waiting", lambda: cluster.metric_value(
        cluster.scrape(metrics_addr), "caduceus_requests_waiting") == 2, timeout=30)
    rc.expect_error(lambda: stub.Generate(rc.ids_request([128000], 4), timeout=30),
                 grpc.StatusCode.RESOURCE_EXHAUSTED, "queue")
    for call in calls[1:]:
        call.cancel()
    # Drain: the running stream finishes; new calls are refused; exit 0.
    router.signal(signal.SIGTERM)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(router_addr))
    cluster.wait_until("NOT_SERVING", lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
               == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
    rc.expect_error(lambda: stub.Generate(rc.ids_request([128000], 4), timeout=10),
                 grpc.StatusCode.UNAVAILABLE, "draining")
    text, ids, last = rc.collect_stream(calls[0])
    assert last.finish_reason == g.FINISH_REASON_LENGTH and len(ids) + len(first.token_ids) == 400
    code = router.wait(30)
    assert code == 0, "router exit code %s" % code
    print("    drained: running request finished (400 tokens), router exited 0")


def cluster_c(c, model, oracle):
    """A KV cache too small for the load forces preemptions; outputs must not change."""
    print("cluster C: preemption by recompute")
    router_addr = "127.0.0.1:%d" % cluster.free_port()
    metrics_addr = "127.0.0.1:%d" % cluster.free_port()
    # 20 blocks of 16 tokens (32 KiB each); a request of ~50 + 120 tokens needs 11, so any two
    # that overlap preempt. (With 64 blocks all 8 had to overlap, and under CI load once none
    # was preempted, 2026-12-01.)
    grp = c.start_worker_group(model, 1, name="c", extra=["--kv-cache-bytes", 20 << 15])
    router = c.start("routerC", "caduceus-router",
                     ["--model", model, "--listen", router_addr, "--metrics-listen", metrics_addr,
                      "--replica", grp.address, "--default-max-new-tokens", 4096])
    cluster.wait_serving(router_addr, processes=[router])
    stub = rc.stub(router_addr)
    cluster.wait_until("replica up", lambda: rc.info_if(stub, 1), timeout=120)
    # A default length larger than the whole KV cache (320 tokens) shortens to what fits, as it
    # does to the context; an explicit one is refused with the numbers.
    unset = g.GenerateRequest(prompt_ids=[128000, 9906], params=g.GenerationParameters(
        ignore_eos=True, sampling=g.SamplingParameters(temperature=0.0)))
    r = stub.Generate(unset, timeout=300)
    assert r.finish_reason == g.FINISH_REASON_LENGTH and len(r.token_ids) == 320 - 2, len(r.token_ids)
    rc.expect_error(lambda: stub.Generate(rc.ids_request([128000, 9906], 1000), timeout=60),
                    grpc.StatusCode.INVALID_ARGUMENT, "KV blocks")
    print("    unset max_new_tokens (default 4096): %d tokens, what the 320-token cache holds"
          % len(r.token_ids))
    prompts = [p["prompt_ids"] for p in oracle["prompts"][:8]]
    alone = [list(stub.Generate(rc.ids_request(p, 120), timeout=300).token_ids) for p in prompts]
    assert cluster.metric_value(cluster.scrape(metrics_addr), "caduceus_preemptions_total") == 0
    results = [None] * len(prompts)

    def run(i):
        results[i] = list(stub.Generate(rc.ids_request(prompts[i], 120), timeout=300).token_ids)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    preemptions = cluster.metric_value(cluster.scrape(metrics_addr), "caduceus_preemptions_total")
    print("    %s preemptions; outputs identical: %s" % (preemptions, results == alone))
    assert preemptions and preemptions > 0, preemptions
    assert results == alone
    # Patient data stays out of the logs without --log-payloads.
    stub.Generate(rc.text_request("Patient Jane Roe, MRN 99887766, chest pain", 2), timeout=60)
    with open(router.log_path, "rb") as f:
        assert b"99887766" not in f.read(), "prompt text in the router log"
    c.close()


def cluster_d(c, model):
    """SIGTERM to one replica's leader (Kubernetes scale-in): its running requests finish, new
    ones go to the other replica, nothing fails, and the worker exits 0 once it is empty."""
    print("cluster D: graceful worker drain")
    router_addr = "127.0.0.1:%d" % cluster.free_port()
    metrics_addr = "127.0.0.1:%d" % cluster.free_port()
    keep = c.start_worker_group(model, 1, name="keep", extra=cluster.WORKER_KV)
    # The leaving one registers itself (as in Kubernetes), so it deregisters when it leaves.
    leave = c.start_worker_group(model, 1, name="leave", extra=cluster.WORKER_KV,
                                 leader_extra=["--router", router_addr])
    router = c.start("routerD", "caduceus-router",
                     ["--model", model, "--listen", router_addr, "--metrics-listen", metrics_addr,
                      "--replica", keep.address])
    cluster.wait_serving(router_addr, processes=[router])
    stub = rc.stub(router_addr)
    cluster.wait_until("replicas up", lambda: rc.info_if(stub, 2), timeout=120)
    calls = [stub.GenerateStream(rc.ids_request([128000, 9906, 11 + i], 300), timeout=300)
             for i in range(6)]
    firsts = [next(iter(call)) for call in calls]  # all six are running
    leave.leader.signal(signal.SIGTERM)
    results, errors = [None] * 6, []

    def finish(i):
        try:
            text, ids, last = rc.collect_stream(calls[i])
            results[i] = (len(ids) + len(firsts[i].token_ids), last.finish_reason)
        except grpc.RpcError as e:
            errors.append("%d: %s %s" % (i, e.code(), e.details()))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    # The router learns of the drain from the leaving worker's next step result; requests
    # routed before that may still land there (under CI load that took longer than one request,
    # 2026-11-30). Once the router has logged it, new requests go to the replica that stays.
    cluster.wait_until("router saw the drain", lambda: "%s is draining" % leave.address in
               open(router.log_path, errors="replace").read(), timeout=30)
    served = []
    for _ in range(4):
        r = stub.Generate(rc.ids_request([128000, 9906], 4), timeout=60)
        served.append(r.replica)
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(r == (300, g.FINISH_REASON_LENGTH) for r in results), results
    assert set(served) == {keep.address}, served
    code = leave.leader.wait(30)
    assert code == 0, "draining worker exit code %s" % code
    # It deregistered: gone from the router at once, not counted down until forgotten.
    assert "replica %s deregistered" % leave.address in open(router.log_path, errors="replace").read()
    # (the gauges refresh every 250 ms; forgetting would take --forget-replica-after, 600 s)
    cluster.wait_until("the departed replica not counted down", lambda: not cluster.metric_value(
        cluster.scrape(metrics_addr), "caduceus_replicas", {"state": "down"}), timeout=5)
    unavailable = cluster.metric_value(cluster.scrape(metrics_addr), "caduceus_requests_total",
                                       {"status": "unavailable"})
    assert not unavailable, unavailable
    print("    6 running streams finished (300 tokens each), new requests went to %s, the "
          "draining worker exited 0" % keep.address)

    # A drain that times out (--drain-timeout 1 s under a 3000-token stream): the leader
    # deregisters with the stream unfinished, and the stream goes on on the replica that stays.
    short = c.start_worker_group(model, 1, name="short", extra=["--kv-cache-bytes", 64 << 20],
                                 leader_extra=["--router", router_addr, "--drain-timeout", 1])
    cluster.wait_until("the short-drain replica up", lambda: rc.info_if(stub, 2), timeout=120)
    prompt = [128000, 9906, 1917, 0]
    # It starts on `short`: the most free KV blocks.
    text, ids, last = interrupted_stream(stub, prompt, 3000, lambda: short.leader.signal(signal.SIGTERM))
    code = short.leader.wait(30)
    assert code == 0, "the worker whose drain timed out: exit code %s" % code
    log = open(router.log_path, errors="replace").read()
    assert "moving 1 requests off %s (it left)" % short.address in log, "the stream did not move"
    assert_as_if_alone(stub, prompt, 3000, text, ids, keep.address)
    assert last.finish_reason == g.FINISH_REASON_LENGTH, last
    print("    a stream whose replica's drain timed out went on on %s (3000 tokens, as if run "
          "alone)" % keep.address)
    c.close()


def sampled_request(prompt_ids, max_new_tokens):
    """Seeded sampling with penalties and logprobs: every part of the sampler's state that a
    failover must rebuild (the draw counter, the generated-token counts) shows in the tokens."""
    sp = g.SamplingParameters(temperature=0.9, top_p=0.95, top_k=200, seed=1234,
                              repetition_penalty=1.1, frequency_penalty=0.3, presence_penalty=0.2)
    return g.GenerateRequest(prompt_ids=prompt_ids, params=g.GenerationParameters(
        max_new_tokens=max_new_tokens, ignore_eos=True, logprobs=True, sampling=sp))


def read_stream(stream, at_least):
    """Reads a stream until `at_least` tokens have come: (text, ids, logprobs, iterator)."""
    it = iter(stream)
    text, ids, logprobs = "", [], []
    while len(ids) < at_least:
        m = next(it)
        text += m.text_delta
        ids.extend(m.token_ids)
        logprobs.extend(lp.logprob for lp in m.logprobs)
    return text, ids, logprobs, it


def finish_stream(part, it):
    text, ids, logprobs = part
    last = None
    for m in it:
        text += m.text_delta
        ids.extend(m.token_ids)
        logprobs.extend(lp.logprob for lp in m.logprobs)
        last = m
    return text, ids, logprobs, last


def cluster_e(c, model):
    """Replica failures: requests move to another replica and go on where they stopped; a stream
    continues without a gap, a duplicate or a changed token, and a request moves only once."""
    print("cluster E: requests survive a replica failure")
    router_addr = "127.0.0.1:%d" % cluster.free_port()
    metrics_addr = "127.0.0.1:%d" % cluster.free_port()
    big = c.start_worker_group(model, 1, name="big", extra=["--kv-cache-bytes", 64 << 20])
    small = c.start_worker_group(model, 1, name="small", extra=["--kv-cache-bytes", 16 << 20])
    router = c.start("routerE", "caduceus-router",
                     ["--model", model, "--listen", router_addr, "--metrics-listen", metrics_addr,
                      "--replica", big.address, "--replica", small.address, "--max-num-seqs", 1])
    cluster.wait_serving(router_addr, processes=[router])
    stub = rc.stub(router_addr)
    cluster.wait_until("replicas up", lambda: rc.info_if(stub, 2), timeout=120)
    # Both go to the replica with the most free KV blocks (big): A streams, B waits behind it.
    prompt = [128000, 9906, 1917]
    running = stub.GenerateStream(sampled_request(prompt, 3000), timeout=300)
    text, ids, logprobs, rest = read_stream(running, 40)
    outcome = {}

    def queued():
        try:
            r = stub.Generate(rc.ids_request([128000, 9906, 11], 8), timeout=120)
            outcome["replica"], outcome["tokens"] = r.replica, len(r.token_ids)
        except grpc.RpcError as e:
            outcome["error"] = "%s %s" % (e.code(), e.details())

    t = threading.Thread(target=queued)
    t.start()
    cluster.wait_until("one request waiting", lambda: cluster.metric_value(
        cluster.scrape(metrics_addr), "caduceus_requests_waiting") == 1, timeout=30)
    big.leader.signal(signal.SIGKILL)
    text, ids, logprobs, last = finish_stream((text, ids, logprobs), rest)
    t.join()
    assert outcome.get("tokens") == 8 and outcome.get("replica") == small.address, outcome
    print("    the queued request moved to %s and completed" % small.address)
    log = open(router.log_path, errors="replace").read()
    assert "moving 2 requests off %s (1 of them had sent output" % big.address in log, \
        "the streaming request did not move"
    # The same request alone on the replica that took it over: the moved stream must equal it
    # token for token (sampling draws depend on seed and position only, and the CPU kernels are
    # batch-invariant, so even the logprobs are the same bits).
    want = stub.Generate(sampled_request(prompt, 3000), timeout=300)
    assert want.replica == small.address
    assert len(ids) == 3000 and last.finish_reason == g.FINISH_REASON_LENGTH, (len(ids), last)
    first_diff = next((i for i, (a, b) in enumerate(zip(ids, want.token_ids)) if a != b), None)
    assert first_diff is None, "moved stream differs from the request run alone at token %s" % first_diff
    assert text == want.text, "moved stream's text differs"
    assert logprobs == [lp.logprob for lp in want.logprobs], "moved stream's logprobs differ"
    assert last.usage.generated_tokens == 3000 and last.usage.prompt_tokens == 3, last.usage
    moves = cluster.metric_value(cluster.scrape(metrics_addr), "caduceus_request_failovers_total")
    assert moves == 2, moves
    print("    a sampled stream killed under it after 40 tokens went on on %s: 3000 tokens, "
          "identical to the request run alone" % small.address)

    # A replica that dies while idle still looks up until its health checks lapse: the next
    # request sent there fails its first step, and moves.
    idle = c.start_worker_group(model, 1, name="idle", extra=["--kv-cache-bytes", 64 << 20],
                                leader_extra=["--router", router_addr])
    cluster.wait_until("the idle replica up", lambda: rc.info_if(stub, 2), timeout=120)
    idle.leader.signal(signal.SIGKILL)
    idle.leader.wait(10)
    r = stub.Generate(rc.ids_request([128000, 9906, 13], 8), timeout=120)
    assert len(r.token_ids) == 8 and r.replica == small.address, (r.replica, len(r.token_ids))
    assert "moving 1 requests off %s" % idle.address in open(
        router.log_path, errors="replace").read(), "the request did not go to the dead replica first"
    print("    a request sent to a replica that had just died moved to %s" % small.address)

    # A request moves once (--max-request-failovers 1): one whose second replica fails too fails
    # with UNAVAILABLE even though a replica (small) is still up, so that a request that kills
    # workers cannot take down every replica in turn.
    first = c.start_worker_group(model, 1, name="first", extra=["--kv-cache-bytes", 64 << 20],
                                 leader_extra=["--router", router_addr])
    second = c.start_worker_group(model, 1, name="second", extra=["--kv-cache-bytes", 32 << 20],
                                  leader_extra=["--router", router_addr])
    cluster.wait_until("two more replicas up", lambda: rc.info_if(stub, 3), timeout=120)
    stream = stub.GenerateStream(rc.ids_request([128000, 9906], 3000), timeout=300)
    _, ids, _, rest = read_stream(stream, 10)  # on `first`, the most free KV blocks
    first.leader.signal(signal.SIGKILL)
    cluster.wait_until("the request moved to the second replica", lambda: "moving 1 requests off %s"
                       % first.address in open(router.log_path, errors="replace").read(), timeout=30)
    second.leader.signal(signal.SIGKILL)
    rc.expect_error(lambda: finish_stream(("", ids, []), rest), grpc.StatusCode.UNAVAILABLE,
                    "retry the request")
    assert "that already moved 1 times" in open(router.log_path, errors="replace").read()
    print("    a request whose second replica failed too was not moved again")
    c.close()


def cluster_f(c, model):
    """A worker that stops answering (SIGSTOP: a frozen node) in the middle of a step: the router
    notices through health checks after --heartbeat-timeout, not --step-timeout (120 s), and the
    stream moves on."""
    print("cluster F: a frozen replica is abandoned within the heartbeat timeout")
    router_addr = "127.0.0.1:%d" % cluster.free_port()
    frozen = c.start_worker_group(model, 1, name="frozen", extra=["--kv-cache-bytes", 64 << 20])
    other = c.start_worker_group(model, 1, name="other", extra=["--kv-cache-bytes", 16 << 20])
    router = c.start("routerF", "caduceus-router",
                     ["--model", model, "--listen", router_addr, "--replica", frozen.address,
                      "--replica", other.address, "--heartbeat-timeout", 3])
    cluster.wait_serving(router_addr, processes=[router])
    stub = rc.stub(router_addr)
    cluster.wait_until("replicas up", lambda: rc.info_if(stub, 2), timeout=120)
    prompt = [128000, 9906, 1917, 7]
    stopped = []

    def freeze():
        frozen.leader.signal(signal.SIGSTOP)
        stopped.append(time.time())
    try:
        # It starts on `frozen` (the most free KV blocks). 60 s: well under --step-timeout
        # (120 s), which is all that caught a frozen worker before.
        text, ids, _ = interrupted_stream(stub, prompt, 3000, freeze, timeout=60)
    finally:
        frozen.leader.signal(signal.SIGKILL)
    took = time.time() - stopped[0]
    log = open(router.log_path, errors="replace").read()
    assert "replica %s has not answered health checks" % frozen.address in log, "not abandoned"
    assert_as_if_alone(stub, prompt, 3000, text, ids, other.address)
    print("    the stream went on on %s, %.1f s after its replica froze (3000 tokens, as if run "
          "alone)" % (other.address, took))
    c.close()

