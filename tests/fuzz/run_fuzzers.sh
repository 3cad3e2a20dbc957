#!/usr/bin/env bash
# Runs every libFuzzer target of a CADUCEUS_FUZZ build for a while, starting from its checked-in
# corpus (copied: what the fuzzer finds stays in a temporary folder). Exit status 1 on any crash,
# leak, timeout or out-of-memory; the reproducer's path and the fuzzer's report are printed.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_PER_TARGET (default 60)] [TARGET ...]
#
# A reproducer becomes a regression test by copying it into tests/fuzz/corpus/<target>/ once
# the bug is fixed: the regular build replays that folder in CTest.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="${1:?usage: run_fuzzers.sh BUILD_DIR [SECONDS] [TARGET ...]}"
SECONDS_PER_TARGET="${2:-60}"
shift $(( $# >= 2 ? 2 : $# ))
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(safetensors_fuzz model_config_fuzz tokenizer_fuzz chat_template_fuzz request_fuzz)
fi
WORK="$(mktemp -d /tmp/caduceus-fuzz.XXXXXX)"
failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/fuzz/$t"
  [ -x "$bin" ] || { echo "run_fuzzers: $bin is not built" >&2; exit 1; }
  mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts"
  cp "$HERE/corpus/$t/"* "$WORK/$t/corpus/"
  echo "== $t: ${SECONDS_PER_TARGET} s =="
  # -timeout: one input may take 10 s at most (a hang is a finding); -rss_limit_mb: 2 GiB.
  if "$bin" "$WORK/$t/corpus" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
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
