#!/usr/bin/python3
"""Aggregate decode throughput through the router against the engine's own batch rate (issue 4).

Alternates, PAIRS times on the same machine:
  (a) `caduceus-bench-engine --batch-sizes B --decode-steps 64 --context-tokens 64`: the engine's
      decode tokens/s at batch B (forward passes only, no router, no sampling), once with full
      logits rows (the issue's reference) and once with --argmax-only (the lm_head's argmax,
      which is what the worker runs for the benchmark's greedy requests without logprobs);
  (b) a real cluster (one TP=1 `caduceus-worker` with every core, `caduceus-router` and the
      `caduceus-bench` client, both at `nice -n 10` so they take what the worker leaves) at
      concurrency B: output tokens/s, mean batch, and the router's own share of each step
      (step time seen by the router minus the worker's own step time, from the router's
      `caduceus_step_duration_seconds` and `caduceus_router_step_overhead_seconds`), and the
      share of the router's step time beyond the worker's forward pass (the issue's definition,
      which also counts the worker's sampling; from the worker's own histograms), and the CPU
      milliseconds each process (router, client, worker) spent per router step: on a machine
      they share, that is what the router and the client take from the forward pass, and it
      is far steadier across runs than the throughput ratio.
Prints one line per pair and the ratio (b)/(a); the last stdout line is one JSON object.

usage: router_vs_engine.py --bin BUILD/bin --model DIR [--concurrency 32] [--pairs 3]
                           [--prompt-len 8] [--output-len 128] [--threads N]
                           [--router-nice 10] [--worker-env NAME=VALUE ...]
                           [--router-arg ARG ...]
Needs PYTHONPATH=<build>/proto_py:tests/integration/protos and Debian's python3-grpcio."""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import cluster  # noqa: E402  (the integration tests' process helpers)


