#!/usr/bin/env bash
# Runs every libFuzzer target of a CADUCEUS_FUZZ build for a while, starting from its checked-in
# corpus (copied: what the fuzzer finds stays in a temporary folder). Exit status 1 on any crash,
# leak, timeout or out-of-memory; the reproducer's path and the fuzzer's report are printed.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_PER_TARGET (default 60) | ci] [TARGET ...]
#
# `ci`: a fixed number of inputs per target (about 30-45 s each on 2 cores) from a fixed seed,
# so that a CI run is reproducible: it fails on a given commit every time or never, instead of
# when a time-limited run happens to get lucky. Longer exploration uses SECONDS.
#
# A reproducer becomes a regression test by copying it into tests/fuzz/corpus/<target>/ once
# the bug is fixed: the regular build replays that folder in CTest.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="${1:?usage: run_fuzzers.sh BUILD_DIR [SECONDS] [TARGET ...]}"
SECONDS_PER_TARGET="${2:-60}"
# Inputs per target in `ci` mode (tuned to the executions per second measured in CI).
declare -A CI_RUNS=([safetensors_fuzz]=400000 [model_config_fuzz]=400000 [tokenizer_fuzz]=250000
                    [chat_template_fuzz]=60000 [request_fuzz]=1000000 [openai_request_fuzz]=300000)
shift $(( $# >= 2 ? 2 : $# ))
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(safetensors_fuzz model_config_fuzz tokenizer_fuzz chat_template_fuzz request_fuzz openai_request_fuzz)
fi
WORK="$(mktemp -d /tmp/caduceus-fuzz.XXXXXX)"
failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/fuzz/$t"
  [ -x "$bin" ] || { echo "run_fuzzers: $bin is not built" >&2; exit 1; }
  mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts"
  cp "$HERE/corpus/$t/"* "$WORK/$t/corpus/"
  if [ "$SECONDS_PER_TARGET" = ci ]; then
    budget=(-runs="${CI_RUNS[$t]:-100000}" -seed=1 -max_total_time=600)
    echo "== $t: ${CI_RUNS[$t]:-100000} inputs, seed 1 =="
  else
    budget=(-max_total_time="$SECONDS_PER_TARGET")
    echo "== $t: ${SECONDS_PER_TARGET} s =="
  fi
  # -timeout: one input may take 10 s at most (a hang is a finding); -rss_limit_mb: 2 GiB.
  if "$bin" "$WORK/$t/corpus" "${budget[@]}" -timeout=10 \
       -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$WORK/$t/artifacts/" >"$WORK/$t/log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$WORK/$t/log" | tr '\n' ' '
    echo
  else
    failed+=("$t")
    tail -n 60 "$WORK/$t/log"
    echo "run_fuzzers: $t FAILED; reproducer(s):" "$WORK/$t/artifacts/"*
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_fuzzers: ${#failed[@]} target(s) failed: ${failed[*]} (logs and inputs under $WORK)"
  exit 1
fi
rm -rf "$WORK"
echo "run_fuzzers: ${#TARGETS[@]} targets, no failure"
