"""Soak test under overload: the real router and two worker replicas (one TP=2, one TP=1) take
more load than they can serve for SOAK_SECONDS (default 60), from many client threads mixing
unary and streaming generation, chat, client cancellations, short deadlines, invalid requests
and long prompts.

What must hold:
  * every call ends with a status its kind allows: OK, RESOURCE_EXHAUSTED (the queue limit:
    overload must actually be reached), CANCELLED only for calls the client cancelled,
    DEADLINE_EXCEEDED only for calls with a short deadline, INVALID_ARGUMENT only (and always)
    for invalid requests. Never UNAVAILABLE, INTERNAL or UNKNOWN;
  * preemption happens (small KV caches), and greedy requests of four fixed prompts give, under
    load, preemption and any batch, exactly the tokens they gave alone on an idle cluster
    (unary and streamed);
  * the router's caduceus_requests_total agrees with what the clients saw;
  * afterwards nothing is left: no waiting or running request, no KV block in use on the router
    or on any worker rank (leaked blocks would show), every process alive, and the router's RSS
    grew by less than 128 MiB over the soak.

Usage: test_soak_overload.py MODEL_DIR
"""

import collections
import os
import random
import sys
import threading
import time

import grpc

import cluster
import router_client as rc
from caduceus.v1 import generation_pb2 as g

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
# More clients than the replicas hold running and waiting (2 x (8 + 6)): overload is certain.
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "40"))
REF_PROMPTS = [[128000, 9906, 1917], [128000, 791, 8893, 18911], [128000, 40, 1097, 264, 10896],
               [128000, 3923, 374, 279, 1888, 6514, 369]]
REF_TOKENS = 24
KINDS = ["ref_unary", "ref_stream", "chat", "cancel", "deadline", "invalid", "long_prompt",
         "long_output"]
