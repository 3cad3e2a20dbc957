#!/usr/bin/env bash
# The model end to end on a GPU machine that has a CUDA 13 toolkit and a driver but none of our
# Debian packages (so the full project cannot be built there): the tiny preset on cuda:0 must give
# the same greedy tokens as on the CPU and as the oracle (what gpu_generate_matches_cpu checks),
# plus the same through the device-memory path of the CPU build (--device emulated-device).
#
#   tools/gpu-e2e.sh --prepare [--build DIR]   here, after a CUDA build (default DIR: build):
#       copies caduceus-generate, caduceus-make-test-model, the CUDA backend module, every shared
#       library they need except CUDA's own (glibc and its loader included, so the binaries run
#       on an older distribution), the tokenizer and the oracle's first prompts into
#       third_party/gpu-e2e/ (git-ignored; ~50 MB: name it in the device tool's `carry`).
#   tools/gpu-e2e.sh --run --out DIR [--device cuda:0]   on the GPU machine: generates the tiny
#       model (a second), runs each prompt on the GPU and on the CPU, compares; writes
#       DIR/gpu-e2e.log and DIR/summary.txt.
#   --bundle DIR puts the bundle elsewhere; CI runs --prepare and --run --device cpu into a
#   temporary one (ctest gpu_e2e_dry_run) so that the script cannot rot.
# Exit status: 0 all equal; 1 a mismatch or a failed run; 2 cannot run here (no bundle, no CUDA
# libraries, no device).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/third_party/gpu-e2e"
mode="" build="$root/build" out="" device="cuda:0" prompts=4 tokens=16
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --run) mode=run ;;
    --build) build="$2"; shift ;;
    --bundle) bundle="$2"; shift ;;
    --out) out="$2"; shift ;;
    --device) device="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

prepare() {
  local bin="$build/bin"
  for f in caduceus-generate caduceus-make-test-model libcaduceus_backend_cuda.so; do
    [[ -f "$bin/$f" ]] || { echo "missing $bin/$f (a CUDA build is needed)" >&2; exit 2; }
  done
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/tokenizer"
  echo '*' > "$bundle/.gitignore"
  cp "$bin/caduceus-generate" "$bin/caduceus-make-test-model" "$bundle/bin/"
  # The module sits next to the loader too: run through the bundled loader, /proc/self/exe (where
  # the backend factory looks first) is the loader.
  cp "$bin/libcaduceus_backend_cuda.so" "$bundle/lib/"
  local libs
  libs=$(for f in "$bin/caduceus-generate" "$bin/caduceus-make-test-model"; do ldd "$f"; done |
         awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u)
  for lib in $libs; do
    case "$(basename "$lib")" in
      libcuda*|libcublas*|libnccl*) ;;  # the GPU machine's own
      *) cp -L "$lib" "$bundle/lib/" ;;
    esac
  done
  cp -L "$(ldd "$bin/caduceus-generate" | awk '/ld-linux/ {print ($3 ? $3 : $1)}' | head -1)" \
    "$bundle/lib/ld-linux-x86-64.so.2"
  local tok
  tok=$(sed -n 's/^CADUCEUS_TOKENIZER_DIR:PATH=//p' "$build/CMakeCache.txt")
  cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" "$bundle/tokenizer/"
  # One line per prompt: prompt ids, then the oracle's first tokens (comma-separated).
  /usr/bin/python3 - "$root/tests/fixtures/oracle_tiny_seed1.json" "$prompts" "$tokens" \
      > "$bundle/prompts.txt" <<'PY'
import json, sys
oracle = json.load(open(sys.argv[1]))
for p in oracle["prompts"][: int(sys.argv[2])]:
    print(",".join(map(str, p["prompt_ids"])), ",".join(map(str, p["gen_ids"][: int(sys.argv[3])])))
PY
  du -sh "$bundle"
  echo "prepared $bundle; on the GPU machine: tools/gpu-e2e.sh --run --out \"\$OUT\""
}

