#!/usr/bin/python3
"""Hadolint-style checks for deploy/docker/Dockerfile.* (no Docker engine or hadolint here).

Rules (hadolint codes where one exists):
  DL3006  FROM names an explicit tag (after ARG defaults are substituted)
  DL3007  no :latest
  DL3024  stage names are unique
  DL3022  COPY --from names an earlier stage
  DL3020  COPY, not ADD, for local files
  DL3025  CMD / ENTRYPOINT / HEALTHCHECK CMD in JSON (exec) form
  DL3014  apt-get install -y
  DL3015  apt-get install --no-install-recommends
  DL3009  apt lists removed in the RUN that ran apt-get update
  DL3027  apt-get, not apt
  DL3004  no sudo
  DL3003  WORKDIR, not cd into a directory that persists
  DL4000  no MAINTAINER
  DL4006  SHELL with -o pipefail set before any RUN that uses a pipe
  DL3002  the final stage's last USER is not root (and is set)
  CAD001  multi-stage: at least one build stage and a final runtime stage
  CAD002  the final stage has a HEALTHCHECK
  CAD003  every COPY source (build context = repository root) exists and is not .dockerignored
  CAD004  Dockerfile.worker takes the CUDA architectures as a build argument
  CAD005  shell scripts the images copy pass `bash -n`
Skipped on purpose: DL3008 (pinning apt versions: the base image tag pins the distribution
release, and security updates should flow in).

Usage: lint_dockerfiles.py [--expect CODE,...] [DOCKERFILE...]   (default: deploy/docker/Dockerfile.*)
Exit status 1 and one line per finding when anything is wrong. With --expect (the linter's own
test on a bad Dockerfile) the status is 0 exactly when the set of codes found is the one given.
"""
import fnmatch
import glob
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def instructions(text):
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def substitute(value, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def dockerignore_patterns(path):
    f = path + ".dockerignore"
    if not os.path.exists(f):
        f = os.path.join(ROOT, ".dockerignore")
    if not os.path.exists(f):
        return []
    return [l.strip().rstrip("/") for l in open(f) if l.strip() and not l.startswith("#")]


def ignored(rel, patterns):
    for p in patterns:
        p = p.replace("**/", "*")
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p + "/*") or rel.split("/")[0] == p:
            return True
    return False


