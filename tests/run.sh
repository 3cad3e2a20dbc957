#!/usr/bin/env bash
# Installs dependencies, builds everything and runs every test (CTest), then the parser,
# scheduler and CUDA-kernel (on the CUDA emulation) tests again under AddressSanitizer. Exit status is non-zero if anything fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Spinning OpenMP barriers collapse when tests share the 2 cores; sleep instead.
export OMP_WAIT_POLICY=PASSIVE
# Cache compilations across clones in different folders (CI clones afresh each run).
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1
JOBS="${JOBS:-$(nproc)}"

bash deploy/local/install-deps.sh

echo "== build (release) =="
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$JOBS"

echo "== tests =="
ctest --test-dir build --output-on-failure -j"$JOBS"

echo "== parser, scheduler and CUDA-kernel tests under AddressSanitizer =="
# kernels_cuda_emulated_test: the CUDA kernels on the CPU emulation (kernels/cuda/emulation), where
# ASan reports a kernel's out-of-bounds access at its source line, as compute-sanitizer would.
ASAN_TARGETS=(safetensors_test model_config_test weight_store_test caduceus_tokenizer_test caduceus_jinja_test caduceus_chat_template_test
             block_manager_test scheduler_test scheduler_simulation_test
             cuda_emulation_test kernels_cuda_emulated_test)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCADUCEUS_SANITIZE=address -DCADUCEUS_CUDA=OFF >/dev/null
present=()
for t in "${ASAN_TARGETS[@]}"; do
  if cmake --build build-asan --target help | grep -q "^$t:"; then present+=("$t"); fi
done
# The generator builds the tiny model these tests need (CTest fixture), itself under ASan too.
cmake --build build-asan -j"$JOBS" --target "${present[@]}" caduceus-make-test-model
regex="^($(IFS='|'; echo "${present[*]}"))$"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -R "$regex"