run() {
  [[ -n "$out" ]] || out="$root/out/gpu-e2e"
  mkdir -p "$out"
  local log="$out/gpu-e2e.log" summary="$out/summary.txt"
  : > "$log"
  [[ -x "$bundle/bin/caduceus-generate" ]] || {
    echo "no bundle in $bundle: run tools/gpu-e2e.sh --prepare where the project builds" | tee "$summary"
    exit 2
  }
  local cuda_lib=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -e "$d/libcublas.so.13" ]] && { cuda_lib="$d"; break; }
  done
  [[ -n "$cuda_lib" ]] || {
    echo "no libcublas.so.13 under /usr/local/cuda: the bundle was built against CUDA 13" | tee "$summary"
    ls /usr/local/cuda/lib64 2>/dev/null | grep -E 'cublas|cudart' >> "$summary" || true
    exit 2
  }
  # Driver libraries (libcuda) stay where the system keeps them.
  local path="$bundle/lib:$cuda_lib:/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:/usr/lib64"
  exe() { "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$path" "$@"; }
  local model="${TMPDIR:-/tmp}/caduceus-gpu-e2e-tiny"
  rm -rf "$model"
  exe "$bundle/bin/caduceus-make-test-model" --preset tiny --seed 1 --out "$model" \
      --tokenizer-dir "$bundle/tokenizer" >> "$log" 2>&1 || {
    echo "could not generate the tiny model (see gpu-e2e.log)" | tee "$summary"; exit 1; }
  local failures=0 i=0 result
  {
    echo "device $device, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
  } > "$summary"
  while read -r ids want; do
    local line=() status=ok
    for dev in "$device" emulated-device cpu; do
      local start ms
      start=$(date +%s%N)
      if ! result=$(exe "$bundle/bin/caduceus-generate" --model "$model" --device "$dev" \
                    --prompt-ids "$ids" --max-new-tokens "$tokens" --temperature 0 --ignore-eos \
                    --json 2>>"$log" | tail -1); then
        echo "prompt $i on $dev: FAILED (see gpu-e2e.log)" | tee -a "$summary"
        tail -3 "$log" >> "$summary"
        [[ "$dev" == "$device" && $i -eq 0 ]] && exit 2  # the device itself is unusable
        failures=$((failures + 1)); status=failed; line+=("");
        continue
      fi
      ms=$(( ($(date +%s%N) - start) / 1000000 ))
      echo "prompt $i $dev (${ms} ms): $result" >> "$log"
      line+=("$(echo "$result" | sed -n 's/.*"generated_ids":\[\([0-9,]*\)\].*/\1/p')")
    done
    if [[ "${line[0]}" != "$want" || "${line[1]}" != "$want" || "${line[2]}" != "$want" ]]; then
      status=MISMATCH; failures=$((failures + 1))
    fi
    printf 'prompt %d: %s %s | emulated %s | cpu %s | oracle %s -> %s\n' "$i" "$device" \
      "${line[0]}" "${line[1]}" "${line[2]}" "$want" "$status" | tee -a "$summary"
    i=$((i + 1))
  done < "$bundle/prompts.txt"
  [[ $failures -eq 0 ]] && echo "all $i prompts equal on $device, emulated-device, cpu and the oracle" | tee -a "$summary"
  # FP8 weights (--quantization fp8; docs/architecture.md, "FP8 weights"): the device's LinearFp8
  # must give the CPU's greedy tokens on the first two prompts. No oracle: FP8 is another model.
  local j=0
  while read -r ids want && [[ $j -lt 2 ]]; do
    local fp8=()
    for dev in "$device" cpu; do
      fp8+=("$(exe "$bundle/bin/caduceus-generate" --model "$model" --device "$dev" \
                 --quantization fp8 --prompt-ids "$ids" --max-new-tokens "$tokens" \
                 --temperature 0 --ignore-eos --json 2>>"$log" | tail -1 |
               sed -n 's/.*"generated_ids":\[\([0-9,]*\)\].*/\1/p')")
    done
    local verdict=ok
    if [[ -z "${fp8[0]}" || "${fp8[0]}" != "${fp8[1]}" ]]; then verdict=MISMATCH; failures=$((failures + 1)); fi
    printf 'fp8 prompt %d: %s %s | cpu %s -> %s\n' "$j" "$device" "${fp8[0]}" "${fp8[1]}" "$verdict" | tee -a "$summary"
    j=$((j + 1))
  done < "$bundle/prompts.txt"
  [[ $failures -eq 0 ]]
}

case "$mode" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 --prepare [--build DIR] | --run --out DIR [--device cuda:K]" >&2; exit 2 ;;
esac
