#!/usr/bin/env bash
# Tests deploy/docker/caduceus-healthcheck (the images' HEALTHCHECK) against a loopback HTTP
# server: 200 on /metrics passes; no listener and a 404 fail.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HC="$ROOT/deploy/docker/caduceus-healthcheck"
PY="${CADUCEUS_PYTHON:-/usr/bin/python3}"
T="$(mktemp -d)"
server=""
cleanup() { [ -n "$server" ] && { kill "$server" 2>/dev/null || true; }; rm -rf "$T"; }
trap cleanup EXIT
port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo "caduceus_requests_waiting 0" > "$T/metrics"
"$PY" -m http.server --bind 127.0.0.1 "$port" --directory "$T" >/dev/null 2>&1 &
server=$!
for _ in $(seq 50); do "$HC" "$port" 2>/dev/null && break; sleep 0.1; done
pass=0; fail=0
expect() {  # expect STATUS DESCRIPTION COMMAND...
  local want="$1" what="$2"; shift 2
  set +e; "$@" 2>/dev/null; local rc=$?; set -e
  if [[ ( "$want" == 0 && $rc == 0 ) || ( "$want" != 0 && $rc != 0 ) ]]; then echo "ok: $what"; pass=$((pass+1))
  else echo "FAIL: $what (status $rc)"; fail=$((fail+1)); fi
}
expect 0 "200 on /metrics" "$HC" "$port"
rm "$T/metrics"
expect 1 "404 on /metrics" "$HC" "$port"
kill "$server"; wait "$server" 2>/dev/null || true; server=""
expect 1 "no listener" "$HC" "$port"
echo "$pass passed, $fail failed"
((fail == 0))
