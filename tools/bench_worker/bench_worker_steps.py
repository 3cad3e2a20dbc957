#!/usr/bin/python3
"""Step time of a worker group at several tensor-parallel sizes, through the worker gRPC API.

Starts `caduceus-worker` groups (each rank its own process on loopback), prefills BATCH
sequences of PROMPT tokens, then runs STEPS decode steps and reports, per (tp, batch), the
median of the leader's own StepTimings: total, forward, collective (all-reduce/all-gather inside
the forward pass) and control-plane seconds, the collective share of the step, and the all-reduce
latency per call (collective seconds / collectives per step: 2 per layer + 1 logits all-gather).

usage: bench_worker_steps.py --bin BUILD/bin --model DIR [--tp 1,2] [--batch 1,16] [--steps 32]
                             [--json]
Needs PYTHONPATH=<build>/proto_py (Python stubs) and Debian's python3-grpcio."""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

from caduceus.worker.v1 import worker_pb2, worker_pb2_grpc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_group(bin_dir, model, tp, threads, log_dir):
    store, listen = free_port(), "127.0.0.1:%d" % free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    procs = []
    for rank in list(range(1, tp)) + [0]:
        argv = [os.path.join(bin_dir, "caduceus-worker"), "--model", model, "--tp-size", str(tp),
                "--rank", str(rank), "--rendezvous", "127.0.0.1:%d" % store, "--device", "cpu",
                "--kv-cache-bytes", str(512 << 20)]
        if rank == 0:
            argv += ["--listen", listen]
        log = open(os.path.join(log_dir, "tp%d-rank%d.log" % (tp, rank)), "wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
    stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(listen))
    deadline = time.time() + 300
    while True:
        try:
            return procs, stub, stub.Info(worker_pb2.InfoRequest(), timeout=2)
        except grpc.RpcError:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("group tp=%d did not come up; logs in %s" % (tp, log_dir))
            time.sleep(0.5)


def run(stub, info, batch, prompt_len, steps, first_id):
    blocks_each = (prompt_len + steps + 16) // 16 + 1
    greedy = worker_pb2.SamplingParams(temperature=0, top_p=1, repetition_penalty=1)
    plan = worker_pb2.StepPlan()
    seqs = []
    for b in range(batch):
        table = list(range(b * blocks_each, (b + 1) * blocks_each))
        prompt = [(1000 + 37 * b + 11 * i) % 100000 for i in range(prompt_len)]
        plan.sequences.add(sequence_id=first_id + b, token_ids=prompt, start_pos=0, block_table=table,
                           sample=True, prompt_len=prompt_len, first_step=True, sampling=greedy)
        seqs.append({"id": first_id + b, "table": table, "pos": prompt_len})
    result = stub.Step(plan, timeout=600)
    last = [r.token_id for r in result.results]
    timings = []
    for _ in range(steps):
        plan = worker_pb2.StepPlan()
        for s, tok in zip(seqs, last):
            plan.sequences.add(sequence_id=s["id"], token_ids=[tok], start_pos=s["pos"],
                               block_table=s["table"], sample=True, prompt_len=prompt_len)
            s["pos"] += 1
        result = stub.Step(plan, timeout=600)
        last = [r.token_id for r in result.results]
        timings.append(result.timings)
    stub.Release(worker_pb2.ReleaseRequest(sequence_ids=[s["id"] for s in seqs]), timeout=30)
    return timings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", default="1,2")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0,
                    help="OpenMP threads per rank (default: cores / tp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    log_dir = tempfile.mkdtemp(prefix="caduceus-bench-worker-")
    rows = []
    for tp in [int(x) for x in args.tp.split(",")]:
        threads = args.threads or max(1, (os.cpu_count() or 1) // tp)
        procs, stub, info = start_group(args.bin, args.model, tp, threads, log_dir)
        try:
            for i, batch in enumerate(int(x) for x in args.batch.split(",")):
                t = run(stub, info, batch, args.prompt_len, args.steps, 1000 * (i + 1))
                med = lambda f: statistics.median(getattr(x, f) for x in t)
                total, coll = med("total_seconds"), med("collective_seconds")
                calls = 2 * layers + 1 if tp > 1 else 0
                rows.append({"tp": tp, "batch": batch, "threads_per_rank": threads,
                             "step_s": total, "forward_s": med("forward_seconds"),
                             "collective_s": coll, "control_s": med("control_seconds"),
                             "collective_share": coll / total if total else 0,
                             "allreduce_per_call_s": coll / calls if calls else None,
                             "tokens_per_s": batch / total if total else 0})
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    if args.json:
        print(json.dumps({"model": args.model, "steps": args.steps, "results": rows}))
    else:
        print("%-4s %-6s %-8s %-10s %-10s %-10s %-8s %-12s" % (
            "tp", "batch", "threads", "step ms", "fwd ms", "coll ms", "share", "per call ms"))
        for r in rows:
            print("%-4d %-6d %-8d %-10.2f %-10.2f %-10.2f %-8.1f%% %-12s" % (
                r["tp"], r["batch"], r["threads_per_rank"], r["step_s"] * 1e3, r["forward_s"] * 1e3,
                r["collective_s"] * 1e3, 100 * r["collective_share"],
                "-" if r["allreduce_per_call_s"] is None else "%.3f" % (r["allreduce_per_call_s"] * 1e3)))


if __name__ == "__main__":
    sys.exit(main())
