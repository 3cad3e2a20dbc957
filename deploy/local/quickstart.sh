#!/usr/bin/env bash
# Installs, builds, generates the demo model (tiny preset, random weights, real Llama-3 tokenizer)
# and starts a local cluster: one replica made of 2 CPU worker ranks (tensor parallel over Gloo)
# behind caduceus-router. Then it sends a clinical chat request through caduceus-cli, prints the
# streamed answer and the metrics URLs, and stops everything it started on exit.
# Random weights mean the answer is gibberish: the point is that the whole path runs. Point
# MODEL_DIR at a real Med42-v2 directory and the same commands serve it.
#   KEEP_RUNNING=1 deploy/local/quickstart.sh   keeps the cluster up until Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash deploy/local/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target caduceus-make-test-model caduceus-worker \
  caduceus-router caduceus-cli

MODEL_DIR="${MODEL_DIR:-$ROOT/build/demo-model}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
  ./build/bin/caduceus-make-test-model --preset tiny --seed 1 --out "$MODEL_DIR"
fi
ROUTER_PORT="${ROUTER_PORT:-50051}"
ROUTER_METRICS_PORT="${ROUTER_METRICS_PORT:-9400}"
WORKER_PORT="${WORKER_PORT:-50061}"
WORKER_METRICS_PORT="${WORKER_METRICS_PORT:-9401}"
STORE_PORT="${STORE_PORT:-29500}"
LOGS="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$CHAT"
}
trap cleanup EXIT
CHAT="$(mktemp)"

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY=PASSIVE
common=(--model "$MODEL_DIR" --tp-size 2 --rendezvous "127.0.0.1:$STORE_PORT" --device cpu
        --kv-cache-bytes 268435456)
./build/bin/caduceus-worker "${common[@]}" --rank 1 >"$LOGS/worker-rank1.log" 2>&1 & PIDS+=($!)
./build/bin/caduceus-worker "${common[@]}" --rank 0 --listen "127.0.0.1:$WORKER_PORT" \
  --metrics-listen "127.0.0.1:$WORKER_METRICS_PORT" >"$LOGS/worker-rank0.log" 2>&1 & PIDS+=($!)
./build/bin/caduceus-router --model "$MODEL_DIR" --listen "127.0.0.1:$ROUTER_PORT" \
  --metrics-listen "127.0.0.1:$ROUTER_METRICS_PORT" --replica "127.0.0.1:$WORKER_PORT" \
  >"$LOGS/router.log" 2>&1 & PIDS+=($!)

echo "== waiting for the cluster (logs in $LOGS)"
for _ in $(seq 1 120); do
  if ./build/bin/caduceus-cli --router "127.0.0.1:$ROUTER_PORT" info >/dev/null 2>&1; then break; fi
  sleep 0.5
done
./build/bin/caduceus-cli --router "127.0.0.1:$ROUTER_PORT" info

cat > "$CHAT" <<'JSON'
[
  {"role": "system", "content": "You are a careful clinical assistant. Flag uncertainty."},
  {"role": "user", "content": "A 67-year-old with eGFR 28 needs anticoagulation for new atrial fibrillation. Which DOAC dose adjustments apply?"}
]
JSON
echo "== model: $MODEL_DIR"
echo "== streamed answer:"
./build/bin/caduceus-cli --router "127.0.0.1:$ROUTER_PORT" chat --messages "$CHAT" --stream \
  --max-new-tokens 48 --temperature 0.7 --top-p 0.9 --seed 7
echo "== metrics: http://127.0.0.1:$ROUTER_METRICS_PORT/metrics (router)," \
  "http://127.0.0.1:$WORKER_METRICS_PORT/metrics (worker rank 0)"
if [ "${KEEP_RUNNING:-0}" = "1" ]; then
  echo "== cluster running; Ctrl-C stops it"
  wait
fi
