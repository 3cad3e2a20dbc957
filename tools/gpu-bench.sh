#!/usr/bin/env bash
# CUDA kernel tests and caduceus-bench-kernels on a GPU machine; the same benchmark's CPU mode as
# a CI check. See docs/cuda.md ("Benchmark").
#
#   tools/gpu-bench.sh [--out DIR] [--build-dir DIR] [--arch 90a] [--jobs N] [--quick]
#                      [--skip-tests] [--no-cuda-graphs] [-- EXTRA BENCH ARGS]
#       On a GPU machine (needs only CUDA, CMake, a C++ compiler; ninja if present): configures
#       kernels/ + kernels/bench standalone (kernels/bench/standalone) for one architecture,
#       builds, runs kernels_cpu_test and kernels_cuda_test (a skipped CUDA test fails here), then
#       the benchmark on cuda:0. Writes under DIR (default $OUT, else out/gpu-bench): build.log,
#       kernels_cpu_test.log, kernels_cuda_test.log, bench.log (human table), bench.err,
#       bench.json (the JSON object, checked), nvidia-smi.txt, summary.txt. --quick shortens
#       every timing loop (30 ms, 2 loops) for a tight device budget.
#   tools/gpu-bench.sh --dry-run [--bin PATH] [--out DIR]
#       The benchmark's CPU mode (tiny model, seconds) from an existing build (default
#       build/bin/caduceus-bench-kernels), then the same JSON check. CTest: gpu_bench_dry_run.
#   tools/gpu-bench.sh --prepare
#       Copies /usr/src/googletest into third_party/googletest-src (ignored by git through its own
#       .gitignore) so a tree shipped to a GPU machine without Debian packages carries GoogleTest.
#   tools/gpu-bench.sh --check FILE [--mode full|dry-run|emulated]
#       Only the JSON check of a results file.
#
# Exit status: 0 when everything ran and the JSON has every field; 1 on a failure (build, tests,
# benchmark, check); 2 on a usage error. Missed performance goals are reported, not failures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MODE=full
OUT_DIR="${OUT:-}"
BUILD_DIR="$ROOT/build-gpu"
ARCH="90a"
JOBS="$(nproc 2>/dev/null || echo 4)"
BIN=""
CHECK_FILE=""
CHECK_MODE=""
SKIP_TESTS=0
GRAPHS=1
QUICK=0
BENCH_EXTRA=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "gpu-bench: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) MODE=dry-run ;;
    --prepare) MODE=prepare ;;
    --check) MODE=check; CHECK_FILE="${2:?--check needs a file}"; shift ;;
    --mode) CHECK_MODE="${2:?}"; shift ;;
    --bin) BIN="${2:?}"; shift ;;
    --out) OUT_DIR="${2:?}"; shift ;;
    --build-dir) BUILD_DIR="${2:?}"; shift ;;
    --arch) ARCH="${2:?}"; shift ;;
    --jobs) JOBS="${2:?}"; shift ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --no-cuda-graphs) GRAPHS=0 ;;
    --quick) QUICK=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; BENCH_EXTRA=("$@"); break ;;
    *) echo "gpu-bench: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# ---------------------------------------------------------------------------------------------
# JSON check: every field docs/cuda.md lists, numbers finite and rates positive. Python when the
# machine has it; otherwise (minimal GPU images) a key-presence check with grep.
check_json() {  # FILE MODE(full|dry-run|emulated) GRAPHS(0|1)
  local file="$1" mode="$2" graphs="$3"
  [[ -s "$file" ]] || { echo "check: $file is missing or empty" >&2; return 1; }
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$file" "$mode" "$graphs" <<'PY'
import json, math, sys
path, mode, graphs = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
errors = []
try:
    with open(path) as f:
        r = json.load(f)
except Exception as e:  # noqa: BLE001
    print(f"check: {path}: not JSON: {e}", file=sys.stderr)
    sys.exit(1)

def get(obj, dotted):
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj

def need(obj, dotted, where, kind="positive"):
    v = get(obj, dotted)
    if v is None:
        errors.append(f"{where}: missing {dotted}")
    elif kind == "positive" and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                     and math.isfinite(v) and v > 0):
        errors.append(f"{where}: {dotted} = {v!r}, want a positive number")
    elif kind == "number" and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v)):
        errors.append(f"{where}: {dotted} = {v!r}, want a number")
    elif kind == "bool" and not isinstance(v, bool):
        errors.append(f"{where}: {dotted} = {v!r}, want true/false")
    elif kind == "string" and not (isinstance(v, str) and v):
        errors.append(f"{where}: {dotted} = {v!r}, want a string")
    return v

