#!/usr/bin/env bash
# Installs, builds, generates the demo model (tiny preset, random weights, real Llama-3 tokenizer)
# and streams the answer to a clinical chat prompt through it. Random weights mean the answer is
# gibberish: the point is that the whole path runs. Point --model at a real Med42-v2 directory
# (MODEL_DIR=...) and the same commands serve it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash deploy/local/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target caduceus-make-test-model caduceus-generate

MODEL_DIR="${MODEL_DIR:-$ROOT/build/demo-model}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
  ./build/bin/caduceus-make-test-model --preset tiny --seed 1 --out "$MODEL_DIR"
fi
CHAT="$(mktemp)"
trap 'rm -f "$CHAT"' EXIT
cat > "$CHAT" <<'JSON'
[
  {"role": "system", "content": "You are a careful clinical assistant. Flag uncertainty."},
  {"role": "user", "content": "A 67-year-old with eGFR 28 needs anticoagulation for new atrial fibrillation. Which DOAC dose adjustments apply?"}
]
JSON
echo "== model: $MODEL_DIR"
echo "== streamed answer:"
./build/bin/caduceus-generate --model "$MODEL_DIR" --chat "$CHAT" --max-new-tokens 48 \
  --temperature 0.7 --top-p 0.9 --seed 7
