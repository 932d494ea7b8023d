#!/usr/bin/env bash
# The whole test suite. Installs what it needs on Debian when missing (cmake and libcurl for the
# librdkafka build used by the reference client, prometheus/promtool for the metrics tests,
# python3-venv for kafka-python, a JDK and Maven for the Java suite; Go and Node come with the
# machine), then runs every test of the workspace (the Go and Node suites through
# tests/tests/go_node_clients.rs) and the Java suite (tests/java).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need+=(libcurl4-openssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need+=(zlib1g-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# kafka-python, a second client implementation, in a virtualenv under the target dir.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target_dir/pyenv"
if ! "$venv/bin/python" -c "import kafka" >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kafka-python==3.0.12"
fi
export KAIROS_PYTHON="$venv/bin/python"

# kafkajs for the Node suite (tests/node; npm's cache is outside the clone). Go's modules for the
# franz-go suite (tests/go) come from the module proxy on first use, cached in Go's module cache.
if [ ! -d tests/node/node_modules/kafkajs ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi

# kube-apiserver and kube-controller-manager for the operator's tests, built once from Debian's
# Kubernetes source and cached outside the clone (tests/k8s/build.sh; about 5 minutes cold).
KAIROS_K8S_BIN="$(tests/k8s/build.sh)"
export KAIROS_K8S_BIN
# The Helm chart renderer (Go text/template + Sprig from Debian's packages).
KAIROS_HELM_RENDER="$(tests/helm/build.sh)"
export KAIROS_HELM_RENDER

# No incremental artefacts: the suite builds once per run, and they would double the disk it needs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Build the broker binary first: end-to-end tests start it as a separate process.
cargo build --workspace --all-targets
export KAIROS_BIN="$target_dir/debug/kairos"
cargo test --workspace -- --test-threads "${KAIROS_TEST_THREADS:-2}"

# The Java client, AdminClient and Kafka Streams 4.4 against kairos (tests/java, JUnit; jars from
# Maven Central, cached in ~/.m2 outside the clone).
KAIROS_BIN="$KAIROS_BIN" mvn -B -q --no-transfer-progress -f tests/java/pom.xml test
