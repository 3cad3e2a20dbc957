#!/usr/bin/python3
"""Checks that every metric the deployment artifacts use is exported by Caduceus processes.

Metric names are taken from the Grafana dashboard (deploy/grafana/caduceus.json), the alerting
and recording rules (deploy/prometheus/alerts.yml, recording-rules.yml) and the
prometheus-adapter rules behind the HPA (deploy/prometheus/prometheus-adapter-values.yaml);
histogram series (_bucket/_sum/_count) count as their family. Recording-rule outputs are not
required (Prometheus computes them) but their inputs are; `up` and scrape_* come from
Prometheus itself.

Exported names come from either
  (a) text files of scraped /metrics pages (Prometheus text format), e.g. a router's and a
      worker's:   check_metrics_exported.py router.txt worker-rank0.txt
  (b) a Prometheus server that scraped them (its /api/v1/label/__name__/values):
                  check_metrics_exported.py --prometheus http://127.0.0.1:9090
Both may be given; the exported sets are united. A family counts as exported only with at
least one sample (a `# TYPE` line alone does not: send traffic first).

Exit status: 0 when all are exported; 1 with the missing names (and where each is used);
2 on usage or connection errors. --list prints the referenced names and exits.
"""
import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql_sources as ps  # noqa: E402

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|\s)")
_TYPE = re.compile(r"^#\s+TYPE\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s")


def family(name):
    return re.sub(r"_(bucket|sum|count|created)$", "", name)


def names_from_text(text):
    """(names with samples, names only declared) in a /metrics page."""
    sampled, declared = set(), set()
    for line in text.splitlines():
        line = line.strip()
        m = _TYPE.match(line)
        if m:
            declared.add(family(m.group(1)))
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            sampled.add(family(m.group(1)))
    return sampled, declared - sampled


def names_from_prometheus(url, timeout):
    api = url.rstrip("/") + "/api/v1/label/__name__/values"
    with urllib.request.urlopen(api, timeout=timeout) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{api}: {body}")
    return {family(n) for n in body["data"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="scraped /metrics pages (text format)")
    ap.add_argument("--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    ap.add_argument("--list", action="store_true", help="print the referenced metric names and exit")
    args = ap.parse_args(argv)

    used = ps.referenced_metrics()
    if args.list:
        for name in sorted(used):
            print(name)
        return 0
    if not args.files and not args.prometheus:
        ap.error("give /metrics files and/or --prometheus URL")

    exported, declared_only = set(), set()
    for f in args.files:
        try:
            text = open(f, encoding="utf-8").read()
        except OSError as e:
            print(f"cannot read {f}: {e}", file=sys.stderr)
            return 2
        s, d = names_from_text(text)
        exported |= s
        declared_only |= d
    if args.prometheus:
        try:
            exported |= names_from_prometheus(args.prometheus, args.timeout)
        except (OSError, urllib.error.URLError, ValueError, RuntimeError) as e:
            print(f"cannot query {args.prometheus}: {e}", file=sys.stderr)
            return 2

    missing = sorted(n for n in used if n not in exported)
    if missing:
        print(f"{len(missing)} of {len(used)} metrics used by the dashboard, rules or adapter are not exported:")
        for n in missing:
            hint = " (declared by # TYPE, but no samples yet)" if n in declared_only else ""
            where = sorted(set(used[n]))
            print(f"  {n}{hint}\n      used in: " + "; ".join(where[:4]) + (" ..." if len(where) > 4 else ""))
        return 1
    print(f"all {len(used)} metrics used by the dashboard, rules and adapter are exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
