#!/usr/bin/python3
"""Tests tests/deploy/check_chart_flags.py with stand-in binaries whose absl-style --help lists
exactly the flags of the router and worker command-line contracts (docs/operations.md):
  * the chart passes only contract flags (the check passes);
  * a flag the binary lacks is reported with the value set that passes it;
  * dash spellings in --help and flags only under --helpfull are accepted.
The real binaries are checked by the deploy_chart_flags test once they are built.
Prints "N passed, M failed".
"""
import os
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "check_chart_flags.py")

ROUTER_FLAGS = ["model", "listen", "metrics_listen", "replica", "max_num_seqs", "max_tokens_per_step",
                "max_waiting_requests", "max_waiting_tokens", "drain_timeout", "tls_cert", "tls_key",
                "api_token_file", "log_payloads", "heartbeat_timeout", "pipeline_depth",
                "registry_token_file", "forget_replica_after", "max_registered_replicas",
                "max_request_failovers", "audit_log", "audit_log_payloads", "http_listen",
                "http_threads", "served_model_name", "http_behind_tls_proxy", "speculative_tokens",
                "speculative_ngram_min", "speculative_ngram_max", "speculative_max_running"]
WORKER_FLAGS = ["model", "tp_size", "rank", "rendezvous", "device", "listen", "metrics_listen",
                "kv_cache_bytes", "gpu_memory_utilization", "router", "advertise_address",
                "collective_timeout", "connect_timeout", "gloo_hostname", "gloo_iface", "max_step_tokens",
                "max_step_sequences", "drain_timeout", "kv_cache_dtype", "registry_token_file",
                "quantization"]
from tally import check, summary  # noqa: E402


def fake(directory, name, flags, helpfull_only=(), dashes=False):
    """An executable printing an absl-style --help (exit 1, as absl does)."""
    def line(f):
        shown = f.replace("_", "-") if dashes else f
        return f"    --{shown} (some help text); default: \"\";"
    help_text = f"{name}: usage message\n\n  Flags from {name}/main.cc:\n" + "\n".join(line(f) for f in flags)
    full_text = help_text + "\n\n  Flags from common/other.cc:\n" + "\n".join(line(f) for f in helpfull_only)
    path = os.path.join(directory, name)
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\n"
                 f"if [ \"$1\" = --helpfull ]; then cat <<'EOF'\n{full_text}\nEOF\nelse cat <<'EOF'\n{help_text}\nEOF\nfi\nexit 1\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def run(bin_dir):
    env = dict(os.environ, CADUCEUS_BIN_DIR=bin_dir)
    r = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    return r.returncode, r.stdout + r.stderr


with tempfile.TemporaryDirectory() as d:
    fake(d, "caduceus-router", ROUTER_FLAGS)
    fake(d, "caduceus-worker", WORKER_FLAGS)
    rc, out = run(d)
    check(rc == 0, "chart flags are all in the contract", out)
    check("--rank" in out and "--advertise-address" in out and "--drain-timeout" in out,
          "launcher-added and rank-0 flags are among those checked", out)

    fake(d, "caduceus-worker", [f for f in WORKER_FLAGS if f != "gpu_memory_utilization"])
    rc, out = run(d)
    check(rc == 1 and "caduceus-worker --gpu-memory-utilization is not in" in out
          and "llama70b" in out, "a missing worker flag is reported with its value set", out)

    fake(d, "caduceus-router", [f for f in ROUTER_FLAGS if f != "api_token_file"])
    fake(d, "caduceus-worker", WORKER_FLAGS)
    rc, out = run(d)
    check(rc == 1 and "caduceus-router --api-token-file" in out, "a missing router flag is reported", out)

    fake(d, "caduceus-router", ROUTER_FLAGS)
    fake(d, "caduceus-worker", [f for f in WORKER_FLAGS if f != "registry_token_file"])
    rc, out = run(d)
    check(rc == 1 and "caduceus-worker --registry-token-file is not in" in out and "llama70b" in out,
          "a missing rank-0 flag (--registry-token-file) is reported", out)

    fake(d, "caduceus-router", ROUTER_FLAGS, dashes=True)
    fake(d, "caduceus-worker", [f for f in WORKER_FLAGS if f != "collective_timeout"],
         helpfull_only=["collective_timeout"])
    rc, out = run(d)
    check(rc == 0, "dash spellings and --helpfull-only flags are accepted", out)

    rc, out = run(os.path.join(d, "nowhere"))
    check(rc == 2, "missing binaries are an error, not a pass", out)

sys.exit(summary())
