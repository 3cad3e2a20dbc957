#!/usr/bin/env bash
# Tests deploy/docker/caduceus-launch-group with a fake worker (a bash script): per-rank command
# lines, rank-0-only flags, node offsets, group supervision (one rank dies -> the group stops with
# its status), orderly SIGTERM (rank 0 first), SIGKILL escalation, exec for a single rank, the
# --leader-grace drain (rank 0 drains before the others are signalled; a drain cut by the grace
# exits non-zero; a pod without rank 0 holds its ranks' SIGTERM back until they exit by themselves
# or the grace runs out).
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
elif [[ "${FAKE_DRAIN_RANK:-x}" == "$rank" ]]; then
  # Like the leader: SIGTERM starts a drain of FAKE_DRAIN_SECONDS (further signals ignored).
  trap 'trap "" TERM; echo "drain $rank" >> "$FAKE_LOG/order"; sleep "$FAKE_DRAIN_SECONDS";
        echo "drained $rank" >> "$FAKE_LOG/order"; exit 0' TERM
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
  if [[ -n "${FAKE_EXIT_FILE:-}" && -e "${FAKE_EXIT_FILE:-}" ]]; then  # the leader shut us down
    echo "self-exit $rank" >> "$FAKE_LOG/order"
    exit 0
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

# 7. SIGTERM with a draining leader: the other ranks are signalled only after rank 0 finished its
#    drain (within --leader-grace); status 0.
reset_log
start=$SECONDS
FAKE_DRAIN_RANK=0 FAKE_DRAIN_SECONDS=2 "$LAUNCH" --local-ranks=3 --device=cpu --leader-grace=10 \
  -- "$T/fake-worker" 2>"$T/stderr" &
lp=$!
if wait_started 3; then
  kill -TERM "$lp"
  set +e; wait "$lp"; rc=$?; set -e
  took=$((SECONDS - start))
  order="$(cat "$FAKE_LOG/order")"
  [[ $rc == 0 && "$(sed -n 1,2p <<<"$order" | tr '\n' ' ')" == "drain 0 drained 0 " && $(grep -c '^term' <<<"$order") == 2 ]] \
    && ((took >= 2)) && ok "leader drains within --leader-grace before the others stop (exit 0, ${took}s)" \
    || bad "leader drain: rc=$rc took=${took}s order=[$order] stderr=$(cat "$T/stderr")"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "leader drain: ranks did not start"
fi

# 8. The drain outlasts --leader-grace: the followers are stopped under the leader (the group
#    breaks) and the launcher exits non-zero although every rank exited 0.
reset_log
FAKE_DRAIN_RANK=0 FAKE_DRAIN_SECONDS=4 "$LAUNCH" --local-ranks=3 --device=cpu --leader-grace=1 --kill-after=10 \
  -- "$T/fake-worker" 2>"$T/stderr" &
lp=$!
if wait_started 3; then
  kill -TERM "$lp"
  set +e; wait "$lp"; rc=$?; set -e
  order="$(cat "$FAKE_LOG/order")"
  terms_before_drained="$(sed '/^drained 0$/q' <<<"$order" | grep -c '^term')"
  [[ $rc == 1 && $terms_before_drained == 2 ]] && grep -q "drain cut short" "$T/stderr" \
    && ok "drain cut by --leader-grace exits 1" \
    || bad "drain cut: rc=$rc order=[$order] stderr=$(cat "$T/stderr")"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "drain cut: ranks did not start"
fi

# 9. A rank that fails during the drain makes the launcher exit non-zero (with its status; 1 in
#    the rare case bash lost it, see the launcher).
reset_log
FAKE_DRAIN_RANK=0 FAKE_DRAIN_SECONDS=3 FAKE_FAIL_RANK=1 FAKE_FAIL_STATUS=3 \
  "$LAUNCH" --local-ranks=3 --device=cpu --leader-grace=10 -- "$T/fake-worker" 2>"$T/stderr" &
