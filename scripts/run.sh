#!/usr/bin/env bash
# Runs one Kairos broker with embedded defaults (127.0.0.1:9092, data in ./data, no Redis).
# Installs the build dependencies of the librdkafka-based CLI on Debian when missing (cmake and
# the curl/zlib/ssl headers), then `cargo run --release --bin kairos -- serve` with any extra
# arguments, e.g. ./scripts/run.sh --override num.partitions=3
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
for pkg in libcurl4-openssl-dev zlib1g-dev libssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec cargo run --release --bin kairos -- serve "$@"
