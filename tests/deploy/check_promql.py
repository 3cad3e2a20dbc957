#!/usr/bin/python3
"""promtool checks of everything Prometheus-facing in deploy/:

  * `promtool check rules` on the recording rules and alerts;
  * `promtool check config` on the scrape configurations (which load those rule files);
  * every other PromQL expression (dashboard panels and variables, prometheus-adapter rules,
    with Grafana/adapter templates filled in) parses: they are written into a rule file as
    recording rules and checked with `promtool check rules`;
  * `promtool test rules tests/deploy/alerts_test.yml`: the alerts fire (and stay quiet) on
    synthetic series as intended.
Prints "N passed, M failed".
"""
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import promql_sources as ps  # noqa: E402

PROM_DIR = os.path.join(ps.ROOT, "deploy", "prometheus")
from tally import check, summary  # noqa: E402


def promtool(*args):
    r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=ps.ROOT)
    return r.returncode, r.stdout + r.stderr


PROMTOOL = os.environ.get("PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"


def main():
    if not os.path.exists(PROMTOOL):
        print(f"promtool not found ({PROMTOOL}): deploy/local/install-deps.sh installs Debian's prometheus")
        print("0 passed, 1 failed")
        return 1
    for f in ps.RULE_FILES:
        rc, out = promtool("check", "rules", f)
        check(rc == 0, f"promtool check rules {os.path.relpath(f, ps.ROOT)}", out)
    for f in ("prometheus.yml", "prometheus-local.yml"):
        rc, out = promtool("check", "config", os.path.join(PROM_DIR, f))
        check(rc == 0, f"promtool check config deploy/prometheus/{f}", out)

    exprs = ps.dashboard_exprs() + ps.adapter_exprs()
    rules = [{"record": f"caduceus_check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "exprs.yml")
        with open(path, "w") as fh:
            yaml.safe_dump({"groups": [{"name": "dashboard-and-adapter", "rules": rules}]}, fh)
        rc, out = promtool("check", "rules", path)
        if rc != 0:  # name the culprits one by one
            for where, e in exprs:
                one = os.path.join(d, "one.yml")
                with open(one, "w") as fh:
                    yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": e}]}]}, fh)
                r1, o1 = promtool("check", "rules", one)
                if r1:
                    out += f"\n{where}: {e}\n{o1}"
        check(rc == 0 and len(exprs) > 20,
              f"{len(exprs)} dashboard and prometheus-adapter expressions parse", out)

    rc, out = promtool("test", "rules", os.path.join(HERE, "alerts_test.yml"))
    check(rc == 0, "promtool test rules tests/deploy/alerts_test.yml", out)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
