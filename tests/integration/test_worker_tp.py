#!/usr/bin/python3
"""Tensor-parallel worker groups on CPU, each rank its own process on loopback, driven through the
worker gRPC API: TP=2 and TP=4 give the same greedy tokens as TP=1 (which must itself match the
oracle's llama.cpp/float64 tokens), and first-step logits within 1e-4 relative (max |a-b| over
the row divided by max |logit|). TP=4 on the tiny model (2 KV heads) replicates KV heads.

Then a TP=2 group on the emulated device (the CPU kernels behind the device-memory path, see
worker/backend/emulated_device.h) with the KV cache sized from --gpu-memory-utilization after the
warm-up step: the same tokens and first-step logits, bit for bit, as the CPU TP=2 group, and an
Info whose device figures add up.

usage: test_worker_tp.py MODEL_DIR ORACLE_JSON"""

import json
import os
import sys
import time

import cluster
import worker_client

NEW_TOKENS = 12
REL_TOL = 1e-4


EMULATED_DEVICE_BYTES = 1 << 30
UTILIZATION = 0.5


def weights_bound_of(model):
    return sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model)
               if f.endswith(".safetensors"))


def check_emulated_device(c, model, prompts, cpu_result):
    failures = []
    group = c.start_worker_group(
        model, 2, name="emulated",
        extra=["--device", "emulated-device", "--kv-cache-bytes", 0,
               "--gpu-memory-utilization", UTILIZATION, "--max-step-tokens", 1024,
               "--max-step-sequences", 64],
        env={"CADUCEUS_EMULATED_DEVICE_BYTES": str(EMULATED_DEVICE_BYTES)})
    cluster.wait_serving(group.address, processes=group.ranks)
    w = worker_client.stub(group.address)
    info = w.Info(worker_client.worker_pb2.InfoRequest(), timeout=10)
    tokens, logits = worker_client.generate(w, prompts, NEW_TOKENS, return_first_logits=True)
    text = cluster.scrape(group.metrics_address)
    c.close()
    exported = {kind: cluster.metric_value(text, "caduceus_worker_memory_bytes",
                                           {"kind": kind, "rank": "0"})
                for kind in ("weights", "kv_cache", "activations", "device_total")}
    print("emulated device TP=2 rank 0 memory metrics: %s" % exported)
    want = {"kv_cache": info.kv_cache_bytes, "activations": info.activation_bytes,
            "device_total": info.device_memory_bytes}
    for kind, value in want.items():
        if exported[kind] != value:
            failures.append("caduceus_worker_memory_bytes{kind=%s} %s, Info says %d"
                            % (kind, exported[kind], value))
    if not exported["weights"] or exported["weights"] > weights_bound_of(model):
        failures.append("caduceus_worker_memory_bytes{kind=weights} %s" % exported["weights"])
    if (tokens, logits) != cpu_result:
        failures.append("emulated device TP=2: tokens or first-step logits differ from CPU TP=2")
    allowed = int(UTILIZATION * EMULATED_DEVICE_BYTES)
    # Weights of one rank: at most the whole model's files.
    weights_bound = weights_bound_of(model)
    block_bytes = info.kv_cache_bytes // max(info.num_kv_blocks, 1)
    print("emulated device TP=2: %d KV blocks (%d bytes), activations %d bytes, device %d bytes"
          % (info.num_kv_blocks, info.kv_cache_bytes, info.activation_bytes,
             info.device_memory_bytes))
    if info.device_memory_bytes != EMULATED_DEVICE_BYTES:
        failures.append("Info.device_memory_bytes %d, expected %d"
                        % (info.device_memory_bytes, EMULATED_DEVICE_BYTES))
    if info.activation_bytes <= 0:
        failures.append("Info.activation_bytes %d: the warm-up allocated nothing"
                        % info.activation_bytes)
    if not (0 < info.kv_cache_bytes <= allowed - info.activation_bytes):
        failures.append("KV cache %d bytes + activations %d exceed %.0f%% of the device"
                        % (info.kv_cache_bytes, info.activation_bytes, 100 * UTILIZATION))
    if info.kv_cache_bytes + info.activation_bytes + weights_bound + block_bytes < allowed:
        failures.append("KV cache %d bytes leaves more than the weights unused of %d"
                        % (info.kv_cache_bytes, allowed))
    return failures


def main():
    model, oracle_path = sys.argv[1], sys.argv[2]
    with open(oracle_path) as f:
        oracle = json.load(f)
    prompts = [p["prompt_ids"] for p in oracle["prompts"]]
    expected = [p["gen_ids"][:NEW_TOKENS] for p in oracle["prompts"]]
    results = {}
    failures = []
    c = cluster.Cluster()
    try:
        for tp in (1, 2, 4):
            group = c.start_worker_group(model, tp, name="tp%d" % tp,
                                         extra=["--kv-cache-bytes", 64 << 20])
            cluster.wait_serving(group.address, processes=group.ranks)
            w = worker_client.stub(group.address)
            info = w.Info(worker_client.worker_pb2.InfoRequest(), timeout=10)
            assert info.tp_size == tp, info
            assert info.kv_cache_dtype == "float32", info  # auto on a CPU
            start = time.time()
            tokens, logits = worker_client.generate(w, prompts, NEW_TOKENS, return_first_logits=True)
            print("TP=%d: %d prompts x %d tokens in %.1f s" % (tp, len(prompts), NEW_TOKENS,
                                                               time.time() - start))
            results[tp] = (tokens, logits)
            text = cluster.scrape(group.metrics_address)
            steps = cluster.metric_value(text, "caduceus_worker_step_duration_seconds_count")
            if not steps or steps < NEW_TOKENS:
                failures.append("TP=%d: leader metrics report %s steps" % (tp, steps))
            c.close()
        failures += check_emulated_device(c, model, prompts, results[2])
        base_tokens, base_logits = results[1]
        for i, (got, want) in enumerate(zip(base_tokens, expected)):
            if got != want:
                failures.append("TP=1 prompt %d: %s, oracle %s" % (i, got, want))
        for tp in (2, 4):
            tokens, logits = results[tp]
            for i in range(len(prompts)):
                if tokens[i] != base_tokens[i]:
                    failures.append("TP=%d prompt %d: tokens %s != TP=1 %s" %
                                    (tp, i, tokens[i], base_tokens[i]))
                worst = worker_client.relative_logit_difference(logits[i], base_logits[i])
                if worst is None:
                    failures.append("TP=%d prompt %d: logits rows of %d and %d"
                                    % (tp, i, len(logits[i]), len(base_logits[i])))
                    continue
                print("TP=%d prompt %d: max relative logit difference %.2e" % (tp, i, worst))
                if worst > REL_TOL:
                    failures.append("TP=%d prompt %d: logits differ by %.2e relative" % (tp, i, worst))
    except Exception:
        c.dump_logs()
        raise
    finally:
        c.close()
    return cluster.report(failures)


if __name__ == "__main__":
    sys.exit(main())