lp=$!
if wait_started 3; then
  kill -TERM "$lp"
  set +e; wait "$lp"; rc=$?; set -e
  [[ $rc == 3 || $rc == 1 ]] && grep -q "^fail 1$" "$FAKE_LOG/order" && ok "rank failure during the drain: status $rc" \
    || bad "failure during drain: rc=$rc order=[$(cat "$FAKE_LOG/order")] stderr=$(cat "$T/stderr")"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "failure during drain: ranks did not start"
fi

# 10. A pod without rank 0 (multi-node follower) does not signal its ranks on SIGTERM: they keep
#     running until the leader shuts the group down (they exit by themselves); status 0.
reset_log
FAKE_EXIT_FILE="$T/leader-done" "$LAUNCH" --local-ranks=2 --node-index=1 --device=cpu --leader-grace=20 \
  -- "$T/fake-worker" 2>"$T/stderr" &
lp=$!
if wait_started 2; then
  kill -TERM "$lp"
  sleep 1.5
  early="$(cat "$FAKE_LOG/order" 2>/dev/null || true)"
  alive_after=0
  kill -0 "$lp" 2>/dev/null && alive_after=1
  touch "$T/leader-done"
  set +e; wait "$lp"; rc=$?; set -e
  first="$(head -1 "$FAKE_LOG/order")"
  [[ $rc == 0 && -z "$early" && $alive_after == 1 && "$first" == self-exit* ]] \
    && ok "follower pod waits for the leader's shutdown (exit 0)" \
    || bad "follower pod: rc=$rc early=[$early] alive=$alive_after order=[$(cat "$FAKE_LOG/order")] stderr=$(cat "$T/stderr")"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "follower pod: ranks did not start"
fi
rm -f "$T/leader-done"

# 11. ... and signals them when --leader-grace runs out (the leader never shut down): status 1.
reset_log
"$LAUNCH" --local-ranks=2 --node-index=1 --device=cpu --leader-grace=1 -- "$T/fake-worker" 2>"$T/stderr" &
lp=$!
if wait_started 2; then
  start=$SECONDS
  kill -TERM "$lp"
  set +e; wait "$lp"; rc=$?; set -e
  took=$((SECONDS - start))
  [[ $rc == 1 && $(grep -c '^term' "$FAKE_LOG/order") == 2 ]] && ((took >= 1 && took < 10)) \
    && ok "follower pod stops its ranks after --leader-grace (exit 1, ${took}s)" \
    || bad "follower grace: rc=$rc took=${took}s order=[$(cat "$FAKE_LOG/order")] stderr=$(cat "$T/stderr")"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "follower grace: ranks did not start"
fi

# 12. A single follower rank is supervised, not exec'd (its SIGTERM must be held back too).
reset_log
FAKE_EXIT_FILE="$T/leader-done" "$LAUNCH" --local-ranks=1 --node-index=1 --device=cpu --leader-grace=20 \
  -- "$T/fake-worker" 2>"$T/stderr" &
lp=$!
if wait_started 1; then
  wpid="$(cut -d' ' -f1 "$FAKE_LOG/argv-1")"
  kill -TERM "$lp"
  sleep 1
  early="$(cat "$FAKE_LOG/order" 2>/dev/null || true)"
  touch "$T/leader-done"
  set +e; wait "$lp"; rc=$?; set -e
  [[ "$wpid" != "$lp" && $rc == 0 && -z "$early" ]] && grep -q "^self-exit 1$" "$FAKE_LOG/order" \
    && ok "single follower rank: supervised, waits for the leader" \
    || bad "single follower: launcher $lp worker $wpid rc=$rc early=[$early] order=[$(cat "$FAKE_LOG/order")]"
else
  kill -KILL "$lp" 2>/dev/null || true
  bad "single follower did not start"
fi
rm -f "$T/leader-done"

echo "$pass passed, $fail failed"
((fail == 0))
