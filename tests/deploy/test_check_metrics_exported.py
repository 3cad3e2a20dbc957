#!/usr/bin/python3
"""Tests tests/deploy/check_metrics_exported.py and the PromQL name extraction it relies on.

  * metric_names() on tricky PromQL (grouping clauses, matchers, ranges, offsets, __name__);
  * the hand-made router and worker /metrics pages (fixtures/, the contract's names) satisfy
    every name the dashboard, rules and adapter use; dropping one family is reported;
  * --prometheus against a real Prometheus (Debian's, from install-deps) that scrapes those
    pages from a loopback HTTP server; and against a fake API that lacks a name.
Prints "N passed, M failed".
"""
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import promql_sources as ps  # noqa: E402

SCRIPT = os.path.join(HERE, "check_metrics_exported.py")
ROUTER = os.path.join(HERE, "fixtures", "metrics-router.txt")
WORKER = os.path.join(HERE, "fixtures", "metrics-worker.txt")
from tally import check, summary  # noqa: E402


def run(*args):
    r = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Pages(http.server.BaseHTTPRequestHandler):
    routes = {}

    def do_GET(self):
        body = self.routes.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        ctype = "application/json" if body.startswith(b"{") else "text/plain; version=0.0.4"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def serve(routes):
    Pages.routes = routes
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_extraction():
    cases = {
        'sum by (namespace, le) (rate(a_bucket{x="y",z=~"w|v"}[5m]))': {"a_bucket"},
        "a / on (pod) group_left (rank) b": {"a", "b"},
        "topk(5, foo) > bar offset 5m": {"foo", "bar"},
        '{__name__="zz", job="x"}': {"zz"},
        'count_values("v", ok) * 1e3 + rate(c[5m:30s])': {"ok", "c"},
        "sum without (instance) (d) unless on () absent(e)": {"d", "e"},
        "ns:rec:rate5m > 2": {"ns:rec:rate5m"},
        ps.grafana_to_promql('sum(rate(f{namespace=~"$namespace"}[$__rate_interval]))'): {"f"},
    }
    for expr, want in cases.items():
        got = ps.metric_names(expr)
        check(got == want, f"metric_names({expr!r})", f"got {sorted(got)}, want {sorted(want)}")
    used = ps.referenced_metrics()
    check("caduceus_time_to_first_token_seconds" in used and not any(":" in n for n in used)
          and "up" not in used, "referenced names: histogram families, no recording outputs, no `up`",
          str(sorted(used)))


def test_files():
    rc, out = run(ROUTER, WORKER)
    check(rc == 0, "router + worker pages export every referenced metric", out)
    rc, out = run(ROUTER)
    check(rc == 1 and "caduceus_worker_group_healthy" in out, "router page alone: worker metrics reported missing", out)
    tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    tmp.write("".join(l for l in open(WORKER) if not l.startswith("caduceus_worker_info")))
    tmp.close()
    rc, out = run(ROUTER, tmp.name)
    os.unlink(tmp.name)
    check(rc == 1 and "caduceus_worker_info (declared by # TYPE, but no samples yet)" in out
          and out.count("\n  caduceus_") == 1, "a family without samples is reported (and only it)", out)
    rc, out = run("--list")
    check(rc == 0 and len(out.split()) == len(ps.referenced_metrics()), "--list", out)
    rc, out = run()
    check(rc == 2, "no source is a usage error", out)


def test_fake_api():
    names = sorted({l.split("{")[0].split()[0] for f in (ROUTER, WORKER) for l in open(f) if l[0] != "#"})
    srv = serve({"/api/v1/label/__name__/values": json.dumps({"status": "success", "data": names + ["up"]}).encode()})
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    rc, out = run("--prometheus", url)
    check(rc == 0, "--prometheus: fake API with every name", out)
    Pages.routes = {"/api/v1/label/__name__/values": json.dumps(
        {"status": "success", "data": [n for n in names if not n.startswith("caduceus_replicas")]}).encode()}
    rc, out = run("--prometheus", url)
    check(rc == 1 and "caduceus_replicas" in out, "--prometheus: fake API without caduceus_replicas", out)
    srv.shutdown()


def test_real_prometheus():
    prom = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.path.exists(prom):
        check(False, "real Prometheus", f"{prom} not installed (deploy/local/install-deps.sh installs it)")
        return
    pages = serve({"/router": open(ROUTER, "rb").read(), "/worker": open(WORKER, "rb").read()})
    target = f"127.0.0.1:{pages.server_address[1]}"
    work = tempfile.mkdtemp(prefix="caduceus-prom-")
    port = free_port()
    cfg = os.path.join(work, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: caduceus-router
    metrics_path: /router
    static_configs: [{{targets: ["{target}"]}}]
  - job_name: caduceus-worker
    metrics_path: /worker
    static_configs: [{{targets: ["{target}"]}}]
""")
    log = open(os.path.join(work, "log"), "w")
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={work}/data",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        seen = set()
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url + "/api/v1/label/__name__/values", timeout=2) as r:
                    seen = set(json.load(r)["data"])
                if {"caduceus_worker_info", "caduceus_requests_total"} <= seen:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        rc, out = run("--prometheus", url)
        check(rc == 0, "--prometheus: a real Prometheus scraping the router and worker pages",
              out + "\nprometheus log:\n" + open(os.path.join(work, "log")).read()[-2000:])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pages.shutdown()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    test_extraction()
    test_files()
    test_fake_api()
    test_real_prometheus()
    sys.exit(summary())
