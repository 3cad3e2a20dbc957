#!/usr/bin/env bash
# Tests deploy/docker/caduceus-launch-group with a fake worker (a bash script): per-rank command
# lines, rank-0-only flags, node offsets, group supervision (one rank dies -> the group stops with
# its status), orderly SIGTERM (rank 0 first), SIGKILL escalation, exec for a single rank.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAUNCH="$ROOT/deploy/docker/caduceus-launch-group"
T="$(mktemp -d)"
cleanup() {  # ends fake ranks a failed case left behind (their pids are in their argv files)
  local f
  for f in "$T"/log/argv-*; do [ -f "$f" ] && { kill -KILL "$(cut -d' ' -f1 "$f")" 2>/dev/null || true; }; done
  rm -rf "$T"
}
trap cleanup EXIT
pass=0
fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1" >&2; fail=$((fail + 1)); }

# The fake worker: logs its argv and pid, obeys FAKE_* knobs keyed by its --rank.
cat > "$T/fake-worker" <<'EOF'
#!/usr/bin/env bash
rank=""
for a in "$@"; do [[ "$a" == --rank=* ]] && rank="${a#--rank=}"; done
if [[ "${FAKE_IGNORE_TERM_RANK:-x}" == "$rank" ]]; then
  trap 'echo "ignored-term $rank" >> "$FAKE_LOG/order"' TERM
else
  trap 'echo "term $rank" >> "$FAKE_LOG/order"; exit 0' TERM
fi
echo "$$ $*" > "$FAKE_LOG/argv-$rank"  # after the trap: "started" means ready for signals
start=$SECONDS
while :; do
  if [[ "${FAKE_FAIL_RANK:-x}" == "$rank" ]] && ((SECONDS - start >= 1)); then
    echo "fail $rank" >> "$FAKE_LOG/order"
    exit "${FAKE_FAIL_STATUS:-2}"
  fi
  sleep 0.1
done
EOF
chmod +x "$T/fake-worker"
export FAKE_LOG="$T/log"

reset_log() { rm -rf "$FAKE_LOG"; mkdir -p "$FAKE_LOG"; }
wait_started() {  # $1 = number of ranks to wait for
  for _ in $(seq 100); do
    (($(ls "$FAKE_LOG" | grep -c '^argv-') >= $1)) && return 0
    sleep 0.1
  done
  return 1
}

# 1. Dry run: per-rank flags, node offset, rank-0-only flags.
out="$("$LAUNCH" --local-ranks=2 --node-index=0 --device=cuda --metrics-listen=0.0.0.0:9400 --dry-run \
  -- caduceus-worker --model=/models/m --tp-size=4 -- --listen=0.0.0.0:50061 --router=r:50051)"
expected="caduceus-worker --model=/models/m --tp-size=4 --rank=0 --device=cuda:0 --metrics-listen=0.0.0.0:9400 --listen=0.0.0.0:50061 --router=r:50051
caduceus-worker --model=/models/m --tp-size=4 --rank=1 --device=cuda:1 --metrics-listen=0.0.0.0:9401"
[[ "$out" == "$expected" ]] && ok "dry run, node 0" || bad "dry run, node 0: got
$out"
out="$("$LAUNCH" --local-ranks=2 --node-index=1 --device=cuda --metrics-listen=0.0.0.0:9400 --dry-run \
  -- caduceus-worker --model=/models/m --tp-size=4 -- --listen=0.0.0.0:50061)"
expected="caduceus-worker --model=/models/m --tp-size=4 --rank=2 --device=cuda:0 --metrics-listen=0.0.0.0:9400
caduceus-worker --model=/models/m --tp-size=4 --rank=3 --device=cuda:1 --metrics-listen=0.0.0.0:9401"
[[ "$out" == "$expected" ]] && ok "dry run, node 1 (no rank-0 flags)" || bad "dry run, node 1: got
$out"
out="$("$LAUNCH" --local-ranks=1 --device=cpu --dry-run -- caduceus-worker --model='/m x')"
[[ "$out" == 'caduceus-worker --model=/m\ x --rank=0 --device=cpu' ]] && ok "dry run, cpu, quoting" \
  || bad "dry run, cpu: got $out"

