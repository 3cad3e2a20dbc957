#!/usr/bin/python3
"""Checks the Helm chart helm/caduceus without a cluster.

For the default values and every value set in helm/caduceus/ci/*.yaml:
  * `helm lint --strict` passes;
  * `helm template` renders, and every object validates against the Kubernetes API schemas
    (tests/deploy/validate_k8s.js: kubernetes-models + Prometheus Operator models, strict
    fields, LeaderWorkerSet v1);
  * the objects have the shape the deployment needs (checks below: GPUs per pod, ranks and
    rendezvous of the group, probes, /dev/shm, read-only model volume, non-root, drain, HPA
    target, monitors, dashboard and rules identical to deploy/, the worker drain timing, the router's
    batch limits within the workers' step limits).
Then the chart is rendered with the largest integers the values schema allows (from a values
file, where Helm reads numbers as float64) and no rendered flag or field may be in scientific
notation (1e+06), which the binaries and Kubernetes reject.
Then every file in tests/deploy/invalid-values/ must make `helm template` fail with the message
in its first line (`# expect: ...`): the values schema and the templates' checks reject it.
Prints "N passed, M failed".
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chart_render as cr  # noqa: E402

INVALID_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "invalid-values")
from tally import check as report, summary  # noqa: E402


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def args_of(c):
    return list(c.get("command") or []) + list(c.get("args") or [])


def flag_value(argv, flag):
    for a in argv:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def split_launcher(argv):
    """caduceus-launch-group LAUNCHER-OPTS -- caduceus-worker FLAGS [-- RANK0-FLAGS]."""
    i = argv.index("--")
    launcher, rest = argv[1:i], argv[i + 1:]
    if "--" in rest[1:]:
        j = rest.index("--", 1)
        return launcher, rest[0], rest[1:j], rest[j + 1:]
    return launcher, rest[0], rest[1:], []


def secret_file(pod_spec, container, path):
    """The (secretName, key) a file path in a container resolves to, or None when no read-only
    Secret volume mount holds it."""
    vols = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/") + "/"
        if path.startswith(mp) and m.get("readOnly") and "secret" in vols.get(m["name"], {}):
            return vols[m["name"]]["secret"]["secretName"], path[len(mp):]
    return None


def token_problems(who, pod_spec, container, argv, flag, token):
    """--*-token-file FLAG: passed exactly when TOKEN (a values block) is enabled, and the path
    resolves to TOKEN's Secret and key through a read-only mount."""
    path = flag_value(argv, flag)
    if not token["enabled"]:
        return [f"{who}: {flag} passed although disabled"] if path else []
    if not path:
        return [f"{who}: {flag} missing although enabled"]
    want = (token["secretName"], token.get("secretKey", "token"))
    got = secret_file(pod_spec, container, path)
    return [] if got == want else [f"{who}: {flag}={path} resolves to {got}, not Secret {want[0]} key {want[1]}"]


