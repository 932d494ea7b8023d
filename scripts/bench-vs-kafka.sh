#!/usr/bin/env bash
# Kairos next to Apache Kafka 4.4 on this machine: the same clients against each, one broker at a
# time, in one run. A benchmark, not a test: it prints each figure as it is measured, then a table
# of Kafka's figure, Kairos' figure and the ratio Kairos/Kafka, with the better direction per row.
#
#   scripts/bench-vs-kafka.sh          (after `cargo build --release --bin kairos`; it runs no cargo)
#
# Phases, in this order (only one broker or cluster is up at a time): Kafka 1 node, Kairos 1 node,
# Kafka 3 nodes, Kairos 3 nodes. Per single node:
#   - start-up: process start until it answers a Metadata request (Kafka on a data dir already
#     formatted by scripts/kafka-reference.sh start, whose format step is a row of its own);
#   - RSS 10 s after start-up (VmRSS of /proc/PID/status);
#   - produce throughput, 100 B and 1 KiB records, acks=1 and acks=all, each with Kafka's
#     ProducerPerformance (Java client) and librdkafka's rdkafka_performance (see below);
#   - consume throughput of the acks=1 topics: ConsumerPerformance (fetch rate: group join
#     excluded, it has a row of its own) and `kairos perf consume` (librdkafka, no group);
#   - produce-to-consume latency at 10,000 records/s, 1 KiB, acks=1 (`kairos perf e2e`), with the
#     producer's in-flight requests at 5 (as Kafka's Java producer) and unbounded (librdkafka's
#     default, as scripts/bench-cluster.sh runs it: see e2e_run);
#   - BENCH_GB GiB written (4 KiB records, rdkafka_performance, acks=1), RSS after it;
#   - restart after SIGKILL on those BENCH_GB: process start until it answers Metadata, and until
#     a produce+consume round trip of one record works (measured from the process' own start
#     time; the page cache still holds the log, so this is a warm restart).
# Per 3-node cluster (RF=3, min.insync.replicas=2, acks=all): RSS 10 s after start (sum of the
# nodes), produce 1 KiB with both producers, e2e latency at 10,000 records/s, 1 KiB (both ways).
# A Kairos 3-node start that forms no cluster within 30 s is reported, and tried once more.
#
# rdkafka_performance: Debian's librdkafka-dev ships only its source, which needs librdkafka's
# private headers; so it is built once from the librdkafka source inside the rdkafka-sys crate in
# Cargo's registry (the librdkafka version `kairos perf` links), cached in KAIROS_CACHE. When that
# fails, the librdkafka rows use `kairos perf produce` (rdkafka crate) instead and say so.
#
# Environment (the defaults ran in 455 s on a 2-core VM; building rdkafka_performance the first
# time adds about a minute):
#   BENCH_GB=10               GiB written before the SIGKILL restart (decimals allowed)
#   BENCH_RECORDS=2000000     100 B records per produce run
#   BENCH_RECORDS_1K=500000   1 KiB records per produce run (also the 3-node produce runs)
#   BENCH_E2E_RECORDS=100000  records per latency run, sent at BENCH_E2E_RATE=10000 per second
#   BENCH_PARTITIONS=3        partitions of the throughput topics (latency topics have 1)
#   BENCH_IDLE_S=10           idle seconds before the idle RSS is read
#   BENCH_FILL_SIZE=4096      record size of the BENCH_GB write
#   BENCH_CLUSTER=1           0 skips the 3-node phases
#   BENCH_TIMEOUT=300         seconds any one client run may take
#   BENCH_KEEP=1              keep the temp dir (logs of every run) instead of removing it
#   KAIROS_BIN (default target/release/kairos), KAFKA_HEAP (default 512m, as kafka-reference.sh),
#   KAIROS_CACHE, JAVA_HOME: as in scripts/kafka-reference.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

BENCH_GB="${BENCH_GB:-10}"
BENCH_RECORDS="${BENCH_RECORDS:-2000000}"
BENCH_RECORDS_1K="${BENCH_RECORDS_1K:-500000}"
BENCH_E2E_RECORDS="${BENCH_E2E_RECORDS:-100000}"
BENCH_E2E_RATE="${BENCH_E2E_RATE:-10000}"
BENCH_PARTITIONS="${BENCH_PARTITIONS:-3}"
BENCH_IDLE_S="${BENCH_IDLE_S:-10}"
BENCH_FILL_SIZE="${BENCH_FILL_SIZE:-4096}"
BENCH_CLUSTER="${BENCH_CLUSTER:-1}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-300}"
bin="${KAIROS_BIN:-$root/target/release/kairos}"
cache="${KAIROS_CACHE:-$HOME/.cache/kairos}"
kref="$root/scripts/kafka-reference.sh"
[[ -x "$bin" ]] || { echo "bench-vs-kafka: no $bin (cargo build --release --bin kairos)" >&2; exit 1; }
t_run0=$(date +%s)

