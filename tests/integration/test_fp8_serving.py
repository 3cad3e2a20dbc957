"""FP8 weights served end to end: router and worker processes, a real gRPC client.

- Router "ckpt": a TP=2 worker group on the tiny model's FP8 checkpoint (per-channel scales,
  made by tests/reference/quantize_fp8.py, independent of the engine).
- Router "online": a TP=1 worker on the bf16 tiny model with --quantization fp8.
Checks:
- ModelInfo and `caduceus-cli info` say how the weights are stored ("fp8", "fp8-online"); the
  load-time quantized replica's revision carries "-fp8" (its outputs are not the bf16 ones).
- Greedy tokens of both routers (unary, streamed, and concurrent) follow the float64 reference
  run on the FP8 checkpoint (tests/reference/llama_reference.py dequantizes it), step for step,
  with reference_compare.py's rule for near-ties.
- The worker's weight memory gauge is smaller than a bf16 worker's would be.
Usage: test_fp8_serving.py BF16_MODEL_DIR FP8_MODEL_DIR ORACLE_JSON (CTest: router_fp8_serving).
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cluster
import reference_compare
import router_client as rc
from caduceus.v1 import generation_pb2 as g

NEW_TOKENS = 12
PROMPTS = (0, 4, 8)


class Env:
    pass


def check_info(env):
    ckpt = env.ckpt.GetModelInfo(g.GetModelInfoRequest(), timeout=10)
    online = env.online.GetModelInfo(g.GetModelInfoRequest(), timeout=10)
    assert ckpt.quantization == "fp8", ckpt
    assert ckpt.tp_size == 2, ckpt
    assert online.quantization == "fp8-online", online
    assert online.revision.endswith("-fp8"), online.revision
    assert not ckpt.revision.endswith("-fp8"), ckpt.revision
    out = subprocess.run([os.path.join(cluster.BIN_DIR, "caduceus-cli"), "info",
                          "--router", env.online_addr], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["quantization"] == "fp8-online", info
    print("    quantization: ckpt %s (tp 2), online %s (revision %s)" % (
        ckpt.quantization, online.quantization, online.revision))


def expect_reference(exp, got, what):
    ok, msg = reference_compare.compare_tokens(exp, got)
    assert ok, "%s: %s (reference %s, got %s)" % (what, msg, exp.gen_ids, got)


def check_greedy_follows_reference(env):
    for name, stub in (("ckpt", env.ckpt), ("online", env.online)):
        unary = [list(stub.Generate(rc.ids_request(e.prompt_ids, NEW_TOKENS), timeout=120).token_ids)
                 for e in env.expected]
        with ThreadPoolExecutor(len(env.expected)) as pool:
            together = list(pool.map(
                lambda e: list(stub.Generate(rc.ids_request(e.prompt_ids, NEW_TOKENS),
                                             timeout=120).token_ids), env.expected))
        streamed = []
        for e in env.expected:
            ids = []
            for m in stub.GenerateStream(rc.ids_request(e.prompt_ids, NEW_TOKENS), timeout=120):
                ids.extend(m.token_ids)
            streamed.append(ids)
        for i, e in enumerate(env.expected):
            expect_reference(e, unary[i], "%s prompt %d unary" % (name, i))
            assert together[i] == unary[i], "%s prompt %d: batched %s != alone %s" % (
                name, i, together[i], unary[i])
            assert streamed[i] == unary[i], "%s prompt %d: streamed differs" % (name, i)
    print("    %d prompts x %d tokens follow the float64 reference of the FP8 checkpoint "
          "(both routers; unary, batched, streamed)" % (len(env.expected), NEW_TOKENS))


def check_weight_memory(env):
    text = cluster.scrape(env.online_worker_metrics)
    placed = cluster.metric_value(text, "caduceus_worker_memory_bytes", {"kind": "weights"})
    assert placed is not None, "caduceus_worker_memory_bytes{kind=weights} missing"
    # bf16 projections of the tiny model: 4 layers x (q|k|v + o + gate|up + down) x 2 bytes.
    h, kv, inter, layers = 256, 64, 768, 4
    bf16_projections = layers * 2 * (h * (h + 2 * kv) + h * h + 3 * inter * h)
    lm_head = 128256 * h * 2
    # FP8: one byte per projection weight, plus a 4-byte scale per row and alignment.
    assert lm_head + bf16_projections / 2 <= placed <= lm_head + bf16_projections / 2 + 16384 * layers, placed
    assert cluster.metric_value(text, "caduceus_worker_info", {"quantization": "fp8-online"}) == 1, \
        "caduceus_worker_info has no quantization=\"fp8-online\" label"
    print("    weights placed: %d bytes (bf16 projections would take %d more)" % (
        placed, bf16_projections // 2))


CHECKS = [check_info, check_greedy_follows_reference, check_weight_memory]


def main():
    bf16_model, fp8_model, oracle_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(oracle_path) as f:
        oracle = json.load(f)
    env = Env()
    prompts = [oracle["prompts"][i]["prompt_ids"] for i in PROMPTS]
    env.expected = reference_compare.reference_expectations(fp8_model, prompts, NEW_TOKENS, 1.0)
    c = cluster.Cluster()
    failures = []
    try:
        groups = {
            "ckpt": c.start_worker_group(fp8_model, 2, name="ckpt", extra=cluster.WORKER_KV),
            "online": c.start_worker_group(bf16_model, 1, name="online",
                                           extra=cluster.WORKER_KV + ["--quantization", "fp8"]),
        }
        routers = {}
        for name, grp in groups.items():
            addr, _, proc = c.start_router(name, grp)
            routers[name] = addr
            cluster.wait_serving(addr, processes=[proc] + grp.ranks)
        env.ckpt, env.online = rc.stub(routers["ckpt"]), rc.stub(routers["online"])
        env.online_addr = routers["online"]
        env.online_worker_metrics = groups["online"].metrics_address
        for stub in (env.ckpt, env.online):
            cluster.wait_until("replica up", lambda: rc.info_if(stub, 1), timeout=120)
        failures = cluster.run_checks(CHECKS, env, c)
    finally:
        c.close()
    sys.exit(cluster.report(failures))


if __name__ == "__main__":
    main()
