#!/usr/bin/env bash
# Three `kairos serve` processes on 127.0.0.1 (each node a broker and a controller), a topic with
# RF=3 and min.insync.replicas=2, then:
#   1. produce-to-consume latency at 10,000 records/s, 1 KiB, acks=all (kairos perf e2e);
#   2. produce throughput: 1 KiB records, acks=all, as fast as possible (kairos perf produce).
# Usage: scripts/bench-cluster.sh [records, default 1000000]. Release build; data in a temp dir
# (kept, with each node's log, when KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
cargo build --release --bin kairos >/dev/null
bin="$PWD/target/release/kairos"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -a kafka ctrl
for i in 1 2 3; do kafka[$i]=$(port); ctrl[$i]=$(port); done
voters="1@127.0.0.1:${ctrl[1]},2@127.0.0.1:${ctrl[2]},3@127.0.0.1:${ctrl[3]}"
for i in 1 2 3; do
  KAIROS_LOG=warn "$bin" serve \
    --override node.id=$i \
    --override process.roles=broker,controller \
    --override "controller.quorum.voters=$voters" \
    --override "listeners=PLAINTEXT://127.0.0.1:${kafka[$i]},CONTROLLER://127.0.0.1:${ctrl[$i]}" \
    --override "log.dirs=$dir/$i" \
    --override "metrics.listener=127.0.0.1:$(port)" \
    --override "admin.listener=127.0.0.1:$(port)" \
    >"$dir/broker-$i.log" 2>&1 &
  pids+=($!)
done
bootstrap="127.0.0.1:${kafka[1]},127.0.0.1:${kafka[2]},127.0.0.1:${kafka[3]}"
created=""
for _ in $(seq 1 100); do
  "$bin" topic create bench -b "$bootstrap" -p 3 -r 3 -c min.insync.replicas=2 >/dev/null 2>&1 && { created=1; break; }
  sleep 0.2
done
[ -n "$created" ] || { echo "the cluster did not accept topic bench; logs in $dir" >&2; exit 1; }
"$bin" topic create latency -b "$bootstrap" -p 1 -r 3 -c min.insync.replicas=2
echo "== produce-to-consume latency at 10,000 records/s, 1 KiB, RF=3, acks=all"
"$bin" perf e2e -b "$bootstrap" --topic latency --num-records 100000 --record-size 1024 --throughput 10000 \
  --producer-props acks=all linger.ms=0
echo "== produce: $records x 1 KiB, RF=3, acks=all"
"$bin" perf produce -b "$bootstrap" --topic bench --num-records "$records" --record-size 1024 \
  --producer-props acks=all linger.ms=5 batch.size=1048576 compression.type=none