if r.get("schema") != "caduceus-bench-kernels/1":
    errors.append(f"schema = {r.get('schema')!r}")
# "emulated": a full-mode run on the CUDA emulation at tiny sizes (CI): the fields of a CUDA run,
# any shape, and each decode step captured and replayed as a graph (the emulation captures too).
expect_mode = "full" if mode == "emulated" else mode
if r.get("mode") != expect_mode:
    errors.append(f"mode = {r.get('mode')!r}, want {expect_mode!r}")
kind = need(r, "device.kind", "device", "string")
if mode in ("full", "emulated") and kind != "cuda":
    errors.append(f"device.kind = {kind!r}, want 'cuda'")
need(r, "device.name", "device", "string")
for k in ["hidden", "q_heads", "kv_heads", "head_dim", "intermediate", "vocab", "layers",
          "weight_bytes_per_step", "kv_bytes_per_token_layer"]:
    need(r, "shape." + k, "shape")
if need(r, "shape.kv_cache_dtype", "shape", "string") not in (None, "bf16", "f32"):
    errors.append(f"shape.kv_cache_dtype = {get(r, 'shape.kv_cache_dtype')!r}, want bf16 or f32")
if mode == "full" and get(r, "shape.name") != "llama3-8b":
    errors.append(f"shape.name = {get(r, 'shape.name')!r}, want 'llama3-8b'")
need(r, "memory.copy_d2d_bytes_per_s", "memory")
need(r, "memory.stream_read_bytes_per_s", "memory")
need(r, "memory.h2d_pageable_bytes_per_s", "memory")
need(r, "memory.h2d_staged_bytes_per_s", "memory")
need(r, "gemm.flops_per_s", "gemm")
need(r, "gemm.impl", "gemm", "string")

kernels = r.get("kernels")
if not isinstance(kernels, list) or not kernels:
    errors.append("kernels: missing or empty")
    kernels = []
seen = set()
for i, k in enumerate(kernels):
    where = f"kernels[{i}] {k.get('kernel')} {k.get('shape')}"
    for f in ["seconds", "bytes", "bytes_per_s", "fraction_of_copy_bw"]:
        need(k, f, where)
    need(k, "cache_resident", where, "bool")
    seen.add(k.get("kernel"))
for name in ["rms_norm", "add_rms_norm", "rope", "silu_mul", "kv_cache_write",
             "paged_attention", "attention_prefill", "linear"]:
    if name not in seen:
        errors.append(f"kernels: no {name} entry")

decode = r.get("decode")
batches = []
if not isinstance(decode, list) or not decode:
    errors.append("decode: missing or empty")
    decode = []
for i, d in enumerate(decode):
    where = f"decode[{i}] batch {d.get('batch')}"
    for f in ["batch", "context", "step_s", "tokens_per_s", "bytes_per_s", "fraction_of_copy_bw"]:
        need(d, f, where)
    need(d, "kv_shared_across_layers", where, "bool")
    if not isinstance(d.get("breakdown_s"), dict) or "linear" not in d["breakdown_s"]:
        errors.append(f"{where}: breakdown_s missing or without 'linear'")
    if mode in ("full", "emulated") and graphs:
        g = d.get("cuda_graph")
        if not isinstance(g, dict):
            errors.append(f"{where}: cuda_graph missing")
        elif mode == "emulated" and "error" in g:
            errors.append(f"{where}: cuda_graph failed: {g['error']}")
        elif "error" not in g:
            need(g, "step_s", where + " cuda_graph")
            need(g, "speedup", where + " cuda_graph")
    batches.append(d.get("batch"))
if batches and batches != sorted(set(batches), key=batches.index):
    errors.append(f"decode: repeated batches {batches}")