ALLOWED = {
    "ref_unary": {"OK", "RESOURCE_EXHAUSTED"},
    "ref_stream": {"OK", "RESOURCE_EXHAUSTED"},
    "chat": {"OK", "RESOURCE_EXHAUSTED"},
    "cancel": {"CANCELLED", "RESOURCE_EXHAUSTED", "OK"},
    "deadline": {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"},
    "invalid": {"INVALID_ARGUMENT"},
    "long_prompt": {"OK", "RESOURCE_EXHAUSTED"},
    "long_output": {"OK", "RESOURCE_EXHAUSTED"},
}


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Soak:
    def __init__(self, stub, refs):
        self.stub, self.refs = stub, refs
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()  # (kind, status name)
        self.problems = []
        self.stop = threading.Event()

    def record(self, kind, status, problem=None):
        with self.lock:
            self.outcomes[(kind, status)] += 1
            if status not in ALLOWED[kind]:
                self.problems.append("%s ended %s" % (kind, status))
            if problem:
                self.problems.append("%s: %s" % (kind, problem))

    def one(self, rng):
        kind = rng.choice(KINDS)
        try:
            problem = getattr(self, "do_" + kind)(rng)
            self.record(kind, "OK", problem)
        except grpc.RpcError as e:
            status = e.code().name
            detail = e.details() or ""
            problem = None
            if status == "INVALID_ARGUMENT" and kind == "invalid" and "temperature" not in detail:
                problem = "invalid request refused for another reason: " + detail
            if status not in ALLOWED[kind]:
                problem = detail
            self.record(kind, status, problem)
            if status == "RESOURCE_EXHAUSTED":
                time.sleep(rng.uniform(0.01, 0.05))  # a client backing off, as the API asks

    def do_ref_unary(self, rng):
        i = rng.randrange(len(REF_PROMPTS))
        r = self.stub.Generate(rc.ids_request(REF_PROMPTS[i], REF_TOKENS), timeout=120)
        if list(r.token_ids) != self.refs[i]:
            return "prompt %d under load: %s != alone %s" % (i, list(r.token_ids), self.refs[i])
        return None

    def do_ref_stream(self, rng):
        i = rng.randrange(len(REF_PROMPTS))
        _, ids, last = rc.collect_stream(
            self.stub.GenerateStream(rc.ids_request(REF_PROMPTS[i], REF_TOKENS), timeout=120))
        if ids != self.refs[i] or last.finish_reason != g.FINISH_REASON_LENGTH:
            return "streamed prompt %d under load: %s != alone %s" % (i, ids, self.refs[i])
        return None

    def do_chat(self, rng):
        n = rng.randint(1, 32)
        question = rng.choice(["What is sepsis?", "List three signs of stroke.",
                               "Normal adult heart rate?", "Explain HbA1c in one line."])
        r = self.stub.Chat(rc.chat_request([("user", question)], n, ignore_eos=False), timeout=120)
        if not 1 <= len(r.token_ids) <= n:
            return "chat gave %d tokens for max_new_tokens %d" % (len(r.token_ids), n)
        return None

    def do_cancel(self, rng):
        call = self.stub.GenerateStream(rc.ids_request([128000, 9906, rng.randrange(1000, 2000)], 400),
                                        timeout=120)
        it = iter(call)
        for _ in range(rng.randint(1, 3)):
            next(it)
        call.cancel()
        for _ in it:  # raises CANCELLED
            pass
        return None

    def do_deadline(self, rng):
        self.stub.Generate(rc.ids_request([128000, 9906, rng.randrange(2000, 3000)], 400),
                           timeout=rng.uniform(0.05, 0.3))
        return "a 400-token request finished within its short deadline"

    def do_invalid(self, rng):
        req = rc.ids_request([128000, 9906], 8)
        req.params.sampling.temperature = -1.0
        self.stub.Generate(req, timeout=30)
        return "a negative temperature was accepted"

    def do_long_prompt(self, rng):
        prompt = [128000] + [rng.randrange(1000, 100000) for _ in range(rng.randint(300, 700))]
        r = self.stub.Generate(rc.ids_request(prompt, 8), timeout=120)
        if len(r.token_ids) != 8:
            return "long prompt gave %d tokens" % len(r.token_ids)
        return None

    def do_long_output(self, rng):
        # Sequences that grow while they run: what makes the scheduler preempt.
        prompt = [128000] + [rng.randrange(1000, 100000) for _ in range(rng.randint(50, 150))]
        _, ids, _ = rc.collect_stream(self.stub.GenerateStream(rc.ids_request(prompt, 300), timeout=120))
        if len(ids) != 300:
            return "long output gave %d tokens" % len(ids)
        return None

    def client(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.one(rng)


def main():
    model = sys.argv[1]
    c = cluster.Cluster()
    failures = []
    try:
        router_addr = "127.0.0.1:%d" % cluster.free_port()
        metrics_addr = "127.0.0.1:%d" % cluster.free_port()
        # Small KV caches (4 MiB per rank: 4096 tokens at TP=2, 2048 at TP=1; 8 running
        # long outputs grow to 3600) so that overload also means preemption.
        tp2 = c.start_worker_group(model, 2, name="tp2", extra=["--kv-cache-bytes", 4 << 20])
        tp1 = c.start_worker_group(model, 1, name="tp1", extra=["--kv-cache-bytes", 4 << 20])
        router = c.start("router", "caduceus-router",
                         ["--model", model, "--listen", router_addr, "--metrics-listen", metrics_addr,
                          "--replica", tp2.address, "--replica", tp1.address,
                          "--max-num-seqs", 8, "--max-waiting-requests", 6])
        cluster.wait_serving(router_addr, processes=[router])
        stub = rc.stub(router_addr)
        cluster.wait_until("replicas up", lambda: rc.info_if(stub, 2), timeout=120)

        refs = [list(stub.Generate(rc.ids_request(p, REF_TOKENS), timeout=60).token_ids)
                for p in REF_PROMPTS]
        base = {s: cluster.metric_value(cluster.scrape(metrics_addr), "caduceus_requests_total",
                                        {"status": s}) or 0 for s in ("ok",)}
        soak = Soak(stub, refs)
        threads = [threading.Thread(target=soak.client, args=(i,)) for i in range(CLIENTS)]
        start = time.time()
        for t in threads:
            t.start()
        time.sleep(min(10.0, SOAK_SECONDS / 4))
        rss_warm = rss_bytes(router.popen.pid)
        time.sleep(max(0.0, SOAK_SECONDS - (time.time() - start)))
        soak.stop.set()
        for t in threads:
            t.join(180)
        rss_end = rss_bytes(router.popen.pid)
        total = sum(soak.outcomes.values())
        by_status = collections.Counter()
        for (kind, status), n in soak.outcomes.items():
            by_status[status] += n
        print("%d calls in %.0f s from %d clients: %s" % (total, time.time() - start, CLIENTS,
                                                          dict(by_status)))
        for kind in KINDS:
            print("  %-12s %s" % (kind, {s: n for (k, s), n in soak.outcomes.items() if k == kind}))
        failures += soak.problems[:20]
        if by_status["RESOURCE_EXHAUSTED"] == 0:
            failures.append("never overloaded: no RESOURCE_EXHAUSTED (raise SOAK_CLIENTS)")
        if by_status["OK"] < 50:
            failures.append("only %d calls succeeded" % by_status["OK"])

        # Nothing left behind.
        def idle():
            page = cluster.scrape(metrics_addr)
            return (cluster.metric_value(page, "caduceus_requests_waiting") == 0
                    and cluster.metric_value(page, "caduceus_requests_running") == 0
                    and not cluster.metric_value(page, "caduceus_kv_cache_usage_ratio"))
        try:
            cluster.wait_until("router idle with no KV block in use", idle, timeout=60)
        except AssertionError as e:
            failures.append(str(e))
        for group in (tp2, tp1):
            try:
                cluster.wait_until("%s releases every KV block" % group.name, lambda: cluster.metric_value(
                    cluster.scrape(group.metrics_address), "caduceus_worker_kv_blocks_used") == 0,
                    timeout=30)
            except AssertionError as e:
                failures.append(str(e))

        # The router's accounting agrees with the clients'.
        page = cluster.scrape(metrics_addr)
        served = {s: cluster.metric_value(page, "caduceus_requests_total", {"status": s}) or 0
                  for s in ("ok", "resource_exhausted", "invalid_argument", "cancelled",
                            "deadline_exceeded", "unavailable", "internal", "unknown")}
        print("router counted:", served)
        preemptions = cluster.metric_value(page, "caduceus_preemptions_total") or 0
        print("preemptions: %d" % preemptions)
        if preemptions == 0:
            failures.append("no preemption happened: the KV caches are too large for this soak")
        if served["invalid_argument"] != by_status["INVALID_ARGUMENT"]:
            failures.append("router counted %d invalid_argument, clients saw %d" % (
                served["invalid_argument"], by_status["INVALID_ARGUMENT"]))
        # A short-deadline call the router refuses as the client's deadline passes is
        # RESOURCE_EXHAUSTED to the router and DEADLINE_EXCEEDED to the client (CI, 2026-12-01).
        late = soak.outcomes[("deadline", "DEADLINE_EXCEEDED")]
        if not by_status["RESOURCE_EXHAUSTED"] <= served["resource_exhausted"] <= \
                by_status["RESOURCE_EXHAUSTED"] + late:
            failures.append("router counted %d resource_exhausted, clients saw %d (+ up to %d "
                            "that met their deadline first)" % (
                                served["resource_exhausted"], by_status["RESOURCE_EXHAUSTED"], late))
        ok_router = served["ok"] - base["ok"]
        cancelled_by_clients = soak.outcomes[("cancel", "CANCELLED")]
        if not by_status["OK"] <= ok_router <= by_status["OK"] + cancelled_by_clients:
            failures.append("router counted %d ok, clients saw %d (+ up to %d cancelled late)" % (
                ok_router, by_status["OK"], cancelled_by_clients))
        for status in ("unavailable", "internal", "unknown"):
            if served[status]:
                failures.append("router counted %d %s" % (served[status], status))

        for p in [router] + tp2.ranks + tp1.ranks:
            if not p.alive():
                failures.append("%s exited with %s" % (p.name, p.popen.returncode))
        growth = rss_end - rss_warm
        print("router RSS %.0f MiB after warm-up, %.0f MiB at the end" % (rss_warm / 2**20, rss_end / 2**20))
        if growth > 128 << 20:
            failures.append("router RSS grew by %.0f MiB during the soak" % (growth / 2**20))
        if failures:
            c.dump_logs()
    except Exception:
        c.dump_logs()
        raise
    finally:
        c.close()
    return cluster.report(failures)


if __name__ == "__main__":
    sys.exit(main())
