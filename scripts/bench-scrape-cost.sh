#!/usr/bin/env bash
# Cost of scraping /metrics (issue #3: ≤ 2% of produce throughput). Prints the broker CPU per
# scrape and the produce rate of alternating runs with and without a scrape every second.
# Needs a release build: cargo build --release --bin kairos
set -euo pipefail
K="${KAIROS_BIN:-$(dirname "$0")/../target/release/kairos}"
PORT="${PORT:-19192}"; METRICS="${METRICS:-19404}"; ADMIN="${ADMIN:-19195}"
DIR="$(mktemp -d)"
"$K" serve --override "log.dirs=$DIR" --override "listeners=PLAINTEXT://127.0.0.1:$PORT" \
  --override "advertised.listeners=PLAINTEXT://127.0.0.1:$PORT" \
  --override "metrics.listener=127.0.0.1:$METRICS" --override "admin.listener=127.0.0.1:$ADMIN" \
  > "$DIR/broker.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$METRICS/readyz" >/dev/null && break; sleep 0.1; done
B="127.0.0.1:$PORT"
for t in $(seq 20); do "$K" -b "$B" topic create "s$t" --partitions 6 >/dev/null; done
"$K" -b "$B" topic create t --partitions 1 >/dev/null
cpu() { awk '{print $14+$15}' "/proc/$PID/stat"; }
a=$(cpu)
for _ in $(seq 1000); do curl -s -o /dev/null "http://127.0.0.1:$METRICS/metrics"; done
b=$(cpu)
echo "broker CPU per scrape: $(( (b - a) * 1000000 / $(getconf CLK_TCK) / 1000 )) us ($(curl -s "http://127.0.0.1:$METRICS/metrics" | wc -l) lines, 1000 scrapes)"
run() {
  "$K" -b "$B" perf produce --topic t --num-records 5000000 --record-size 100 \
    --producer-props acks=1 linger.ms=5 batch.size=1000000 2>/dev/null | tail -1 | awk '{print $4}'
}
for i in 1 2 3 4 5 6 7 8 9 10; do
  sync # the previous run's dirty pages would slow this one by 5-10%
  if [ $((i % 2)) = 1 ]; then
    ( while true; do curl -s -o /dev/null "http://127.0.0.1:$METRICS/metrics"; sleep 1; done ) &
    L=$!; r=$(run); kill $L; echo "run $i, scraping every 1 s: $r rec/s" | tee -a "$DIR/runs"
  else
    r=$(run); echo "run $i, no scraping: $r rec/s" | tee -a "$DIR/runs"
  fi
done
awk '/scraping every/ {w += $(NF-1); n++} /no scraping/ {o += $(NF-1); m++}
  END {printf "means: %.0f rec/s scraping, %.0f rec/s not scraping (%+.2f%%)\n", w/n, o/m, (w-o)/o*100}' "$DIR/runs"