tmp="$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-kafka.XXXXXX")"
kairos_pids=() kafka_dirs=()
# A copy of the binary, so that a rebuild during the run cannot change it between two starts.
bin_shown="${bin#"$root/"}"
mkdir "$tmp/bin"; cp "$bin" "$tmp/bin/kairos"; bin="$tmp/bin/kairos"
cleanup() {
  local p d
  for p in "${kairos_pids[@]+"${kairos_pids[@]}"}"; do
    # Only a process that is still one of ours (its command line names our temp dir).
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$tmp/"; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  for d in "${kafka_dirs[@]+"${kafka_dirs[@]}"}"; do
    [[ -d "$d" ]] && "$kref" stop --dir "$d" 2>/dev/null || true
  done
  if [[ -n "${BENCH_KEEP:-}" ]]; then echo "bench-vs-kafka: logs kept in $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
hz=$(getconf CLK_TCK)

# ---------------------------------------------------------------- results
# A row: id, label, unit (rec/s: also shown as MiB/s with the row's record size), better side.
declare -A res=() label=() unit=() better=() size=()
rows=()
row() { rows+=("$1"); label[$1]="$2"; unit[$1]="$3"; better[$1]="$4"; size[$1]="${5:-0}"; }
# put ID SIDE VALUE: records and prints one figure (FAIL, n/a or a number).
put() {
  res[$1|$2]="$3"
  say "  => $2: ${label[$1]}: $(fmt "$1" "$3")"
}
fmt() { # ID VALUE
  local v="$2"
  [[ "$v" =~ ^[0-9.]+$ ]] || { printf '%s' "$v"; return; }
  case "${unit[$1]}" in
    rec/s) awk -v v="$v" -v s="${size[$1]}" 'BEGIN { printf "%\047d/s %.1f MiB/s", v, v * s / 1048576 }' ;;
    MiB/s) awk -v v="$v" 'BEGIN { printf "%.1f MiB/s", v }' ;;
    ms) awk -v v="$v" 'BEGIN { printf "%.2f ms", v }' ;;
    s) awk -v v="$v" 'BEGIN { printf "%.2f s", v }' ;;
    MiB) awk -v v="$v" 'BEGIN { printf "%.0f MiB", v }' ;;
    *) printf '%s %s' "$v" "${unit[$1]}" ;;
  esac
}

