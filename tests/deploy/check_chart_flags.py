#!/usr/bin/python3
"""Checks that every command-line flag the Helm chart passes to caduceus-router and
caduceus-worker exists in that binary's --help.

The chart is rendered for its default values and every helm/caduceus/ci/*.yaml. In every pod
template, a container that runs caduceus-router or caduceus-worker contributes the flags after
the binary's name; worker containers start through caduceus-launch-group, which is run here
with --dry-run (node index 0 and 1) to get the exact command line of every rank, including the
flags the launcher adds itself (--rank, --device, --metrics-listen). CADUCEUS_<FLAG>
environment variables set by the chart count as flags too.

Binaries: $CADUCEUS_BIN_DIR/caduceus-router and caduceus-worker, or --bin NAME=PATH.
absl's --help spells flags with underscores (--max_num_seqs); both spellings are accepted.
A flag missing from --help is looked up in --helpfull as well (absl lists only the main file's
flags under --help).
Exit status 1 with the missing flags (and where the chart passes them).
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chart_render as cr  # noqa: E402

BINARIES = ("caduceus-router", "caduceus-worker")
LAUNCHER = os.path.join(cr.ROOT, "deploy", "docker", "caduceus-launch-group")


def norm(flag):
    return flag.replace("-", "_")


def expand_env_refs(arg, node_index):
    """Fills Kubernetes $(VAR) references with stand-ins (the values don't matter for flags)."""
    return re.sub(r"\$\((\w+)\)", lambda m: str(node_index) if m.group(1) == "LWS_WORKER_INDEX" else f"{m.group(1).lower()}-value", arg)


def command_lines(container):
    """[(binary, argv after it)] for the Caduceus binaries a container runs."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        return []
    if os.path.basename(argv[0]) == "caduceus-launch-group":
        out = []
        for node in (0, 1):
            args = [expand_env_refs(a, node) for a in argv[1:]]
            r = subprocess.run(["bash", LAUNCHER, "--dry-run", *args], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"caduceus-launch-group --dry-run {' '.join(args)}: {r.stderr}")
            for line in r.stdout.splitlines():
                words = shlex.split(line)
                out.append((os.path.basename(words[0]), words[1:]))
        return out
    for i, a in enumerate(argv):
        if os.path.basename(a) in BINARIES:
            return [(os.path.basename(a), argv[i + 1:])]
    return []


def flags_in(argv):
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--") and len(a) > 2}


def collect(values_files):
    """{binary: {flag: set(where)}} over all renders."""
    used = {b: {} for b in BINARIES}
    for vf in values_files:
        label = os.path.relpath(vf, cr.ROOT) if vf else "default values"
        for obj in cr.render(vf):
            for kind, tpl in cr.pod_templates(obj):
                for c in cr.containers(tpl):
                    lines = command_lines(c)
                    for binary, argv in lines:
                        if binary not in used:
                            continue
                        for f in flags_in(argv):
                            used[binary].setdefault(f, set()).add(f"{label}: {kind} {obj['metadata']['name']}")
                    if lines:
                        binary = lines[0][0]
                        for e in c.get("env") or []:
                            if e["name"].startswith("CADUCEUS_"):
                                f = e["name"][len("CADUCEUS_"):].lower()
                                used[binary].setdefault(f, set()).add(f"{label}: env {e['name']}")
    return used


def help_flags(path, option):
    r = subprocess.run([path, option], capture_output=True, text=True, timeout=60)
    text = r.stdout + r.stderr
    return {norm(m) for m in re.findall(r"(?<![\w-])--([A-Za-z][\w-]*)", text)}, text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                    help="binary path, e.g. caduceus-router=build/bin/caduceus-router")
    ap.add_argument("--bin-dir", default=os.environ.get("CADUCEUS_BIN_DIR"),
                    help="directory with both binaries (default: $CADUCEUS_BIN_DIR)")
    args = ap.parse_args(argv)
    paths = {b: os.path.join(args.bin_dir, b) if args.bin_dir else None for b in BINARIES}
    for spec in args.bin:
        name, _, path = spec.partition("=")
        paths[name] = path
    for b, p in paths.items():
        if not p or not os.access(p, os.X_OK):
            print(f"{b}: no executable (set CADUCEUS_BIN_DIR or --bin {b}=PATH); got {p}")
            return 2

    used = collect([None] + cr.ci_values_files())
    missing = 0
    for b in BINARIES:
        flags = used[b]
        if not flags:
            print(f"FAIL: the chart passes no flags to {b} (rendering or parsing broke)")
            missing += 1
            continue
        known, text = help_flags(paths[b], "--help")
        full = None
        for f in sorted(flags):
            if norm(f) in known:
                continue
            if full is None:
                full, _ = help_flags(paths[b], "--helpfull")
            if norm(f) in full:
                continue
            missing += 1
            where = sorted(flags[f])
            print(f"FAIL: {b} --{f} is not in `{b} --help`\n      passed by: " + "; ".join(where[:3])
                  + (" ..." if len(where) > 3 else ""))
        print(f"{b}: {len(flags)} flags checked: " + " ".join("--" + f for f in sorted(flags)))
    print("all flags the chart passes exist" if not missing else f"{missing} flag(s) missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
