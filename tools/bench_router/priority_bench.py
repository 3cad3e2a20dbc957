#!/usr/bin/python3
"""What request priorities buy under load, through one running router: BACKGROUND clients keep
the replica saturated with long requests (priority 10, like batch summaries), while one
foreground client sends short requests one after another (like a clinician's chat), once with
the background's priority (plain FCFS) and once with priority 0. Prints the foreground's
time to first token and latency (p50/p90) in both runs, the background's token throughput, and
the router's preemptions; the last stdout line is one JSON object.

usage: priority_bench.py --router HOST:PORT --metrics HOST:PORT [--background 8]
                         [--background-tokens 256] [--foreground 20] [--foreground-tokens 16]
Needs PYTHONPATH=<build>/proto_py and Debian's python3-grpcio."""

import argparse
import json
import threading
import time
import urllib.request

import grpc

from caduceus.v1 import generation_pb2 as g
from caduceus.v1 import generation_pb2_grpc as gg


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def request(prompt, n, priority):
    return g.GenerateRequest(prompt_ids=prompt, params=g.GenerationParameters(
        max_new_tokens=n, ignore_eos=True, priority=priority,
        sampling=g.SamplingParameters(temperature=0.0)))


def preemptions(metrics):
    with urllib.request.urlopen("http://%s/metrics" % metrics, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("caduceus_preemptions_total "):
                return float(line.split()[1])
    return 0.0


def run(stub, a, foreground_priority):
    stop = threading.Event()
    background_tokens = [0]
    lock = threading.Lock()

    def background(i):
        prompt = [128000] + [1000 + i * 7 + k for k in range(32)]
        while not stop.is_set():
            for m in stub.GenerateStream(request(prompt, a.background_tokens, 10), timeout=600):
                with lock:
                    background_tokens[0] += len(m.token_ids)
                if stop.is_set():
                    break

    threads = [threading.Thread(target=background, args=(i,), daemon=True) for i in range(a.background)]
    for t in threads:
        t.start()
    time.sleep(3)  # let the background fill the batch
    ttft, latency = [], []
    t_start = time.time()
    start_tokens = background_tokens[0]
    for i in range(a.foreground):
        t0 = time.perf_counter()
        first = None
        for m in stub.GenerateStream(request([128000, 40, 2000 + i], a.foreground_tokens, foreground_priority),
                                     timeout=600):
            if m.token_ids and first is None:
                first = time.perf_counter() - t0
        ttft.append(first)
        latency.append(time.perf_counter() - t0)
    elapsed = time.time() - t_start
    bg_rate = (background_tokens[0] - start_tokens) / elapsed
    stop.set()
    for t in threads:
        t.join(timeout=120)
    return {"ttft_p50_s": round(percentile(ttft, 50), 3), "ttft_p90_s": round(percentile(ttft, 90), 3),
            "latency_p50_s": round(percentile(latency, 50), 3),
            "latency_p90_s": round(percentile(latency, 90), 3),
            "background_tokens_per_s": round(bg_rate, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--background", type=int, default=8)
    ap.add_argument("--background-tokens", type=int, default=256)
    ap.add_argument("--foreground", type=int, default=20)
    ap.add_argument("--foreground-tokens", type=int, default=16)
    a = ap.parse_args()
    stub = gg.GenerationStub(grpc.insecure_channel(a.router))
    result = {}
    for name, priority in (("fcfs", 10), ("urgent", 0)):
        before = preemptions(a.metrics)
        r = run(stub, a, priority)
        r["preemptions"] = int(preemptions(a.metrics) - before)
        result[name] = r
        print("%-7s %s" % (name, r))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
