#!/usr/bin/python3
"""What speculative decoding (--speculative-tokens) buys: the same greedy requests against two
running routers, one plain and one speculative, each with its own worker, alternating rounds.
Prompts are the oracle fixture's 12 chat prompts (tests/fixtures/oracle_tiny_seed1.json), each
asked for --tokens tokens; at each --concurrency, C clients send them round-robin. Prints, per
router and concurrency, the median request latency, aggregate tokens/s and (speculative) the
share of guesses accepted and tokens per step; checks both routers return the same tokens. The
last stdout line is one JSON object.

usage: speculative_bench.py --plain HOST:PORT --plain-metrics HOST:PORT
                            --speculative HOST:PORT --speculative-metrics HOST:PORT
                            --prompts ORACLE_JSON [--tokens 128] [--concurrency 1,4,16]
                            [--rounds 2] [--only I,J,...]
Needs PYTHONPATH=<build>/proto_py and Debian's python3-grpcio."""

import argparse
import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc

from caduceus.v1 import generation_pb2 as g
from caduceus.v1 import generation_pb2_grpc as gg


def metric(addr, name):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def run(stub, prompts, tokens, concurrency):
    """(median latency s, tokens/s, {prompt index: ids})."""
    reqs = [g.GenerateRequest(prompt_ids=p, params=g.GenerationParameters(
        max_new_tokens=tokens, ignore_eos=True, sampling=g.SamplingParameters(temperature=0.0)))
        for p in prompts]
    jobs = list(range(len(reqs))) * max(1, concurrency // len(reqs) + 1)
    latencies, outputs = [], {}

    def one(i):
        t0 = time.perf_counter()
        r = stub.Generate(reqs[i], timeout=600)
        latencies.append(time.perf_counter() - t0)
        outputs[i] = list(r.token_ids)
        return len(r.token_ids)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(one, jobs))
    return statistics.median(latencies), total / (time.perf_counter() - t0), outputs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", required=True)
    ap.add_argument("--plain-metrics", required=True)
    ap.add_argument("--speculative", required=True)
    ap.add_argument("--speculative-metrics", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="", help="comma list of prompt indices to use (default all)")
    a = ap.parse_args()
    with open(a.prompts) as f:
        prompts = [p["prompt_ids"] for p in json.load(f)["prompts"]]
    if a.only:
        prompts = [prompts[int(i)] for i in a.only.split(",")]
    stubs = {"plain": gg.GenerationStub(grpc.insecure_channel(a.plain)),
             "speculative": gg.GenerationStub(grpc.insecure_channel(a.speculative))}
    metrics = {"plain": a.plain_metrics, "speculative": a.speculative_metrics}
    run(stubs["plain"], prompts[:2], 8, 1)  # warm-up
    run(stubs["speculative"], prompts[:2], 8, 1)
    results = []
    for c in [int(x) for x in a.concurrency.split(",")]:
        for rnd in range(a.rounds):
            outs = {}
            for name in ("plain", "speculative"):
                m = metrics[name]
                before = (metric(m, "caduceus_speculative_draft_tokens_total"),
                          metric(m, "caduceus_speculative_accepted_tokens_total"),
                          metric(m, "caduceus_step_duration_seconds_count"),
                          metric(m, "caduceus_generation_tokens_total"))
                lat, tps, outs[name] = run(stubs[name], prompts, a.tokens, c)
                drafted = metric(m, "caduceus_speculative_draft_tokens_total") - before[0]
                accepted = metric(m, "caduceus_speculative_accepted_tokens_total") - before[1]
                steps = metric(m, "caduceus_step_duration_seconds_count") - before[2]
                generated = metric(m, "caduceus_generation_tokens_total") - before[3]
                row = {"router": name, "concurrency": c, "round": rnd, "p50_latency_s": round(lat, 4),
                       "tokens_per_s": round(tps, 1), "tokens_per_step": round(generated / max(steps, 1), 2),
                       "drafted": int(drafted), "accepted": int(accepted)}
                results.append(row)
                print("c=%-3d %-11s p50 %.3f s  %7.1f tok/s  %.2f tokens/step  guesses %d, accepted %d (%.0f%%)"
                      % (c, name, lat, tps, row["tokens_per_step"], drafted, accepted,
                         100 * accepted / drafted if drafted else 0), flush=True)
            if outs["plain"] != outs["speculative"]:
                raise SystemExit("the routers returned different tokens at concurrency %d" % c)
    print(json.dumps({"tokens": a.tokens, "results": results}))


if __name__ == "__main__":
    main()