if mode == "dry-run" and batches != [1, 8, 64, 256]:
    errors.append(f"decode batches {batches}, want [1, 8, 64, 256]")
if 1 in batches:
    for f in ["step_s", "weight_bytes", "copy_bytes_per_s", "hbm_bound_s",
              "fraction_of_hbm_bound", "goal"]:
        need(r, "decode_batch1." + f, "decode_batch1")
    need(r, "decode_batch1.goal_met", "decode_batch1", "bool")
else:
    errors.append("decode: no batch 1 (needed for decode_batch1)")
for f in ["tokens", "step_s", "tokens_per_s", "useful_flops", "flops_per_s",
          "fraction_of_gemm_peak", "goal", "linear_flop_multiplier"]:
    need(r, "prefill." + f, "prefill")
need(r, "prefill.goal_met", "prefill", "bool")
if not isinstance(get(r, "prefill.breakdown_s"), dict):
    errors.append("prefill: breakdown_s missing")
need(r, "wall_s", "top level")

if errors:
    print(f"check: {path}: {len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1)
print(f"check: {path}: ok ({len(kernels)} kernel cases, decode batches {batches})")
PY
  else
    local missing=0 key
    for key in '"schema"' '"device"' '"copy_d2d_bytes_per_s"' '"stream_read_bytes_per_s"' \
               '"gemm"' '"kernels"' '"rms_norm"' '"add_rms_norm"' '"rope"' '"silu_mul"' \
               '"kv_cache_write"' '"paged_attention"' '"attention_prefill"' '"linear"' \
               '"decode"' '"decode_batch1"' '"fraction_of_hbm_bound"' '"prefill"' \
               '"fraction_of_gemm_peak"' '"wall_s"' "\"mode\": *\"${mode/emulated/full}\""; do
      grep -qE "$key" "$file" || { echo "check: $file: no $key" >&2; missing=1; }
    done
    if grep -qE ': *null' "$file"; then echo "check: $file: a null (non-finite) value" >&2; missing=1; fi
    [[ $missing == 0 ]] && echo "check: $file: ok (keys only: python3 not available)"
    return $missing
  fi
}

summary() {  # FILE -> the headline figures
  local file="$1"
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$file" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d1, p = r["decode_batch1"], r["prefill"]
print(f"device: {r['device']['name']} ({r['device']['kind']}), model {r['shape']['name']}")
print(f"copy D2D {r['memory']['copy_d2d_bytes_per_s']/1e9:.0f} GB/s, "
      f"stream read {r['memory']['stream_read_bytes_per_s']/1e9:.0f} GB/s, "
      f"H2D pageable {r['memory']['h2d_pageable_bytes_per_s']/1e9:.1f} / staged "
      f"{r['memory']['h2d_staged_bytes_per_s']/1e9:.1f} GB/s, "
      f"GEMM peak {r['gemm']['flops_per_s']/1e12:.3g} TFLOP/s")
for d in r["decode"]:
    g = d.get("cuda_graph", {})
    gs = f", graph {g['tokens_per_s']:.0f} tok/s (x{g['speedup']:.2f})" if "step_s" in g else ""
    print(f"decode batch {d['batch']:>3}: {d['step_s']*1e3:8.3f} ms/step, "
          f"{d['tokens_per_s']:9.0f} tok/s{gs}")
print(f"decode batch 1 vs HBM bound: {100*d1['fraction_of_hbm_bound']:.1f}% "
      f"(goal 80%: {'met' if d1['goal_met'] else 'NOT met'})")
print(f"prefill {p['tokens']} tokens: {p['tokens_per_s']:.0f} tok/s, "
      f"{100*p['fraction_of_gemm_peak']:.1f}% of GEMM peak "
      f"(goal 60%: {'met' if p['goal_met'] else 'NOT met'})")
PY
  else
    tail -n 40 "${file%.json}.log" 2>/dev/null || true
  fi
}

