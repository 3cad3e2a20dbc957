"""Every PromQL expression the deployment artifacts contain, and the metric names they reference.

Sources (paths relative to the repository root):
  deploy/grafana/caduceus.json                   panel targets and template-variable queries
  deploy/prometheus/recording-rules.yml          recording rules (their outputs are not metrics
                                                 a process exports; their inputs are)
  deploy/prometheus/alerts.yml                   alerting rules
  deploy/prometheus/prometheus-adapter-values.yaml  the prometheus-adapter rules behind the HPA

Grafana variables ($__rate_interval, $namespace, ...) and prometheus-adapter templates
(<<.Series>>, <<.LabelMatchers>>, <<.GroupBy>>) are replaced by concrete text so that every
expression is plain PromQL.
"""
import json
import os
import re

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "caduceus.json")
RULE_FILES = [os.path.join(ROOT, "deploy", "prometheus", f) for f in ("recording-rules.yml", "alerts.yml")]
ADAPTER = os.path.join(ROOT, "deploy", "prometheus", "prometheus-adapter-values.yaml")

# Series Prometheus makes itself for every target (not exported by the processes).
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_samples_post_metric_relabeling", "scrape_series_added"}
# Series of the cluster's kube-state-metrics, which a rule may use about our pods (restarts).
KUBE_STATE_METRICS = {"kube_pod_container_status_restarts_total"}

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "inf", "nan", "atan2", "start", "end"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")


def grafana_to_promql(expr):
    """Replaces Grafana's variables with values PromQL accepts."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)(?::[^}]*)?\}?", "5m", expr)
    expr = re.sub(r"\$__(interval_ms|range_s|range_ms)", "300", expr)
    expr = re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]", "x", expr)
    return expr


def adapter_to_promql(query, series):
    return (query.replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", 'namespace="x",service="y"')
                 .replace("<<.GroupBy>>", "service"))


def metric_names(expr):
    """Metric names a PromQL expression selects (by name or by {__name__="..."})."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\{[^{}]*\}", " ", s)            # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)          # ranges, subqueries
    prev = None
    while prev != s:                              # grouping / matching label lists
        prev = s
        s = _GROUPING.sub(" ", s)
    s = re.sub(r"\b\d[\w.]*", " ", s)            # numbers, durations
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue                              # keyword, function or aggregation
        names.add(word)
    return names


def base_name(name):
    """Histogram/summary series -> the family name (what the processes declare)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def dashboard_exprs(path=DASHBOARD):
    out = []
    d = json.load(open(path))

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels") or [])
    for p in panels(d.get("panels") or []):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append((f"dashboard panel '{p.get('title')}'", grafana_to_promql(t["expr"])))
    for v in (d.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not q:
            continue
        m = re.match(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", q)
        if m:
            out.append((f"dashboard variable ${v['name']}", grafana_to_promql(m.group(1))))
        elif not re.match(r"^\s*label_values\(\s*\w+\s*\)\s*$", q):
            q = re.sub(r"^\s*query_result\((.*)\)\s*$", r"\1", q)
            out.append((f"dashboard variable ${v['name']}", grafana_to_promql(q)))
    return out


def rule_exprs(paths=RULE_FILES):
    """(where, expr, record-name or None) for every rule."""
    out = []
    for path in paths:
        for g in yaml.safe_load(open(path))["groups"]:
            for r in g["rules"]:
                name = r.get("record") or r.get("alert")
                out.append((f"{os.path.basename(path)} {name}", r["expr"], r.get("record")))
    return out


def adapter_exprs(path=ADAPTER):
    out = []
    cfg = yaml.safe_load(open(path))
    rules = cfg.get("rules") or {}
    for section in ("custom", "external", "resource"):
        entries = rules.get(section) or []
        if section == "resource":
            continue
        for r in entries:
            series_query = r["seriesQuery"]
            series = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", series_query)
            series = series.group(1) if series else "x"
            out.append((f"prometheus-adapter {section} rule {series} (seriesQuery)", series_query))
            if r.get("metricsQuery"):
                out.append((f"prometheus-adapter {section} rule {series} (metricsQuery)",
                            adapter_to_promql(r["metricsQuery"], series)))
    return out


def all_exprs():
    """(where, expr) for every expression, rules included."""
    return dashboard_exprs() + [(w, e) for w, e, _ in rule_exprs()] + adapter_exprs()


def referenced_metrics():
    """{base metric name: [where it is used]} for names a live process must export.

    Recording-rule outputs are left out (Prometheus computes them); their inputs are in.
    Series Prometheus synthesizes (up, scrape_*) and kube-state-metrics' are left out too.
    """
    recorded = {rec for _, _, rec in rule_exprs() if rec}
    used = {}
    for where, expr in all_exprs():
        for n in metric_names(expr):
            if n in recorded or n in PROMETHEUS_SYNTHETIC or n in KUBE_STATE_METRICS:
                continue
            used.setdefault(base_name(n), []).append(where)
    return used