# 2. Bad options are refused (status 64).
set +e
"$LAUNCH" --local-ranks=0 -- true 2>/dev/null; rc1=$?
"$LAUNCH" --node-index='$(LWS_WORKER_INDEX)' -- true 2>/dev/null; rc2=$?
"$LAUNCH" --device=tpu -- true 2>/dev/null; rc3=$?
"$LAUNCH" --local-ranks=2 2>/dev/null; rc4=$?
set -e
[[ "$rc1 $rc2 $rc3 $rc4" == "64 64 64 64" ]] && ok "bad options refused" || bad "bad options: $rc1 $rc2 $rc3 $rc4"

# 3. One rank dies: the others get SIGTERM, the launcher exits with the dead rank's status.
reset_log
set +e
FAKE_FAIL_RANK=1 FAKE_FAIL_STATUS=3 timeout 20 "$LAUNCH" --local-ranks=3 --device=cpu \
  -- "$T/fake-worker" --tp-size=3 2>"$T/stderr"
rc=$?
set -e
order="$(cat "$FAKE_LOG/order")"
if [[ $rc == 3 ]] && grep -q "^fail 1$" <<<"$order" && grep -q "^term 0$" <<<"$order" \
   && grep -q "^term 2$" <<<"$order"; then ok "rank failure stops the group (status 3)"
else bad "rank failure: rc=$rc order=[$order] stderr=$(cat "$T/stderr")"; fi

# 4. SIGTERM: rank 0 is stopped first, then the rest; status 0.
reset_log
"$LAUNCH" --local-ranks=3 --device=cpu -- "$T/fake-worker" --tp-size=3 2>"$T/stderr" &
lp=$!
if wait_started 3; then
  kill -TERM "$lp"
  set +e; wait "$lp"; rc=$?; set -e
  first="$(head -1 "$FAKE_LOG/order")"
  n="$(grep -c '^term' "$FAKE_LOG/order")"
  [[ $rc == 0 && "$first" == "term 0" && $n == 3 ]] && ok "SIGTERM stops rank 0 first, exit 0" \
    || bad "SIGTERM: rc=$rc order=[$(cat "$FAKE_LOG/order")]"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "SIGTERM: ranks did not start"
fi

# 5. A rank that ignores SIGTERM is killed after --kill-after.
reset_log
set +e
start=$SECONDS
FAKE_FAIL_RANK=1 FAKE_IGNORE_TERM_RANK=2 timeout 20 "$LAUNCH" --local-ranks=3 --device=cpu --kill-after=1 \
  -- "$T/fake-worker" 2>"$T/stderr"
rc=$?
took=$((SECONDS - start))
set -e
[[ $rc == 2 ]] && grep -q "^ignored-term 2$" "$FAKE_LOG/order" && ((took < 10)) \
  && ok "SIGKILL after --kill-after (status 2, ${took}s)" \
  || bad "kill-after: rc=$rc took=${took}s order=[$(cat "$FAKE_LOG/order")]"

# 6. One local rank: the worker replaces the launcher (same pid).
reset_log
"$LAUNCH" --local-ranks=1 --device=cpu -- "$T/fake-worker" 2>/dev/null &
lp=$!
if wait_started 1; then
  wpid="$(cut -d' ' -f1 "$FAKE_LOG/argv-0")"
  kill -TERM "$lp"
  set +e; wait "$lp"; rc=$?; set -e
  [[ "$wpid" == "$lp" && $rc == 0 ]] && ok "single rank execs the worker" \
    || bad "single rank: launcher pid $lp, worker pid $wpid, rc=$rc"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "single rank did not start"
fi

echo "$pass passed, $fail failed"
((fail == 0))