# ---------------------------------------------------------------- running clients
cp="$("$root/scripts/kafka-classpath.sh")"
java_cmd=("${JAVA_HOME:+$JAVA_HOME/bin/}java" -Dlog4j2.configurationFile="$root/tests/java/config/log4j2.xml" -cp "$cp")
# Prints a command as it can be pasted (the classpath as the script that makes it).
show() {
  local s
  s="$(printf '%q ' "$@")"
  s="${s//"$(printf '%q' "$cp")"/\"\$(scripts/kafka-classpath.sh)\"}"
  s="${s//"$bin"/$bin_shown}"
  s="${s//"$root/"/}"
  say "  \$ ${s% }"
}
nlog=0
# run NAME CMD...: prints the command, runs it (bounded by BENCH_TIMEOUT) with its output in a
# log file whose path is left in $log; on failure prints the log's tail.
run() {
  local name="$1"; shift
  nlog=$((nlog + 1)); log="$tmp/$(printf '%02d' "$nlog")-$name.log"
  show "$@"
  if ! timeout "$BENCH_TIMEOUT" "$@" >"$log" 2>&1; then
    say "  !! failed (log $log):"; tail -5 "$log" | sed 's/^/     /'
    return 1
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mib() { # PID... -> sum of VmRSS in MiB
  local p kb=0 v
  for p in "$@"; do v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status"); kb=$((kb + v)); done
  awk -v k="$kb" 'BEGIN { printf "%.0f", k / 1024 }'
}
# Seconds since process PID started (its start time in /proc/PID/stat, boot-clock based).
age() {
  local up st
  read -r up _ </proc/uptime
  st=$(sed 's/.*) //' "/proc/$1/stat" | awk '{ print $20 }')
  awk -v u="$up" -v s="$st" -v h="$hz" 'BEGIN { printf "%.2f", u - s / h }'
}
wait_gone() { # PID: until it has exited (a zombie counts as gone)
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -e "/proc/$1" ]] || return 0
    [[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" == Z ]] && return 0
    sleep 0.05
  done
  return 1
}

# Seconds from the start of process PID until it answers a Metadata request (v4, all topics)
# listing at least one broker: one connection every 10 ms, nothing else.
cat >"$tmp/answers.py" <<'EOF'
import os, socket, struct, sys, time
host, port = sys.argv[1].split(",")[0].rsplit(":", 1)
pid, limit = int(sys.argv[2]), float(sys.argv[3])
def stat():
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
start = int(stat()[19]) / os.sysconf("SC_CLK_TCK")
now = lambda: time.clock_gettime(time.CLOCK_BOOTTIME)
cid = b"bench-probe"
body = struct.pack(">hhih", 3, 4, 7, len(cid)) + cid + struct.pack(">ib", -1, 0)
req = struct.pack(">i", len(body)) + body
def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise OSError("closed")
        b += c
    return b
while True:
    try:
        if stat()[0] == "Z":
            raise FileNotFoundError
    except FileNotFoundError:
        sys.exit("probe: the broker exited")
    if now() - start > limit:
        sys.exit("probe: no Metadata answer in time")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(req)
            r = exact(s, struct.unpack(">i", exact(s, 4))[0])
            corr, _, brokers = struct.unpack(">iii", r[:12])
            if corr == 7 and brokers >= 1:
                print(f"{now() - start:.2f}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
EOF
answers() { python3 "$tmp/answers.py" "$1" "$2" "${3:-300}"; }

# One record produced (acks=1) to partition 0 of TOPIC and read back by timestamp: true when the
# record read is the one sent. Short client timeouts so that an attempt against a broker still
# starting fails fast and the next one is made.
roundtrip() { # BOOTSTRAP TOPIC
  local tok t
  tok="rt-$$-$RANDOM-$(date +%s%N)"; t=$(($(date +%s%3N) - 1))
  echo "$tok" | timeout 20 "$bin" -b "$1" -X message.timeout.ms=5000 -X socket.timeout.ms=5000 \
    -X reconnect.backoff.max.ms=100 produce "$2" --partition 0 --acks 1 >/dev/null 2>&1 || return 1
  [[ "$(timeout 20 "$bin" -b "$1" -X socket.timeout.ms=5000 -X reconnect.backoff.max.ms=100 \
    consume "$2" --partition 0 --timestamp "$t" -n 1 --timeout-ms 5000 2>/dev/null)" == "$tok" ]]
}

topic() { # BOOTSTRAP NAME PARTITIONS RF MIN_ISR
  run topic-"$2" "$bin" topic create "$2" -b "$1" -p "$3" -r "$4" -c min.insync.replicas="$5"
}

# ---------------------------------------------------------------- rdkafka_performance
rdk=""
build_rdk() {
  local ver src out b
  ver=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print }' "$root/Cargo.lock")
  out="$cache/rdkafka_performance-${ver#*+}"
  if [[ -x "$out" ]]; then rdk="$out"; return 0; fi
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$ver"/librdkafka 2>/dev/null | head -1)
  [[ -n "$src" ]] || { say "  no rdkafka-sys $ver source in Cargo's registry"; return 1; }
  say "  building rdkafka_performance from $src (once, about a minute; cached as $out)"
  b="$tmp/librdkafka"; cp -r "$src" "$b"; mkdir -p "$cache"
  if (cd "$b" && ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl \
      --disable-zstd --disable-lz4-ext --disable-zlib && make -C src librdkafka.a -j"$(nproc)" &&
      make -C examples rdkafka_performance) >"$tmp/librdkafka-build.log" 2>&1; then
    cp "$b/examples/rdkafka_performance" "$out.$$" && mv "$out.$$" "$out"
    rm -rf "$b"; rdk="$out"
  else
    say "  build failed (log $tmp/librdkafka-build.log)"; tail -5 "$tmp/librdkafka-build.log"; return 1
  fi
}
say "== preparing"
if build_rdk; then
  rdk_name="librdkafka rdkafka_performance"
  say "  rdkafka_performance: $rdk ($("$rdk" -h 2>&1 | sed -n 's/^librdkafka version \([^ ]*\).*/librdkafka \1/p'))"
else
  rdk_name="librdkafka via kairos perf produce"
  say "  rdkafka_performance unavailable: the librdkafka rows use \`kairos perf produce\` (rdkafka crate)"
fi

# ---------------------------------------------------------------- rows
P="$BENCH_PARTITIONS" R100="$BENCH_RECORDS" R1K="$BENCH_RECORDS_1K"
gb="$BENCH_GB"
fill_n=$(awk -v g="$gb" -v s="$BENCH_FILL_SIZE" 'BEGIN { printf "%d", g * 1073741824 / s }')
e2e="@${BENCH_E2E_RATE}/s, 1 KiB"
for c in "100 1 100 B acks=1" "1024 1 1 KiB acks=1" "100 all 100 B acks=all" "1024 all 1 KiB acks=all"; do
  read -r s a text <<<"$c"
  row "p$s-$a-java" "produce $text, Java ProducerPerformance" rec/s higher "$s"
  row "p$s-$a-rdk" "produce $text, $rdk_name" rec/s higher "$s"
done
row c100-java "consume 100 B, ConsumerPerformance (fetch rate)" rec/s higher 100
row c100-kp "consume 100 B, kairos perf consume (librdkafka)" rec/s higher 100
row c1024-java "consume 1 KiB, ConsumerPerformance (fetch rate)" rec/s higher 1024
row c1024-kp "consume 1 KiB, kairos perf consume (librdkafka)" rec/s higher 1024
row cjoin "ConsumerPerformance group join (rebalance.time.ms)" ms lower
for q in 50 99 99.9; do row "e2e-$q" "e2e latency $e2e, acks=1, in-flight 5, p$q" ms lower; done
for q in 50 99 99.9; do row "e2eu-$q" "e2e latency $e2e, acks=1, in-flight unbounded, p$q" ms lower; done
row format "format step (kafka-reference.sh start until formatted)" s lower
row start "start-up: process start -> answers Metadata" s lower
row rss-idle "RSS, ${BENCH_IDLE_S} s idle after start-up" MiB lower
row fill "write $gb GiB, $BENCH_FILL_SIZE B records, acks=1 ($rdk_name)" MiB/s higher
row rss-full "RSS after writing $gb GiB" MiB lower
row rt-probe "round-trip probe on the running broker (cost)" s lower
row restart-answer "restart after SIGKILL, $gb GiB: start -> answers Metadata" s lower
row restart-rt "restart after SIGKILL, $gb GiB: start -> produce+consume works" s lower
if ((BENCH_CLUSTER)); then
  row c3-rss-idle "3 nodes: RSS, ${BENCH_IDLE_S} s idle, sum of 3" MiB lower
  row c3-java "3 nodes RF=3 acks=all: produce 1 KiB, Java ProducerPerformance" rec/s higher 1024
  row c3-rdk "3 nodes RF=3 acks=all: produce 1 KiB, $rdk_name" rec/s higher 1024
  for q in 50 99 99.9; do row "c3-e2e-$q" "3 nodes: e2e latency $e2e, acks=all, in-flight 5, p$q" ms lower; done
  for q in 50 99 99.9; do row "c3-e2eu-$q" "3 nodes: e2e latency $e2e, acks=all, in-flight unbounded, p$q" ms lower; done
fi

# ---------------------------------------------------------------- measurements
# produce ID SIDE BOOTSTRAP TOPIC SIZE ACKS N CLIENT(java|rdk) -> puts records/s; true if all acked
produce() {
  local id=$1 side=$2 b=$3 t=$4 s=$5 a=$6 n=$7 client=$8 v
  if [[ "$client" == java ]]; then
    run "$id" "${java_cmd[@]}" org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$b" \
      --topic "$t" --num-records "$n" --record-size "$s" --throughput -1 \
      --command-property acks="$a" linger.ms=5 batch.size=1048576 compression.type=none || { put "$id" "$side" FAIL; return 1; }
    v=$(sed -n "s/^$n records sent, \([0-9.]*\) records\/sec.*/\1/p" "$log" | tail -1)
  elif [[ -n "$rdk" ]]; then
    run "$id" "$rdk" -P -t "$t" -b "$b" -s "$s" -c "$n" -a "$([[ $a == all ]] && echo -1 || echo "$a")" \
      -X linger.ms=5 -X batch.size=1048576 -X compression.type=none \
      -X queue.buffering.max.messages=1000000 -X queue.buffering.max.kbytes=1048576 || { put "$id" "$side" FAIL; return 1; }
    # "% N messages produced (B bytes), D delivered (offset O, F failed) in T ms: R msgs/s ..."
    v=$(grep 'messages produced' "$log" | tail -1 |
      sed -n "s/.* $n delivered (offset [-0-9]*, 0 failed) in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p")
  else
    run "$id" "$bin" perf produce -b "$b" --topic "$t" --num-records "$n" --record-size "$s" \
      --producer-props acks="$a" linger.ms=5 batch.size=1048576 compression.type=none || { put "$id" "$side" FAIL; return 1; }
    v=$(sed -n "s/^$n records sent, \([0-9.]*\) records\/sec.*/\1/p" "$log" | tail -1)
  fi
  [[ -n "$v" ]] || { say "  !! no result line (log $log)"; put "$id" "$side" FAIL; return 1; }
  put "$id" "$side" "$v"
}

# Produce, consume and latency rows on a single node (SIDE kafka|kairos) at BOOTSTRAP.
single_suite() {
  local side=$1 b=$2 s a n v line
  declare -A sent=()
  for t in t100-1 t1024-1 t100-all t1024-all; do topic "$b" "$t" "$P" 1 1 || return 1; done
  topic "$b" lat 1 1 1 || return 1
  for c in "100 1 $R100" "1024 1 $R1K" "100 all $R100" "1024 all $R1K"; do
    read -r s a n <<<"$c"
    say "-- $side: produce $n x $s B, acks=$a"
    for client in java rdk; do
      produce "p$s-$a-$client" "$side" "$b" "t$s-$a" "$s" "$a" "$n" "$client" && sent[t$s-$a]=$((${sent[t$s-$a]:-0} + n)) || true
    done
  done
  for s in 100 1024; do
    n="${sent[t$s-1]:-0}"
    say "-- $side: consume the $n records of t$s-1"
    if ((n == 0)); then put "c$s-java" "$side" FAIL; put "c$s-kp" "$side" FAIL; continue; fi
    if run "c$s-java" "${java_cmd[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$b" \
        --topic "t$s-1" --num-records "$n" --timeout 30000; then
      # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
      line=$(grep -E '^[0-9]{4}-' "$log" | tail -1)
      if [[ "$(awk -F', ' '{ print $5 }' <<<"$line")" == "$n" ]]; then
        put "c$s-java" "$side" "$(awk -F', ' '{ print $10 }' <<<"$line")"
        [[ $s == 100 ]] && put cjoin "$side" "$(awk -F', ' '{ print $7 }' <<<"$line")"
      else
        say "  !! did not consume all $n records (log $log)"; put "c$s-java" "$side" FAIL
      fi
    else
      put "c$s-java" "$side" FAIL
    fi
    if run "c$s-kp" "$bin" perf consume -b "$b" --topic "t$s-1" --messages "$n" --timeout 30000; then
      put "c$s-kp" "$side" "$(grep -E '^[0-9]+, ' "$log" | tail -1 | awk -F', ' '{ print $10 }')"
    else
      put "c$s-kp" "$side" FAIL
    fi
  done
  say "-- $side: produce-to-consume latency"
  e2e_run e2e "$side" "$b" lat 1 max.in.flight=5
  e2e_run e2eu "$side" "$b" lat 1
}

# Producer linger.ms=0. With librdkafka's default max.in.flight (1,000,000) every record goes out
# in its own request as soon as it is sent, so 10,000 requests/s reach the broker; Kafka's Java
# producer allows 5 requests in flight, so records wait in a batch while 5 are outstanding. Both
# are measured: "in-flight 5" (max.in.flight=5, as Java) and "in-flight unbounded" (librdkafka's
# default, as scripts/bench-cluster.sh runs it).
e2e_run() { # ID_PREFIX SIDE BOOTSTRAP TOPIC ACKS [PRODUCER_PROP...]
  local q id=$1 side=$2 b=$3 t=$4 a=$5
  shift 5
  if run "$id" "$bin" perf e2e -b "$b" --topic "$t" --num-records "$BENCH_E2E_RECORDS" --record-size 1024 \
      --throughput "$BENCH_E2E_RATE" --producer-props acks="$a" linger.ms=0 "$@"; then
    # "N records, R records/sec target, end-to-end latency: A ms avg, X ms 50th, X ms 95th, X ms 99th, X ms 99.9th, X ms max."
    put "$id-50" "$side" "$(sed -n 's/.* \([0-9.]*\) ms 50th.*/\1/p' "$log")"
    put "$id-99" "$side" "$(sed -n 's/.* \([0-9.]*\) ms 99th.*/\1/p' "$log")"
    put "$id-99.9" "$side" "$(sed -n 's/.* \([0-9.]*\) ms 99.9th.*/\1/p' "$log")"
  else
    for q in 50 99 99.9; do put "$id-$q" "$side" FAIL; done
  fi
}

# Writes BENCH_GB GiB to topic fill, then RSS of PID.
fill() { # SIDE BOOTSTRAP PID
  local v
  topic "$2" fill "$P" 1 1 || { put fill "$1" FAIL; return 1; }
  say "-- $1: write $gb GiB ($fill_n x $BENCH_FILL_SIZE B)"
  local t0; t0=$(date +%s.%N)
  if [[ -n "$rdk" ]]; then
    run fill "$rdk" -P -t fill -b "$2" -s "$BENCH_FILL_SIZE" -c "$fill_n" -a 1 -X linger.ms=5 \
      -X batch.size=1048576 -X compression.type=none -X queue.buffering.max.messages=1000000 \
      -X queue.buffering.max.kbytes=1048576 || { put fill "$1" FAIL; return 1; }
    grep -q " $fill_n delivered (offset [-0-9]*, 0 failed)" "$log" || { say "  !! not all delivered (log $log)"; put fill "$1" FAIL; return 1; }
  else
    run fill "$bin" perf produce -b "$2" --topic fill --num-records "$fill_n" --record-size "$BENCH_FILL_SIZE" \
      --producer-props acks=1 linger.ms=5 batch.size=1048576 compression.type=none || { put fill "$1" FAIL; return 1; }
  fi
  v=$(awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$fill_n" -v s="$BENCH_FILL_SIZE" 'BEGIN { printf "%.1f", n * s / 1048576 / (b - a) }')
  put fill "$1" "$v"
  sleep 3
  put rss-full "$1" "$(rss_mib "$3")"
}

# Round-trip probe cost on the running broker, then SIGKILL and a restart by RESTART_FN, which
# must launch the node again and leave its PID in $new_pid.
kill_restart() { # SIDE BOOTSTRAP PID RESTART_FN
  local side=$1 b=$2 pid=$3 t0 i
  topic "$b" probe 1 1 1 || return 1
  say "-- $side: round-trip probe on the running broker, then SIGKILL and restart"
  t0=$(date +%s.%N)
  roundtrip "$b" probe || { put rt-probe "$side" FAIL; return 1; }
  put rt-probe "$side" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
  say "  \$ kill -KILL $pid"
  kill -KILL "$pid"; wait_gone "$pid"
  "$4" || { put restart-answer "$side" FAIL; put restart-rt "$side" FAIL; return 1; }
  if v=$(answers "$b" "$new_pid"); then put restart-answer "$side" "$v"; else put restart-answer "$side" FAIL; fi
  while [[ -e "/proc/$new_pid" ]] && awk -v a="$(age "$new_pid")" 'BEGIN { exit !(a < 600) }'; do
    if roundtrip "$b" probe; then put restart-rt "$side" "$(age "$new_pid")"; return 0; fi
  done
  put restart-rt "$side" FAIL
}

# ---------------------------------------------------------------- Kafka, 1 node
phase_kafka1() {
  local d="$tmp/kafka-1" out b pid v
  say ""; say "== Apache Kafka 4.4, 1 node (heap ${KAFKA_HEAP:-512m})"
  kafka_dirs+=("$d")
  show scripts/kafka-reference.sh start --dir "$d"
  out=$("$kref" start --dir "$d" 2>"$tmp/kafka-1.start.log") || { cat "$tmp/kafka-1.start.log"; return 1; }
  b=$(sed -n 's/^BOOTSTRAP=//p' <<<"$out")
  sed 's/^/  /' "$tmp/kafka-1.start.log"
  put format kafka "$(sed -n 's/.*formatted at \([0-9.]*\) s.*/\1/p' "$tmp/kafka-1.start.log")"
  # Start-up timed on the formatted data dir: a clean stop, then a restart that only launches.
  show scripts/kafka-reference.sh stop --dir "$d"
  "$kref" stop --dir "$d" 2>>"$tmp/kafka-1.start.log"
  show scripts/kafka-reference.sh restart --dir "$d" --no-wait
  "$kref" restart --dir "$d" --no-wait >/dev/null 2>>"$tmp/kafka-1.start.log"
  pid=$(cat "$d/node-1.pid")
  v=$(answers "$b" "$pid") || { put start kafka FAIL; return 1; }
  put start kafka "$v"
  sleep "$BENCH_IDLE_S"
  put rss-idle kafka "$(rss_mib "$pid")"
  single_suite kafka "$b"
  fill kafka "$b" "$pid" || true
  kafka_restart() {
    show scripts/kafka-reference.sh restart --dir "$d" --no-wait
    "$kref" restart --dir "$d" --no-wait >/dev/null 2>>"$tmp/kafka-1.start.log" || return 1
    new_pid=$(cat "$d/node-1.pid")
  }
  kill_restart kafka "$b" "$pid" kafka_restart || true
  show scripts/kafka-reference.sh stop --dir "$d" --clean
  "$kref" stop --dir "$d" --clean 2>/dev/null
}

# ---------------------------------------------------------------- Kairos, 1 node
# As scripts/bench-cluster.sh starts a node; the group delay as kafka-reference.sh sets Kafka's.
kairos_node() { # DIR NODE_ID CLIENT_PORT [CONTROLLER_PORT VOTERS] -> starts it, PID in $new_pid
  local d=$1 i=$2 args
  args=(serve --override node.id="$i" --override "log.dirs=$d/$i"
    --override "metrics.listener=127.0.0.1:$(free_port)" --override "admin.listener=127.0.0.1:$(free_port)"
    --override group.initial.rebalance.delay.ms=0)
  if (($# > 3)); then
    args+=(--override process.roles=broker,controller --override "controller.quorum.voters=$5"
      --override "listeners=PLAINTEXT://127.0.0.1:$3,CONTROLLER://127.0.0.1:$4"
      --override default.replication.factor=3 --override min.insync.replicas=2
      --override offsets.topic.replication.factor=3)
  else
    args+=(--override "listeners=PLAINTEXT://127.0.0.1:$3")
  fi
  say "  \$ KAIROS_LOG=warn $(show "$bin" "${args[@]}" | sed 's/^  \$ //') >$d/broker-$i.log 2>&1 &"
  KAIROS_LOG=warn "$bin" "${args[@]}" >>"$d/broker-$i.log" 2>&1 &
  new_pid=$!
  disown "$new_pid"  # no job notice when it is SIGKILLed
  kairos_pids+=("$new_pid")
}

phase_kairos1() {
  local d="$tmp/kairos-1" port b pid v
  say ""; say "== Kairos, 1 node ($("$bin" --version 2>/dev/null || echo kairos), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  mkdir -p "$d"; port=$(free_port); b="127.0.0.1:$port"
  say "  (no format step: the node creates its data dir)"
  put format kairos n/a
  kairos_node "$d" 1 "$port"; pid=$new_pid
  v=$(answers "$b" "$pid") || { put start kairos FAIL; tail -20 "$d/broker-1.log"; return 1; }
  put start kairos "$v"
  sleep "$BENCH_IDLE_S"
  put rss-idle kairos "$(rss_mib "$pid")"
  single_suite kairos "$b"
  fill kairos "$b" "$pid" || true
  kairos_restart() { kairos_node "$d" 1 "$port"; }
  kill_restart kairos "$b" "$pid" kairos_restart || true
  say "  \$ kill -KILL $new_pid"
  kill -KILL "$new_pid" 2>/dev/null || true; wait_gone "$new_pid" || true
  rm -rf "$d"
}

# ---------------------------------------------------------------- 3-node clusters
cluster_suite() { # SIDE BOOTSTRAP PID...
  local side=$1 b=$2; shift 2
  sleep "$BENCH_IDLE_S"
  put c3-rss-idle "$side" "$(rss_mib "$@")"
  topic "$b" c1024 "$P" 3 2 || return 1
  topic "$b" clat 1 3 2 || return 1
  say "-- $side: 3 nodes, produce $R1K x 1 KiB, acks=all"
  produce c3-java "$side" "$b" c1024 1024 all "$R1K" java || true
  produce c3-rdk "$side" "$b" c1024 1024 all "$R1K" rdk || true
  say "-- $side: 3 nodes, produce-to-consume latency, acks=all"
  e2e_run c3-e2e "$side" "$b" clat all max.in.flight=5
  e2e_run c3-e2eu "$side" "$b" clat all
}

phase_kafka3() {
  local d="$tmp/kafka-3" out b
  say ""; say "== Apache Kafka 4.4, 3 nodes"
  kafka_dirs+=("$d")
  show scripts/kafka-reference.sh start --nodes 3 --dir "$d"
  out=$("$kref" start --nodes 3 --dir "$d" 2>"$tmp/kafka-3.start.log") || { cat "$tmp/kafka-3.start.log"; return 1; }
  sed 's/^/  /' "$tmp/kafka-3.start.log"
  b=$(sed -n 's/^BOOTSTRAP=//p' <<<"$out")
  cluster_suite kafka "$b" "$(cat "$d/node-1.pid")" "$(cat "$d/node-2.pid")" "$(cat "$d/node-3.pid")" || true
  show scripts/kafka-reference.sh stop --dir "$d" --clean
  "$kref" stop --dir "$d" --clean 2>/dev/null
}

# Starts 3 nodes in DIR (as scripts/bench-cluster.sh); true once they form a cluster, i.e. a
# topic with RF=3 can be created (within 30 s). Sets b (bootstrap) and pids.
kairos3_start() { # DIR
  local d=$1 i voters out t0
  local -a kp cp3
  mkdir -p "$d"; pids=()
  for i in 1 2 3; do kp[$i]=$(free_port); cp3[$i]=$(free_port); done
  voters="1@127.0.0.1:${cp3[1]},2@127.0.0.1:${cp3[2]},3@127.0.0.1:${cp3[3]}"
  b="127.0.0.1:${kp[1]},127.0.0.1:${kp[2]},127.0.0.1:${kp[3]}"
  t0=$(date +%s.%N)
  for i in 1 2 3; do kairos_node "$d" "$i" "${kp[$i]}" "${cp3[$i]}" "$voters"; pids+=("$new_pid"); done
  for ((i = 0; i < 150; i++)); do
    # A create that timed out on the client may still have been done: "already exists" is fine.
    if out=$("$bin" topic create formed -b "$b" -p 1 -r 3 2>&1) || [[ "$out" == *"already exists"* ]]; then
      say "  cluster formed (topic with RF=3 created) $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after the first node was launched"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

phase_kairos3() {
  local d attempt i b pids=()
  say ""; say "== Kairos, 3 nodes"
  for attempt in 1 2; do
    d="$tmp/kairos-3-$attempt"
    if kairos3_start "$d"; then
      cluster_suite kairos "$b" "${pids[@]}" || true
      for i in "${pids[@]}"; do kill -KILL "$i" 2>/dev/null || true; done
      for i in "${pids[@]}"; do wait_gone "$i" || true; done
      rm -rf "$d"
      return 0
    fi
    say "  !! attempt $attempt: the 3 nodes formed no cluster within 30 s; their first errors:"
    for i in 1 2 3; do grep -m2 -E 'ERROR|kairos:' "$d/broker-$i.log" | cut -c1-200 | sed "s/^/     node $i: /"; done
    for i in "${pids[@]}"; do kill -KILL "$i" 2>/dev/null || true; done
    for i in "${pids[@]}"; do wait_gone "$i" || true; done
    ((attempt == 2)) || say "  starting a new cluster (new data dirs and ports)"
  done
  return 1
}

say "== bench-vs-kafka: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -r), $(java -version 2>&1 | head -1)"
say "   BENCH_GB=$gb BENCH_RECORDS=$R100 BENCH_RECORDS_1K=$R1K BENCH_E2E_RECORDS=$BENCH_E2E_RECORDS BENCH_E2E_RATE=$BENCH_E2E_RATE"
say "   BENCH_PARTITIONS=$P BENCH_IDLE_S=$BENCH_IDLE_S BENCH_FILL_SIZE=$BENCH_FILL_SIZE BENCH_CLUSTER=$BENCH_CLUSTER; data in $tmp"
say "   producers: linger.ms=5 batch.size=1048576 compression none; client runs bounded by timeout $BENCH_TIMEOUT s"
phase_kafka1 || say "!! Kafka 1-node phase stopped early"
sync; sleep 2
phase_kairos1 || say "!! Kairos 1-node phase stopped early"
if ((BENCH_CLUSTER)); then
  sync; sleep 2
  phase_kafka3 || say "!! Kafka 3-node phase stopped early"
  sync; sleep 2
  phase_kairos3 || say "!! Kairos 3-node phase stopped early"
fi

# ---------------------------------------------------------------- table
say ""
say "== Results (Kafka 4.4 vs Kairos, same clients, this machine; ratio = Kairos/Kafka)"
w=70
printf "%-${w}s  %-24s  %-24s  %8s  %s\n" "row" "Kafka 4.4" "Kairos" "ratio" "better"
for id in "${rows[@]}"; do
  k="${res[$id|kafka]:--}" r="${res[$id|kairos]:--}"
  ratio=$(awk -v k="$k" -v r="$r" 'BEGIN { if (k ~ /^[0-9.]+$/ && r ~ /^[0-9.]+$/ && k + 0 > 0) printf "%.2f", r / k; else print "-" }')
  printf "%-${w}s  %-24s  %-24s  %8s  %s\n" "${label[$id]}" "$(fmt "$id" "$k")" "$(fmt "$id" "$r")" "$ratio" "${better[$id]} is better"
done
say "(rec/s rows: ratio of records/s; MiB = 1,048,576 bytes. Run time $(($(date +%s) - t_run0)) s.)"
say "Notes: a Kafka node restarted after SIGKILL cannot register until its previous registration"
say "  has expired (the controller answers DUPLICATE_BROKER_REGISTRATION for broker.session.timeout.ms,"
say "  9 s by default), so its restart time is at least that. In-flight unbounded: a broker that"
say "  answers 10,000 one-record requests/s more slowly than they come builds a backlog, and its"
say "  latency then grows with the length of the run (BENCH_E2E_RECORDS)."