# Runs the benchmark binary: human table to bench.log (and the terminal), stderr to bench.err,
# the last stdout line to bench.json.
run_bench() {  # OUT BIN ARGS...
  local out="$1" bin="$2"
  shift 2
  local rc=0
  BENCH_RC=0
  "$bin" "$@" --json-out "$out/bench.partial.json" >"$out/bench.stdout" 2>"$out/bench.err" || rc=$?
  BENCH_RC=$rc
  sed '$d' "$out/bench.stdout" >"$out/bench.log"
  cat "$out/bench.log"
  if [[ $rc != 0 ]]; then
    echo "gpu-bench: benchmark exited with $rc; stderr:" >&2
    tail -n 20 "$out/bench.err" >&2
    return $rc
  fi
  tail -n 1 "$out/bench.stdout" >"$out/bench.json"
  rm -f "$out/bench.stdout" "$out/bench.partial.json"
}

# ---------------------------------------------------------------------------------------------
GTEST_COPY="$ROOT/third_party/googletest-src"

prepare_googletest() {
  if [[ -f "$GTEST_COPY/CMakeLists.txt" ]]; then
    echo "gpu-bench: $GTEST_COPY already present"
    return 0
  fi
  [[ -f /usr/src/googletest/CMakeLists.txt ]] ||
    { echo "gpu-bench: no /usr/src/googletest to copy (Debian: apt-get install googletest)" >&2; return 1; }
  mkdir -p "$(dirname "$GTEST_COPY")"
  cp -a /usr/src/googletest "$GTEST_COPY"
  # Third-party source, never committed: the folder ignores itself.
  printf '# Copied from /usr/src/googletest by tools/gpu-bench.sh --prepare; not committed.\n*\n' \
    >"$GTEST_COPY/.gitignore"
  echo "gpu-bench: copied /usr/src/googletest to $GTEST_COPY (git-ignored; carry it explicitly)"
}

case "$MODE" in
  prepare)
    prepare_googletest
    exit $?
    ;;
  check)
    check_json "$CHECK_FILE" "${CHECK_MODE:-full}" "$GRAPHS"
    exit $?
    ;;
  dry-run)
    BIN="${BIN:-$ROOT/build/bin/caduceus-bench-kernels}"
    [[ -x "$BIN" ]] || die "no benchmark binary at $BIN (build caduceus-bench-kernels, or --bin PATH)"
    # Spinning OpenMP barriers collapse when CI shares its cores (docs/architecture.md, Threads).
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench-dry-run.XXXXXX")}"
    mkdir -p "$OUT_DIR"
    echo "== caduceus-bench-kernels --dry-run ($BIN) -> $OUT_DIR"
    run_bench "$OUT_DIR" "$BIN" --dry-run "${BENCH_EXTRA[@]}" || die "dry run failed"
    check_json "$OUT_DIR/bench.json" dry-run 0 || die "dry-run JSON incomplete"
    summary "$OUT_DIR/bench.json"
    exit 0
    ;;
esac

# ---------------------------------------------------------------------------------------------
# Full run on a GPU machine.
OUT_DIR="${OUT_DIR:-$ROOT/out/gpu-bench}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
START=$(date +%s)
status=0
note() { echo "$*" | tee -a "$OUT_DIR/summary.txt"; }
: >"$OUT_DIR/summary.txt"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet 2>/dev/null || COMMIT+=" (modified)"
note "gpu-bench: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $COMMIT, arch $ARCH"

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi >"$OUT_DIR/nvidia-smi.txt" 2>&1 || true
  nvidia-smi -L 2>/dev/null | tee -a "$OUT_DIR/summary.txt" || true
  nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || die "nvidia-smi lists no GPU (see $OUT_DIR/nvidia-smi.txt)"
else
  note "gpu-bench: nvidia-smi not found; the benchmark will find the device itself"
fi

# GoogleTest for kernels_cuda_test: $GTEST_SOURCE_DIR, the shipped copy, or Debian's source.
GTEST_DIR="${GTEST_SOURCE_DIR:-}"
if [[ -z "$GTEST_DIR" ]]; then
  if [[ -f "$GTEST_COPY/CMakeLists.txt" ]]; then
    GTEST_DIR="$GTEST_COPY"
  elif [[ -f /usr/src/googletest/CMakeLists.txt ]]; then
    GTEST_DIR=/usr/src/googletest
  fi
