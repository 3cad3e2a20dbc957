#!/usr/bin/python3
"""Score (log-likelihood) throughput through a running router: the cost of an lm-eval-harness
style multiple-choice run (one Score call per choice, every choice of a question sharing its
context, so the context's full KV blocks come from the prefix cache after the first choice).

Sends REQUESTS Score calls from CONCURRENCY threads: question q (of REQUESTS / CHOICES) has a
random CONTEXT_LEN-token context and CHOICES random CONTINUATION_LEN-token continuations. Prints
the calls/s, scored tokens/s, prompt tokens/s, latency p50/p99 and the share of prompt tokens
served from the prefix cache; the last stdout line is one JSON object.

usage: score_bench.py --router HOST:PORT [--concurrency 4] [--requests 64] [--choices 4]
                      [--context-len 256] [--continuation-len 8] [--seed 1]
Needs PYTHONPATH=<build>/proto_py and Debian's python3-grpcio."""

import argparse
import json
import random
import threading
import time

import grpc

from caduceus.v1 import generation_pb2 as g
from caduceus.v1 import generation_pb2_grpc as gg


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--choices", type=int, default=4)
    ap.add_argument("--context-len", type=int, default=256)
    ap.add_argument("--continuation-len", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    questions = (a.requests + a.choices - 1) // a.choices
    work = []
    for _ in range(questions):
        context = [128000] + [rng.randrange(1000, 120000) for _ in range(a.context_len - 1)]
        for _ in range(a.choices):
            work.append((context, [rng.randrange(1000, 120000) for _ in range(a.continuation_len)]))
    work = work[:a.requests]
    stub = gg.GenerationStub(grpc.insecure_channel(a.router))
    lock = threading.Lock()
    latencies, cached, errors = [], [0], []
    # Each thread takes the next call in order, so the choices of a question run close together.
    next_index = [0]

    def worker():
        while True:
            with lock:
                if next_index[0] >= len(work):
                    return
                context, continuation = work[next_index[0]]
                next_index[0] += 1
            t0 = time.time()
            try:
                r = stub.Score(g.ScoreRequest(context_ids=context, continuation_ids=continuation),
                               timeout=600)
            except grpc.RpcError as e:
                with lock:
                    errors.append(str(e.code()))
                continue
            with lock:
                latencies.append(time.time() - t0)
                cached[0] += r.usage.cached_prompt_tokens

    start = time.time()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    done = len(latencies)
    prompt_tokens = done * (a.context_len + a.continuation_len)
    result = {
        "requests": a.requests, "completed": done, "errors": len(errors),
        "concurrency": a.concurrency, "choices": a.choices, "context_len": a.context_len,
        "continuation_len": a.continuation_len, "duration_s": elapsed,
        "calls_per_s": done / elapsed, "scored_tokens_per_s": done * a.continuation_len / elapsed,
        "prompt_tokens_per_s": prompt_tokens / elapsed,
        "cached_prompt_share": cached[0] / max(1, prompt_tokens),
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p99_s": percentile(latencies, 99) if latencies else None,
    }
    print("%d calls in %.1f s: %.1f calls/s, %.0f scored tokens/s, %.0f prompt tokens/s, "
          "%.0f%% of prompt tokens cached, latency p50 %.3f s p99 %.3f s, %d errors"
          % (done, elapsed, result["calls_per_s"], result["scored_tokens_per_s"],
             result["prompt_tokens_per_s"], 100 * result["cached_prompt_share"],
             result["latency_p50_s"] or 0, result["latency_p99_s"] or 0, len(errors)))
    print(json.dumps(result))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