def shape_problems(objs, values):
    """Deployment-specific expectations; returns a list of problems."""
    p = []
    w = values["workers"]
    a = values["autoscaling"]
    tp = w["tensorParallelSize"]
    multi = w["multiNode"]
    ranks = tp // w["nodesPerReplica"] if multi else tp
    kinds = sorted(o["kind"] for o in objs)

    # Names and labels stay within Kubernetes limits.
    for o in objs:
        name = o["metadata"]["name"]
        if len(name) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name):
            p.append(f"{o['kind']}/{name}: not a DNS-1123 label")
        for k, v in (o["metadata"].get("labels") or {}).items():
            if len(str(v)) > 63:
                p.append(f"{o['kind']}/{name}: label {k} longer than 63")

    # Router.
    deps = by_kind(objs, "Deployment")
    if len(deps) != 1:
        return p + [f"expected one Deployment (router), got {len(deps)}"]
    rpod = deps[0]["spec"]["template"]["spec"]
    rc = rpod["containers"][0]
    if rc["command"] != ["caduceus-router"]:
        p.append("router container does not run caduceus-router")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if "grpc" not in rc.get(probe, {}):
            p.append(f"router {probe} is not a gRPC health probe")
    if "preStop" not in rc.get("lifecycle", {}):
        p.append("router has no preStop hook")
    drain = int(flag_value(args_of(rc), "--drain-timeout") or 0)
    if rpod.get("terminationGracePeriodSeconds", 30) <= drain:
        p.append("router terminationGracePeriodSeconds does not cover --drain-timeout")
    # "http": the OpenAI-compatible API, exactly when router.http.enabled.
    want_ports = {"grpc", "metrics"} | ({"http"} if values["router"].get("http", {}).get("enabled") else set())
    ports = {pt["name"] for pt in rc["ports"]}
    if ports != want_ports:
        p.append(f"router ports {ports}, want {want_ports}")
    if ("http" in want_ports) != bool(flag_value(args_of(rc), "--http-listen")):
        p.append("router: --http-listen and router.http.enabled disagree")
    # Bearer tokens: the public API's, and the registry's that the worker leaders present.
    registry_token = values["router"]["registryToken"]
    p += token_problems("router", rpod, rc, args_of(rc), "--api-token-file", values["router"]["apiToken"])
    p += token_problems("router", rpod, rc, args_of(rc), "--registry-token-file", registry_token)
    if not flag_value(args_of(rc), "--forget-replica-after"):
        p.append("router: no --forget-replica-after (replaced replicas would count as down forever)")
    svc_ports = {pt["name"] for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-router") for pt in s["spec"]["ports"]}
    if svc_ports != want_ports:
        p.append(f"router Service ports {svc_ports}, want {want_ports}")

    # Workers: one workload, StatefulSet or LeaderWorkerSet.
    sts, lws = by_kind(objs, "StatefulSet"), by_kind(objs, "LeaderWorkerSet")
    if multi:
        if len(lws) != 1 or sts:
            return p + [f"multiNode: expected one LeaderWorkerSet and no StatefulSet, got {kinds}"]
        work = lws[0]
        lwt = work["spec"]["leaderWorkerTemplate"]
        if lwt["size"] != w["nodesPerReplica"]:
            p.append(f"LWS size {lwt['size']} != nodesPerReplica")
        if lwt.get("restartPolicy") not in ("RecreateGroupOnPodRestart", "RecreateGroupAfterStart"):
            p.append("LWS does not recreate the whole group when a pod fails")
        if work["spec"].get("startupPolicy") != "LeaderCreated":
            p.append("LWS startupPolicy must be LeaderCreated (the leader is ready only after all ranks join)")
        templates = [("leader", lwt["leaderTemplate"]), ("follower", lwt["workerTemplate"])]
    else:
        if len(sts) != 1 or lws:
            return p + [f"single node: expected one StatefulSet and no LeaderWorkerSet, got {kinds}"]
        work = sts[0]
        templates = [("single", work["spec"]["template"])]
    replicas_set = "replicas" in work["spec"]
    if a["enabled"] == replicas_set:
        p.append("workload replicas must be left to the HPA exactly when autoscaling is enabled")
    if not a["enabled"] and work["spec"].get("replicas") != w["replicas"]:
        p.append("workload replicas != workers.replicas")

    router_argv = args_of(rc)
    for role, tpl in templates:
        spec = tpl["spec"]
        c = spec["containers"][0]
        argv = args_of(c)
        if argv[0] != "caduceus-launch-group":
            p.append(f"{role}: worker container does not start caduceus-launch-group")
            continue
        launcher, binary, common, rank0 = split_launcher(argv)
        # Drain timing: the launcher gives rank 0 --leader-grace to drain and stop its group (a
        # follower pod holds its ranks back as long), then --kill-after; the kubelet waits longer.
        wdrain = int(flag_value(common, "--drain-timeout") or 30)
        grace = int(flag_value(launcher, "--leader-grace") or 20)
        kill_after = int(flag_value(launcher, "--kill-after") or 30)
        if grace < wdrain + 5:
            p.append(f"{role}: --leader-grace {grace} does not cover --drain-timeout {wdrain} + the leader's shutdown")
        if spec.get("terminationGracePeriodSeconds", 30) <= grace + kill_after:
            p.append(f"{role}: terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds', 30)} "
                     f"<= --leader-grace {grace} + --kill-after {kill_after}")
        # Load-time FP8 quantization reaches every rank (each quantizes its own slices), and
        # only when asked for: a bf16 replica must not quietly change its outputs.
        if flag_value(common, "--quantization") != (w.get("quantization") if w.get("quantization") != "none" else None):
            p.append(f"{role}: --quantization {flag_value(common, '--quantization')} for workers.quantization {w.get('quantization')}")
        # The router caps its batch at the worker's step limits (defaults 256 sequences, 8192
        # tokens): the chart must not ask for more than the workers accept.
        for rflag, wflag, wdefault in (("--max-num-seqs", "--max-step-sequences", 256),
                                       ("--max-tokens-per-step", "--max-step-tokens", 8192)):
            want = int(flag_value(router_argv, rflag) or 0)
            have = int(flag_value(common, wflag) or wdefault)
            if want > have:
                p.append(f"{role}: router {rflag}={want} exceeds the workers' {wflag}={have}")
        if binary != "caduceus-worker":
            p.append(f"{role}: launcher does not run caduceus-worker")
        if flag_value(launcher, "--local-ranks") != str(ranks):
            p.append(f"{role}: --local-ranks {flag_value(launcher, '--local-ranks')} != {ranks}")
        if flag_value(launcher, "--device") != w["device"]:
            p.append(f"{role}: launcher --device != {w['device']}")
        if flag_value(common, "--tp-size") != str(tp):
            p.append(f"{role}: --tp-size != {tp}")
        rdv = flag_value(common, "--rendezvous")
        if tp > 1:
            want = "$(LWS_LEADER_ADDRESS):" if multi else "127.0.0.1:"
            if not rdv or not rdv.startswith(want):
                p.append(f"{role}: --rendezvous {rdv} does not start with {want}")
        node_index = flag_value(launcher, "--node-index")
        if node_index != ("$(LWS_WORKER_INDEX)" if multi else "0"):
            p.append(f"{role}: --node-index {node_index}")
        has_api = any(a.startswith("--listen=") for a in rank0)
        if (role == "follower") == has_api:
            p.append(f"{role}: rank-0 flags (--listen, --router) on the wrong pods")
        if flag_value(common, "--registry-token-file"):
            p.append(f"{role}: --registry-token-file among every rank's flags (rank 0 only registers)")
        if role == "follower":
            if any(m["name"] == "registry-token" for m in c.get("volumeMounts") or []):
                p.append("follower: mounts the registry token (only rank 0 registers)")
        else:
            if not flag_value(rank0, "--router") or "router-registry" not in flag_value(rank0, "--router"):
                p.append(f"{role}: leader does not register with the router registry Service")
            p += token_problems(role, spec, c, rank0, "--registry-token-file", registry_token)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if "grpc" not in c.get(probe, {}):
                    p.append(f"{role}: {probe} is not the worker API's gRPC health")
        gpus = (c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu")
        if w["device"] == "cuda" and gpus != ranks:
            p.append(f"{role}: nvidia.com/gpu limit {gpus} != {ranks} ranks per pod")
        if w["device"] == "cpu" and gpus is not None:
            p.append(f"{role}: cpu workers request GPUs")
        metrics_ports = sorted(pt["containerPort"] for pt in c["ports"] if pt["name"].startswith("metrics-r"))
        if metrics_ports != list(range(w["ports"]["metrics"], w["ports"]["metrics"] + ranks)):
            p.append(f"{role}: metrics ports {metrics_ports}")
        for pt in c["ports"]:
            if len(pt["name"]) > 15:
                p.append(f"{role}: port name {pt['name']} longer than 15")
        vols = {v["name"]: v for v in spec["volumes"]}
        if vols.get("dshm", {}).get("emptyDir", {}).get("medium") != "Memory":
            p.append(f"{role}: no /dev/shm emptyDir in memory")
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        if "/dev/shm" not in mounts:
            p.append(f"{role}: /dev/shm not mounted")
        model_mount = [m for m in c["volumeMounts"] if m["name"] == "model"]
        if not model_mount or not model_mount[0].get("readOnly"):
            p.append(f"{role}: model volume not mounted read-only")
        mv = vols.get("model", {})
        if values["model"]["volume"]["type"] == "pvc" and not mv.get("persistentVolumeClaim", {}).get("readOnly"):
            p.append(f"{role}: model PVC not read-only")
        if values["model"]["volume"]["type"] == "hostPath" and "hostPath" not in mv:
            p.append(f"{role}: model hostPath missing")
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            p.append(f"{role}: pods may run as root")
        if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            p.append(f"{role}: privilege escalation allowed")
        if w["nodeSelector"] and spec.get("nodeSelector") != w["nodeSelector"]:
            p.append(f"{role}: nodeSelector not applied")
        if w["tolerations"] and spec.get("tolerations") != w["tolerations"]:
            p.append(f"{role}: tolerations not applied")
        envs = {e["name"] for e in c.get("env", [])}
        if not set(w["ncclEnv"]) <= envs or "POD_IP" not in envs:
            p.append(f"{role}: NCCL env or POD_IP missing")

    # Disruption budget, network policies.
    if w["podDisruptionBudget"]["enabled"] and len(by_kind(objs, "PodDisruptionBudget")) != 1:
        p.append("no PodDisruptionBudget for the workers")
    if values["networkPolicy"]["enabled"]:
        nps = by_kind(objs, "NetworkPolicy")
        wnp = [n for n in nps if n["metadata"]["name"].endswith("-worker")]
        if len(nps) != 2 or not wnp:
            p.append("expected NetworkPolicies for the router and the workers")
        else:
            api_rule = [r for r in wnp[0]["spec"]["ingress"]
                        if any(pt.get("port") == w["ports"]["api"] for pt in r.get("ports", []))]
            if not api_rule or not all("podSelector" in f and f["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "router"
                                       for f in api_rule[0].get("from", [{}])):
                p.append("worker API is not limited to the router")

    # Autoscaling.
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    if a["enabled"]:
        if len(hpas) != 1:
            p.append("autoscaling enabled but no HPA")
        else:
            h = hpas[0]["spec"]
            want = ("LeaderWorkerSet" if multi else "StatefulSet", work["metadata"]["name"])
            if (h["scaleTargetRef"]["kind"], h["scaleTargetRef"]["name"]) != want:
                p.append(f"HPA targets {h['scaleTargetRef']}, not {want}")
            names = [m["object"]["metric"]["name"] for m in h["metrics"]]
            if names[0] != "caduceus_requests_waiting":
                p.append(f"HPA metrics {names}")
            adapter = open(os.path.join(cr.ROOT, "deploy", "prometheus", "prometheus-adapter-values.yaml")).read()
            for n in names:
                if f'as: "{n}"' not in adapter:
                    p.append(f"HPA metric {n} is not provided by the prometheus-adapter rule")
    elif hpas:
        p.append("HPA rendered with autoscaling disabled")

    # Monitoring objects.
    m = values["metrics"]
    if m["podMonitor"]["enabled"]:
        pms = by_kind(objs, "PodMonitor")
        eps = sorted(e["port"] for e in pms[0]["spec"]["podMetricsEndpoints"]) if pms else []
        if eps != sorted(f"metrics-r{i}" for i in range(ranks)):
            p.append(f"PodMonitor endpoints {eps}")
    if m["serviceMonitor"]["enabled"] and not by_kind(objs, "ServiceMonitor"):
        p.append("no ServiceMonitor")
    if m["prometheusRule"]["enabled"]:
        pr = by_kind(objs, "PrometheusRule")
        want = []
        for f in ("recording-rules.yml", "alerts.yml"):
            want += yaml.safe_load(open(os.path.join(cr.ROOT, "deploy", "prometheus", f)))["groups"]
        if not pr or pr[0]["spec"]["groups"] != want:
            p.append("PrometheusRule groups differ from deploy/prometheus/*.yml")
    if values["grafana"]["dashboard"]["enabled"]:
        cms = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
        want = json.load(open(os.path.join(cr.ROOT, "deploy", "grafana", "caduceus.json")))
        if not cms or json.loads(cms[0]["data"]["caduceus.json"]) != want:
            p.append("dashboard ConfigMap differs from deploy/grafana/caduceus.json")
    return p


def merged_values(values_file):
    base = yaml.safe_load(open(os.path.join(cr.CHART, "values.yaml")))

    def merge(a, b):
        for k, v in (b or {}).items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
        return a
    return merge(base, yaml.safe_load(open(values_file)) if values_file else {})


# The largest values the schema allows for the integer settings that become flags or fields.
LARGE_VALUES = {
    "router": {
        "scheduler": {"maxNumSeqs": 65536, "maxTokensPerStep": 1048576, "maxWaitingRequests": 1000000,
                      "maxWaitingTokens": 1099511627776},
        "drainTimeoutSeconds": 3600, "heartbeatTimeoutSeconds": 600, "preStopSleepSeconds": 120,
        "forgetReplicaAfterSeconds": 86400, "maxRegisteredReplicas": 100000, "maxRequestFailovers": 100,
    },
    "workers": {
        "maxStepTokens": 1048576, "maxStepSequences": 65536, "kvCacheBytes": 1099511627776,
        "drainTimeoutSeconds": 3600, "startupTimeoutSeconds": 14400,
    },
    "autoscaling": {"enabled": True, "minReplicas": 1000, "maxReplicas": 1000,
                    "runningRequestsPerReplica": 65536, "scaleDownStabilizationSeconds": 3600},
}
SCIENTIFIC = re.compile(r"\d[eE][+-]?\d")
SCIENTIFIC_VALUE = re.compile(r"^[0-9.]+[eE][+-]?[0-9]+$")
ARGV_PATH = re.compile(r"containers\[\d+\]\.(args|command)\[")


def scientific_notation(objs):
    """Rendered container arguments and numeric fields written as 1e+06."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif isinstance(node, float) and node == int(node):
            found.append(f"{where}: {node} (a float)")
        elif isinstance(node, str) and (SCIENTIFIC_VALUE.match(node)
                                        or (ARGV_PATH.search(where) and SCIENTIFIC.search(node))):
            found.append(f"{where}: {node}")  # PyYAML reads an unquoted 1e+06 as a string
    for o in objs:
        if o["kind"] == "ConfigMap":
            continue  # dashboard JSON / rules, not flags
        walk(o, f"{o['kind']}/{o['metadata']['name']}")
    return found


def check_large_values():
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(LARGE_VALUES, f)
    try:
        objs = cr.render(f.name)
    except RuntimeError as e:
        report(False, "largest schema values render", str(e))
        return
    finally:
        os.unlink(f.name)
    found = scientific_notation(objs)
    argv = [a for o in objs for _, tpl in cr.pod_templates(o) for c in cr.containers(tpl) for a in args_of(c)]
    seen = [a for a in argv if a.startswith(("--max-waiting-requests=", "--max-tokens-per-step=", "--max-step-tokens=",
                                             "--forget-replica-after=", "--max-registered-replicas="))]
    ok = (not found and "--max-waiting-requests=1000000" in seen and "--max-step-tokens=1048576" in seen
          and "--forget-replica-after=86400" in seen and "--max-registered-replicas=100000" in seen)
    report(ok, "largest schema values render as plain integers (no 1e+06 in flags or fields)",
           "\n".join(found) or f"flags seen: {seen}")


def main():
    check_large_values()
    sets = [None] + cr.ci_values_files()
    for vf in sets:
        label = os.path.relpath(vf, cr.ROOT) if vf else "default values"
        args = ["lint", "--strict", cr.CHART] + (["-f", vf] if vf else [])
        rc, out, err = cr.run_helm(args)
        report(rc == 0, f"helm lint --strict ({label})", out + err)
        try:
            objs = cr.render(vf)
        except RuntimeError as e:
            report(False, f"helm template ({label})", str(e))
            continue
        report(True, f"helm template ({label}): {len(objs)} objects")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(objs, f)
        r = subprocess.run(["node", os.path.join(os.path.dirname(__file__), "validate_k8s.js"), cr.NODE_MODULES, f.name],
                           capture_output=True, text=True)
        os.unlink(f.name)
        report(r.returncode == 0, f"Kubernetes schemas ({label}): {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''}",
               r.stdout + r.stderr)
        problems = shape_problems(objs, merged_values(vf))
        report(not problems, f"deployment shape ({label})", "\n".join(problems))

    invalid = sorted(f for f in os.listdir(INVALID_DIR) if f.endswith(".yaml"))
    if len(invalid) < 3:
        report(False, "invalid value sets", f"only {len(invalid)} in {INVALID_DIR}")
    for name in invalid:
        path = os.path.join(INVALID_DIR, name)
        first = open(path).readline()
        m = re.match(r"#\s*expect:\s*(.+)", first)
        if not m:
            report(False, f"rejects {name}", "first line must be '# expect: <error text>'")
            continue
        rc, _, err = cr.run_helm(["template", cr.RELEASE, cr.CHART, "-f", path])
        report(rc != 0 and m.group(1).strip() in err, f"rejects {name}",
               f"status {rc}; expected '{m.group(1).strip()}' in:\n{err}")

    return summary()


if __name__ == "__main__":
    sys.exit(main())