def engine_rate(bin_dir, model, batch, argmax_only=False):
    out = subprocess.run([os.path.join(bin_dir, "caduceus-bench-engine"), "--model", model,
                          "--prefill-tokens", "16", "--batch-sizes", str(batch),
                          "--decode-steps", "64", "--context-tokens", "64", "--json"]
                         + (["--argmax-only"] if argmax_only else []),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["decode_tokens_per_s_batch%d" % batch]


def cpu_seconds(pid):
    """User + system CPU time a live process has used (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def router_run(bin_dir, model, batch, requests, prompt_len, output_len, threads, router_nice,
               wait_policy, worker_env, router_args):
    c = cluster.Cluster()
    try:
        # Like a deployment (and like the engine benchmark): OpenMP's default wait policy.
        env = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": wait_policy or None}
        env.update(worker_env)
        group = c.start_worker_group(model, 1, extra=["--kv-cache-bytes", str(256 << 20)],
                                     env=env)
        cluster.wait_serving(group.address, processes=group.ranks)
        listen, metrics = ("127.0.0.1:%d" % cluster.free_port() for _ in range(2))
        router = cluster.Process(
            "router", ["nice", "-n", str(router_nice), os.path.join(bin_dir, "caduceus-router"), "--model",
                       model, "--listen", listen, "--metrics-listen", metrics, "--replica",
                       group.address] + router_args, c.log_dir, env={"OMP_NUM_THREADS": "1"})
        c.procs.append(router)
        cluster.wait_serving(listen, processes=[router])
        # CPU time each process spends during the load: on a machine where all three share the
        # cores, the router's and the client's CPU is taken from the worker's forward pass.
        worker_pid = group.ranks[0].popen.pid
        cpu_before = (cpu_seconds(router.popen.pid), cpu_seconds(worker_pid),
                      resource.getrusage(resource.RUSAGE_CHILDREN))
        out = subprocess.run(["nice", "-n", "10", os.path.join(bin_dir, "caduceus-bench"),
                              "--router", listen, "--concurrency", str(batch), "--requests",
                              str(requests), "--prompt-len", str(prompt_len), "--output-len",
                              str(output_len), "--json"],
                             check=True, capture_output=True, text=True).stdout
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {"router": cpu_seconds(router.popen.pid) - cpu_before[0],
               "worker": cpu_seconds(worker_pid) - cpu_before[1],
               "client": (children.ru_utime + children.ru_stime
                          - cpu_before[2].ru_utime - cpu_before[2].ru_stime)}
        report = json.loads(out.strip().splitlines()[-1])
        text = cluster.scrape(metrics)
        steps = cluster.metric_value(text, "caduceus_step_duration_seconds_count")
        step_s = cluster.metric_value(text, "caduceus_step_duration_seconds_sum")
        overhead_s = cluster.metric_value(text, "caduceus_router_step_overhead_seconds_sum")
        batch_sum = cluster.metric_value(text, "caduceus_batch_size_sum")
        worker_text = cluster.scrape(group.metrics_address)
        worker_steps = cluster.metric_value(worker_text, "caduceus_worker_step_duration_seconds_count")
        forward_s = cluster.metric_value(worker_text, "caduceus_worker_forward_duration_seconds_sum")
        worker_step_s = cluster.metric_value(worker_text, "caduceus_worker_step_duration_seconds_sum")
        return {
            "output_tokens_per_s": report["throughput"]["output_tokens_per_s"],
            "errors": report["errors"],
            "mean_step_s": step_s / steps,
            "router_share": overhead_s / step_s,
            # The definition: step time seen by the router minus the worker's forward
            # time, so the worker's sampling and plan handling count against the router too.
            "share_beyond_forward": (step_s - forward_s) / step_s,
            "worker_sampling_and_control_share": (worker_step_s - forward_s) / step_s,
            "worker_steps": worker_steps,
            "router_steps": steps,
            "mean_batch": (batch_sum / steps) if batch_sum is not None else None,
            # CPU milliseconds per router step, by process.
            "cpu_ms_per_step": {k: 1e3 * v / steps for k, v in cpu.items()},
        }
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=0, help="default: max(32, 8 x concurrency)")
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--router-nice", type=int, default=10)
    ap.add_argument("--worker-wait-policy", default="",
                    help="OMP_WAIT_POLICY of the worker (default: unset, as deployed)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra environment variable for the worker (repeatable)")
    ap.add_argument("--router-arg", action="append", default=[], metavar="ARG",
                    help="an extra command-line argument for the router (repeatable), e.g. "
                         "--router-arg=--pipeline-depth=1")
    a = ap.parse_args()
    cluster.BIN_DIR = a.bin
    requests = a.requests or max(32, 8 * a.concurrency)
    pairs = []
    for i in range(a.pairs):
        engine = engine_rate(a.bin, a.model, a.concurrency)
        engine_argmax = engine_rate(a.bin, a.model, a.concurrency, argmax_only=True)
        routed = router_run(a.bin, a.model, a.concurrency, requests, a.prompt_len,
                            a.output_len, a.threads, a.router_nice, a.worker_wait_policy,
                            dict(kv.split("=", 1) for kv in a.worker_env), a.router_arg)
        routed["engine_tokens_per_s"] = engine
        routed["ratio"] = routed["output_tokens_per_s"] / engine
        routed["engine_argmax_tokens_per_s"] = engine_argmax
        routed["ratio_vs_argmax_engine"] = routed["output_tokens_per_s"] / engine_argmax
        pairs.append(routed)
        print("pair %d: engine %.0f tok/s (argmax-only %.0f), router %.0f tok/s (%.1f%%; %.1f%% "
              "of argmax-only), step %.1f ms, mean batch "
              "%s, step beyond the worker's forward %.1f%% (router + transport %.1f%%, worker "
              "sampling + control %.1f%%), CPU ms/step router %.2f client %.2f worker %.2f, "
              "errors %s" %
              (i + 1, engine, engine_argmax, routed["output_tokens_per_s"],
               100 * routed["ratio"], 100 * routed["ratio_vs_argmax_engine"],
               1e3 * routed["mean_step_s"],
               "%.1f" % routed["mean_batch"] if routed["mean_batch"] is not None else "?",
               100 * routed["share_beyond_forward"], 100 * routed["router_share"],
               100 * routed["worker_sampling_and_control_share"],
               routed["cpu_ms_per_step"]["router"], routed["cpu_ms_per_step"]["client"],
               routed["cpu_ms_per_step"]["worker"], routed["errors"] or "none"),
              flush=True)
    print(json.dumps({"concurrency": a.concurrency, "pairs": pairs,
                      "median_ratio": statistics.median(p["ratio"] for p in pairs),
                      "median_ratio_vs_argmax_engine":
                          statistics.median(p["ratio_vs_argmax_engine"] for p in pairs)}))


if __name__ == "__main__":
    main()
