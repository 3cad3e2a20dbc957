#!/usr/bin/python3
"""A GPU tensor-parallel worker group, on the CUDA emulation: two caduceus-worker ranks (each its
own process) on --device cuda:0, loading the CUDA backend module built on the emulation
(kernels/cuda/emulation: emulated CUDA runtime, cuBLAS and NCCL) through CADUCEUS_CUDA_MODULE_DIR.
This runs the GPU-only parts of a TP group that nothing else runs without GPUs: the NCCL
communicator bootstrapped through Gloo, collectives on device buffers with deferred completion
and the per-step flush, the CUDA kernels sharded by rank, and KV sizing from cudaMemGetInfo.

Checks: the same greedy tokens as the oracle and as a CPU TP=2 group, first-step logits within
1e-4 relative of the CPU group's (fp32 KV cache on both), an Info with tp_size 2, the emulated
device's memory and the cache dtype asked for, per-kind memory metrics equal to Info, and
decode steps replayed from CUDA graphs (pieces between the NCCL all-reduces) with no failure.

usage: test_worker_tp_cuda_emulated.py EMULATION_DIR MODEL_DIR ORACLE_JSON
(EMULATION_DIR holds the emulated CUDA and NCCL modules; the worker is CADUCEUS_BIN_DIR's)"""

import json
import os
import sys

import cluster
import worker_client

NEW_TOKENS = 6
PROMPTS = 2
REL_TOL = 1e-4
DEVICE_BYTES = 256 << 20


def main():
    emulation_dir, model, oracle_path = sys.argv[1:4]
    with open(oracle_path) as f:
        oracle = json.load(f)["prompts"][:PROMPTS]
    prompts = [p["prompt_ids"] for p in oracle]
    expected = [p["gen_ids"][:NEW_TOKENS] for p in oracle]
    failures = []
    c = cluster.Cluster()
    try:
        cpu = c.start_worker_group(model, 2, name="cpu",
                                   extra=["--kv-cache-bytes", 64 << 20])
        cluster.wait_serving(cpu.address, processes=cpu.ranks)
        cpu_tokens, cpu_logits = worker_client.generate(
            worker_client.stub(cpu.address), prompts, NEW_TOKENS, return_first_logits=True)
        c.close()

        group = c.start_worker_group(
            model, 2, name="cuda-emulated",
            extra=["--device", "cuda:0", "--kv-cache-dtype", "float32", "--kv-cache-bytes", 0,
                   "--gpu-memory-utilization", 0.5, "--max-step-tokens", 256,
                   "--max-step-sequences", 8],
            env={"CADUCEUS_CUDA_MODULE_DIR": emulation_dir,
                 "CADUCEUS_CUDA_EMULATION_BYTES": str(DEVICE_BYTES)})
        cluster.wait_serving(group.address, timeout=300, processes=group.ranks)
        w = worker_client.stub(group.address)
        info = w.Info(worker_client.worker_pb2.InfoRequest(), timeout=30)
        print("emulated cuda TP=2 Info: device %s, tp %d, kv dtype %s, %d KV blocks, "
              "device memory %d" % (info.device, info.tp_size, info.kv_cache_dtype,
                                    info.num_kv_blocks, info.device_memory_bytes))
        if info.tp_size != 2 or info.kv_cache_dtype != "float32":
            failures.append("Info: tp_size %d, kv_cache_dtype %r" % (info.tp_size,
                                                                    info.kv_cache_dtype))
        if info.device_memory_bytes != DEVICE_BYTES or info.num_kv_blocks <= 0:
            failures.append("Info: device_memory_bytes %d (want %d), %d KV blocks"
                            % (info.device_memory_bytes, DEVICE_BYTES, info.num_kv_blocks))
        tokens, logits = worker_client.generate(w, prompts, NEW_TOKENS, return_first_logits=True,
                                                timeout=600)
        text = cluster.scrape(group.metrics_address)
        # The data plane is the (emulated) NCCL communicator, not the CPU's Gloo fallback.
        for p in group.ranks:
            with open(p.log_path, errors="replace") as f:
                if "nccl communicator up" not in f.read():
                    failures.append("%s: no 'nccl communicator up' in its log" % p.name)
        for kind, value in (("kv_cache", info.kv_cache_bytes),
                            ("device_total", info.device_memory_bytes)):
            got = cluster.metric_value(text, "caduceus_worker_memory_bytes",
                                       {"kind": kind, "rank": "0"})
            if got != value:
                failures.append("caduceus_worker_memory_bytes{kind=%s} %s, Info %d"
                                % (kind, got, value))
        replays = cluster.metric_value(text, "caduceus_worker_cuda_graph_events_total",
                                       {"event": "replay", "rank": "0"})
        graph_failures = cluster.metric_value(text, "caduceus_worker_cuda_graph_events_total",
                                              {"event": "failure", "rank": "0"})
        print("rank 0 CUDA graphs: %s replays, %s failures" % (replays, graph_failures))
        if not replays or graph_failures != 0:
            failures.append("CUDA graphs: %s decode steps replayed, %s failures (want > 0, 0)"
                            % (replays, graph_failures))
        for i in range(len(prompts)):
            print("prompt %d: cuda-emulated %s cpu %s oracle %s"
                  % (i, tokens[i], cpu_tokens[i], expected[i]))
            if tokens[i] != expected[i] or tokens[i] != cpu_tokens[i]:
                failures.append("prompt %d: tokens differ" % i)
            worst = worker_client.relative_logit_difference(logits[i], cpu_logits[i])
            if worst is None:
                failures.append("prompt %d: logits rows of %d and %d"
                                % (i, len(logits[i] or []), len(cpu_logits[i])))
                continue
            print("prompt %d: max relative logit difference to CPU TP=2 %.2e" % (i, worst))
            if worst > REL_TOL:
                failures.append("prompt %d: logits differ by %.2e relative" % (i, worst))
    except Exception:
        c.dump_logs()
        raise
    finally:
        c.close()
    return cluster.report(failures)


if __name__ == "__main__":
    sys.exit(main())