def lint(path):
    errs = []
    text = open(path).read()
    name = os.path.basename(path)
    ins = instructions(text)
    err = lambda n, code, msg: errs.append(f"{os.path.relpath(path, ROOT)}:{n}: {code} {msg}")
    global_args, stages, stage_args = {}, [], None
    pipefail = False
    patterns = dockerignore_patterns(path)
    seen_from = False
    for n, word, rest in ins:
        if word == "ARG":
            k, _, v = rest.partition("=")
            v = v.strip().strip('"')
            target = stage_args if seen_from else global_args
            target[k.strip()] = substitute(v, {**global_args, **(target or {})})
        elif word == "FROM":
            seen_from = True
            parts = rest.split()
            flags = [p for p in parts if p.startswith("--")]
            parts = [p for p in parts if not p.startswith("--")]
            image = substitute(parts[0], global_args)
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            if image not in [s["alias"] for s in stages]:
                if "$" in image:
                    err(n, "DL3006", f"FROM {parts[0]}: an ARG without a default")
                else:
                    ref = image.split("@")[0]
                    tag = ref.rsplit("/", 1)[-1].partition(":")[2]
                    if not tag and "@" not in image:
                        err(n, "DL3006", f"FROM {image}: pin a tag")
                    if tag == "latest":
                        err(n, "DL3007", f"FROM {image}: do not use :latest")
            if alias and alias in [s["alias"] for s in stages]:
                err(n, "DL3024", f"stage name {alias} used twice")
            stages.append({"alias": alias, "image": image, "line": n, "user": None,
                           "healthcheck": False, "cmd": False, "flags": flags})
            stage_args = {}
            pipefail = False
        elif word == "MAINTAINER":
            err(n, "DL4000", "MAINTAINER is deprecated (use a LABEL)")
        elif word == "SHELL":
            try:
                shell = json.loads(rest)
            except ValueError:
                shell = []
                err(n, "DL3025", "SHELL must be JSON")
            pipefail = "pipefail" in shell
        elif word == "USER":
            stages[-1]["user"] = rest
        elif word == "HEALTHCHECK":
            stages[-1]["healthcheck"] = True
            m = re.search(r"\bCMD\s+(.*)$", rest)
            if rest.strip().upper() != "NONE":
                if not m or not m.group(1).strip().startswith("["):
                    err(n, "DL3025", "HEALTHCHECK CMD in JSON form")
        elif word in ("CMD", "ENTRYPOINT"):
            try:
                json.loads(rest)
            except ValueError:
                err(n, "DL3025", f"{word} in JSON form")
        elif word == "ADD":
            src = [p for p in rest.split() if not p.startswith("--")][:-1]
            if not any(re.match(r"https?://", s) or s.endswith((".tar", ".tar.gz", ".tgz")) for s in src):
                err(n, "DL3020", "use COPY for local files")
        elif word == "COPY":
            parts = rest.split()
            frm = [p.split("=", 1)[1] for p in parts if p.startswith("--from=")]
            files = [p for p in parts if not p.startswith("--")]
            if frm:
                if frm[0] not in [s["alias"] for s in stages[:-1]] and not re.match(r"^[\w./-]+:[\w.-]+$", frm[0]):
                    err(n, "DL3022", f"COPY --from={frm[0]}: no earlier stage of that name")
            else:
                for src in files[:-1]:
                    if src in (".", "./"):
                        continue
                    full = os.path.join(ROOT, src)
                    if not glob.glob(full):
                        err(n, "CAD003", f"COPY {src}: not in the build context")
                    elif ignored(src, patterns):
                        err(n, "CAD003", f"COPY {src}: excluded by the .dockerignore")
                    elif os.path.isfile(full) and open(full, "rb").read(2) == b"#!" and "bash" in open(full).readline():
                        r = subprocess.run(["bash", "-n", full], capture_output=True, text=True)
                        if r.returncode:
                            err(n, "CAD005", f"{src}: {r.stderr.strip()}")
        elif word == "RUN":
            cmd = rest
            if re.search(r"(^|[;&|]\s*)sudo\b", cmd):
                err(n, "DL3004", "do not use sudo")
            if re.search(r"(^|[;&|(]\s*)apt\s+(install|update|upgrade)", cmd):
                err(n, "DL3027", "use apt-get, not apt")
            if re.search(r"(^|&&|;)\s*cd\s+\S+\s*$", cmd) or re.match(r"^cd\s+\S+\s*&&", cmd):
                err(n, "DL3003", "use WORKDIR to change directory")
            if re.search(r"[^|]\|[^|]", cmd) and not pipefail:
                err(n, "DL4006", "set SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"] before a RUN with a pipe")
            for seg in re.split(r"&&|;|\|\|", cmd):
                if re.search(r"\bapt-get\s+(?:\S+\s+)*install\b", seg):
                    if not re.search(r"(\s-y\b|\s-[a-z]*y[a-z]*\b|--yes|--assume-yes)", seg):
                        err(n, "DL3014", "apt-get install needs -y")
                    if "--no-install-recommends" not in seg:
                        err(n, "DL3015", "apt-get install needs --no-install-recommends")
            if "apt-get update" in cmd and "rm -rf /var/lib/apt/lists" not in cmd:
                err(n, "DL3009", "remove /var/lib/apt/lists/* in the same RUN")
    if len(stages) < 2:
        err(1, "CAD001", "needs a build stage and a runtime stage")
    if stages:
        final = stages[-1]
        user = final["user"]
        if not user:
            err(final["line"], "DL3002", "the final stage sets no USER (runs as root)")
        elif user.split(":")[0] in ("root", "0"):
            err(final["line"], "DL3002", "the final stage's last USER is root")
        if not final["healthcheck"]:
            err(final["line"], "CAD002", "the final stage has no HEALTHCHECK")
    if name.endswith("worker") and not re.search(r"^ARG\s+CUDA_ARCHITECTURES\b", text, re.M):
        err(1, "CAD004", "Dockerfile.worker needs ARG CUDA_ARCHITECTURES")
    return errs


def main():
    args = sys.argv[1:]
    expect = None
    if args[:1] == ["--expect"]:
        expect = set(args[1].split(","))
        args = args[2:]
    files = args or sorted(
        f for f in glob.glob(os.path.join(ROOT, "deploy", "docker", "Dockerfile.*"))
        if not f.endswith(".dockerignore"))
    if not files:
        print("no Dockerfiles found", file=sys.stderr)
        return 1
    errs = []
    for f in files:
        errs += lint(f)
    for e in errs:
        print(e)
    print(f"{len(files)} Dockerfile(s) checked, {len(errs)} finding(s)")
    if expect is not None:
        found = {e.split(": ", 1)[1].split()[0] for e in errs}
        if found != expect:
            print(f"expected codes {sorted(expect)}, found {sorted(found)}")
            return 1
        return 0
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
