"""Starts real Caduceus processes on loopback for integration tests and always cleans them up.

Every process runs in its own session with its output in a log file; Cluster.close() (also at
interpreter exit) sends SIGTERM, then SIGKILL after a grace period, so a failing test leaves no
orphan. On failure the tail of every log is printed.

Environment: CADUCEUS_BIN_DIR (the built executables) and PYTHONPATH including the generated
Python stubs (<build>/proto_py), both set by CTest.
"""

import atexit
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # stubs of tests/integration/protos

BIN_DIR = os.environ.get("CADUCEUS_BIN_DIR", "")


_handed_out = set()
_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def free_port():
    """A port nothing listens on now and that this process has not handed out before.

    Drawn at random below the kernel's ephemeral range (32768+ on Linux): ports from bind(0) come
    from that range, where outgoing connections of other processes (and of other tests running
    in parallel) also take theirs, so one could be taken before our server binds it."""
    while True:
        port = _rng.randint(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


class Process:
    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(log_dir, name + ".log")
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        # Several ranks share 2 cores in CI: one OpenMP thread each, and no spinning.
        full_env.setdefault("OMP_NUM_THREADS", "1")
        full_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        full_env.update(env or {})
        for name in [k for k, v in full_env.items() if v is None]:  # None: leave unset
            del full_env[name]
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                      env=full_env, start_new_session=True)

    def alive(self):
        return self.popen.poll() is None

    def wait(self, timeout):
        """Exit code, or None if still running after `timeout` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        if self.alive():
            os.kill(self.popen.pid, sig)

    def tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"


class Cluster:
    def __init__(self, keep_logs=False):
        self.log_dir = tempfile.mkdtemp(prefix="caduceus-it-")
        self.procs = []
        atexit.register(self.close)

    def start(self, name, binary, args, env=None):
        argv = [os.path.join(BIN_DIR, binary)] + [str(a) for a in args]
        p = Process(name, argv, self.log_dir, env)
        self.procs.append(p)
        return p

    def start_worker_group(self, model, tp, name="g", extra=None, leader_extra=None,
                           start_leader=True, env=None, binary="caduceus-worker"):
        """Starts ranks 1..tp-1 then (optionally) rank 0; returns (leader address, processes).
        `binary`: the worker executable, in BIN_DIR or an absolute path."""
        store = free_port()
        listen = "127.0.0.1:%d" % free_port()
        metrics = "127.0.0.1:%d" % free_port()
        ranks = []
        for r in list(range(1, tp)) + ([0] if start_leader else []):
            args = ["--model", model, "--tp-size", tp, "--rank", r,
                    "--rendezvous", "127.0.0.1:%d" % store, "--device", "cpu"] + (extra or [])
            if r == 0:
                args += ["--listen", listen, "--metrics-listen", metrics] + (leader_extra or [])
            ranks.append(self.start("%s-rank%d" % (name, r), binary, args, env))
        group = WorkerGroup(listen, metrics, store, ranks, model, tp, extra, leader_extra, name)
        return group

    def start_router(self, name, group, extra=()):
        """Starts caduceus-router on free ports in front of one worker group (its model
        directory, its leader as the replica); returns (address, metrics address, process)."""
        addr = "127.0.0.1:%d" % free_port()
        metrics = "127.0.0.1:%d" % free_port()
        proc = self.start("router-" + name, "caduceus-router", [
            "--model", group.model, "--listen", addr, "--metrics-listen", metrics,
            "--replica", group.address] + list(extra))
        return addr, metrics, proc

    def dump_logs(self, out=sys.stderr):
        for p in self.procs:
            out.write("----- %s (%s) -----\n%s\n" % (p.name, " ".join(p.argv), p.tail()))

    def close(self):
        for p in self.procs:
            p.signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in self.procs:
            if p.wait(max(0.1, deadline - time.time())) is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        self.procs = []


class WorkerGroup:
    def __init__(self, listen, metrics, store, ranks, model, tp, extra, leader_extra, name):
        self.address = listen
        self.metrics_address = metrics
        self.store_port = store
        self.ranks = ranks  # followers first, leader last (when started)
        self.model, self.tp, self.extra, self.leader_extra, self.name = (
            model, tp, extra, leader_extra, name)

    @property
    def leader(self):
        return self.ranks[-1]


def wait_serving(address, timeout=120.0, processes=()):
    """Waits until grpc.health.v1 at `address` answers SERVING; raises with logs otherwise."""
    deadline = time.time() + timeout
    channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    last = None
    while time.time() < deadline:
        for p in processes:
            if not p.alive():
                raise RuntimeError("%s exited with %s before serving:\n%s" %
                                   (p.name, p.popen.returncode, p.tail()))
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                return channel
            last = r.status
        except grpc.RpcError as e:
            last = e.code()
        time.sleep(0.2)
    raise TimeoutError("%s not serving after %.0f s (last: %s)" % (address, timeout, last))


def scrape(address):
    import urllib.request
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=5) as r:
        return r.read().decode()


def metric_value(text, name, labels=None):
    """Sum of the samples of `name` whose labels include `labels` (dict), or None if absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if labels:
            have = dict(kv.split("=", 1) for kv in label_text.rstrip("}").split(",") if "=" in kv)
            have = {k: v.strip('"') for k, v in have.items()}
            if any(have.get(k) != v for k, v in labels.items()):
                continue
        total += float(value)
        seen = True
    return total if seen else None


def run_checks(checks, env, cluster, always=()):
    """Runs each check(env) in order: all of them, or with CADUCEUS_E2E_ONLY set those whose name
    contains it (and the ones in `always`). A failing check prints its traceback and the cluster's
    logs and the next one runs. Returns the names of the failed checks."""
    only = os.environ.get("CADUCEUS_E2E_ONLY")
    failures = []
    for check in checks:
        if only and only not in check.__name__ and check not in always:
            continue
        print("%s:" % check.__name__)
        try:
            check(env)
        except Exception:
            import traceback
            traceback.print_exc(file=sys.stdout)
            failures.append(check.__name__)
            cluster.dump_logs(sys.stdout)
    return failures


def report(failures, noun="failures"):
    """Prints every failure and the count; returns the exit status."""
    for f in failures:
        print("FAIL:", f)
    print("%d %s" % (len(failures), noun))
    return 1 if failures else 0


# Worker flags for a small KV cache (32 MiB): the integration clusters' default.
WORKER_KV = ["--kv-cache-bytes", 32 << 20]


def wait_until(what, fn, timeout=30.0, interval=0.2):
    """fn()'s first truthy answer within `timeout` seconds; AssertionError naming `what` else."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))