fi
[[ -n "$GTEST_DIR" ]] ||
  note "gpu-bench: WARNING: no GoogleTest source (tools/gpu-bench.sh --prepare where" \
       "/usr/src/googletest exists, then carry third_party/googletest-src): tests not built"

GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
CONFIGURE=(cmake -S "$ROOT/kernels/bench/standalone" -B "$BUILD_DIR" "${GENERATOR[@]}"
           -DCMAKE_BUILD_TYPE=Release -DCADUCEUS_CUDA=ON "-DCADUCEUS_CUDA_ARCHITECTURES=$ARCH")
[[ -n "$GTEST_DIR" ]] && CONFIGURE+=("-DGTEST_SOURCE_DIR=$GTEST_DIR")
TARGETS=(caduceus-bench-kernels)
[[ -n "$GTEST_DIR" && $SKIP_TESTS == 0 ]] && TARGETS+=(kernels_cpu_test kernels_cuda_test)

echo "== configure + build (${TARGETS[*]}) -> $BUILD_DIR"
if ! { "${CONFIGURE[@]}" && cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"; } \
    >"$OUT_DIR/build.log" 2>&1; then
  tail -n 40 "$OUT_DIR/build.log" >&2
  die "build failed (see $OUT_DIR/build.log)"
fi
note "build: ok in $(( $(date +%s) - START )) s"

if [[ ${#TARGETS[@]} -gt 1 ]]; then
  echo "== kernel tests"
  for test_bin in kernels/kernels_cpu_test kernels/cuda/kernels_cuda_test; do
    name="$(basename "$test_bin")"
    rc=0
    "$BUILD_DIR/$test_bin" >"$OUT_DIR/$name.log" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
      note "tests: $name FAILED (exit $rc, see $name.log)"
      grep -E '^\[  FAILED  \]' "$OUT_DIR/$name.log" | head -20 || true
      status=1
    elif grep -q '\[  SKIPPED \]' "$OUT_DIR/$name.log"; then
      # On a GPU machine a skipped CUDA test means the device was not usable.
      note "tests: $name skipped tests (no usable CUDA device?), see $name.log"
      status=1
    else
      note "tests: $name $(grep -E '^\[  PASSED  \]' "$OUT_DIR/$name.log" | tail -n 1)"
    fi
  done
fi

echo "== caduceus-bench-kernels --device cuda"
ARGS=(--device cuda)
[[ $GRAPHS == 0 ]] && ARGS+=(--no-cuda-graphs)
[[ $QUICK == 1 ]] && ARGS+=(--target-ms 30 --repeats 2)
ARGS+=("${BENCH_EXTRA[@]}")
if ! run_bench "$OUT_DIR" "$BUILD_DIR/bin/caduceus-bench-kernels" "${ARGS[@]}"; then
  [[ -f "$OUT_DIR/bench.partial.json" ]] && note "bench: partial results in bench.partial.json"
  if [[ $GRAPHS == 1 && $BENCH_RC -gt 128 ]]; then
    # A crash (abort) during graph capture ends the process (kernels/cuda treats CUDA errors as
    # fatal): measure once more without graphs so the rest of the figures still come back.
    # Exit 1 (out of memory) or 2 (no device, usage) would only fail again.
    note "bench: FAILED; rerunning with --no-cuda-graphs"
    mv -f "$OUT_DIR/bench.err" "$OUT_DIR/bench.first.err"
    GRAPHS=0
    run_bench "$OUT_DIR" "$BUILD_DIR/bin/caduceus-bench-kernels" "${ARGS[@]}" --no-cuda-graphs ||
      { note "bench: FAILED again"; exit 1; }
  else
    note "bench: FAILED"; exit 1
  fi
  status=1
fi
if check_json "$OUT_DIR/bench.json" full "$GRAPHS" 2>&1 | tee -a "$OUT_DIR/summary.txt"; then
  summary "$OUT_DIR/bench.json" | tee -a "$OUT_DIR/summary.txt"
else
  status=1
fi
note "gpu-bench: done in $(( $(date +%s) - START )) s, status $status; results in $OUT_DIR"
exit $status
