#!/usr/bin/env bash
# A real Apache Kafka 4.4 (KRaft, every node a broker and a controller) on 127.0.0.1, run from the
# jars of tests/java/pom.xml, as the reference that Kairos is compared with.
#
#   scripts/kafka-reference.sh start [--nodes 1|3] [--dir DIR]
#       Formats each node's storage, starts the nodes in the background (PID in DIR/node-N.pid,
#       output in DIR/node-N.log), waits until every broker answers Kafka requests, then prints
#       BOOTSTRAP=127.0.0.1:port,... and DIR=... on stdout (everything else goes to stderr).
#       DIR defaults to a new temp dir. Ports are picked free at start, never fixed.
#       3 nodes: a 3-voter quorum, default.replication.factor=3, min.insync.replicas=2.
#   scripts/kafka-reference.sh stop [--dir DIR] [--clean]
#       SIGTERM to one node after the other, each SIGKILLed if still up after 10 s (the last
#       of 3 nodes, left without a quorum, at once); removes DIR only with --clean.
#       Without --dir, stops the last cluster started with this KAIROS_CACHE.
#   scripts/kafka-reference.sh restart --dir DIR [--no-wait]
#       Starts again each node of DIR that is not running (stopped, or SIGKILLed to test
#       recovery) on the data it left, with the node's own properties (same ports; no format),
#       then waits and prints as start does. --no-wait returns as soon as the nodes are launched
#       (new PIDs in DIR/node-N.pid), for a caller that times the start itself.
#
# Environment: JAVA_HOME (default: java on PATH; Kafka 4.4 needs Java 17+), KAFKA_HEAP (default
# 512m per node), KAFKA_OPTS (more JVM options for the nodes, split on spaces),
# KAFKA_START_TIMEOUT (seconds, default 90), KAIROS_CACHE (as in scripts/kafka-classpath.sh).
#
# Start-up is mostly JVM class loading on 2 cores, so the first cluster's node 1 dumps a class-data
# archive (AppCDS) when it is stopped, kept in KAIROS_CACHE and used by every later start (the
# brokers and the tools run here); that roughly halves a node's start. A stale archive (other JDK
# build) is only warned about by the JVM and ignored; delete it from KAIROS_CACHE to rebuild it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
cache="${KAIROS_CACHE:-$HOME/.cache/kairos}"
last="$cache/kafka-reference-last-dir"

usage() { sed -n '5,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
(($# >= 1)) || usage
cmd="$1"; shift
nodes=1 dir="" clean=0 wait=1
while (($#)); do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --clean) clean=1; shift ;;
    --no-wait) wait=0; shift ;;
    *) usage ;;
  esac
done

# True when PID is still one of our Kafka nodes for DIR: guards against a recycled PID.
is_node() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "kafka.Kafka $2/"; }

# Waits up to $2 tenths of a second for node process $1 of DIR $3 to exit; then SIGKILLs it.
reap() {
  local i
  for ((i = 0; i < $2; i++)); do is_node "$1" "$3" || return 0; sleep 0.1; done
  echo "kafka-reference: SIGKILL $1" >&2
  kill -KILL "$1" 2>/dev/null || true
  return 1
}

# One node at a time, node 1 first: a broker's controlled shutdown needs a controller quorum, so
# while a majority is up each node exits cleanly in a second or two. The last node of a 3-node
# cluster has no quorum left and would wait 5 minutes (Kafka's fixed limit) for a controlled
# shutdown that cannot happen: it gets SIGKILL at once (a restart recovers its log).
stop() {
  local d="$1" f p pids=() n=0 i killed=0
  for f in "$d"/node-*.pid; do
    [[ -e "$f" ]] || continue
    n=$((n + 1))
    p="$(cat "$f")"
    if is_node "$p" "$d"; then pids+=("$p"); fi
  done
  for ((i = 0; i < ${#pids[@]}; i++)); do
    p="${pids[i]}"
    if ((n > 1 && i == ${#pids[@]} - 1)); then
      kill -KILL "$p" 2>/dev/null || true
      reap "$p" 50 "$d" || true
    elif ((i == 0)) && [[ -f "$d/cds-target" ]]; then
      # Node 1 writes the class-data archive as it exits (see AppCDS above): give it 30 s.
      kill -TERM "$p" 2>/dev/null || true
      reap "$p" 300 "$d" || killed=1
    else
      kill -TERM "$p" 2>/dev/null || true
      reap "$p" 100 "$d" || true
    fi
  done
  # Keep node 1's archive for later starts (copied under a temp name, then renamed, so a
  # concurrent start never reads half of it), unless a SIGKILL may have cut it short.
  if ((!killed)) && [[ -s "$d/node-1.jsa" && -f "$d/cds-target" ]]; then
    local target; target="$(cat "$d/cds-target")"
    if [[ ! -f "$target" ]] && cp "$d/node-1.jsa" "$target.$$" 2>/dev/null; then mv "$target.$$" "$target"; fi
    rm -f "$d/node-1.jsa" "$d/cds-target"
  fi
}

case "$cmd" in
  stop)
    if [[ -z "$dir" ]]; then dir="$(cat "$last" 2>/dev/null)" || { echo "kafka-reference: no --dir and no last cluster" >&2; exit 1; }; fi
    dir="$(cd "$dir" && pwd)"
    stop "$dir"
    # Only remove a directory that this script made (it holds node-1.properties).
    if ((clean)) && [[ -f "$dir/node-1.properties" ]]; then rm -rf "$dir"; fi
    exit 0 ;;
  start) ;;
  restart)
    [[ -n "$dir" && -f "$dir/node-1.properties" ]] || { echo "kafka-reference: restart needs --dir of a started cluster" >&2; exit 2; }
    ;;
  *) usage ;;
esac

t0=$(date +%s.%N)
since() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
cp="$("$root/scripts/kafka-classpath.sh")"
if [[ -z "$dir" ]]; then dir="$(mktemp -d -t kairos-kafka.XXXXXX)"; fi
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
mkdir -p "$cache"

if [[ "$cmd" == restart ]]; then
  # The node count and each node's ports, as start wrote them into its properties.
  nodes=$(find "$dir" -maxdepth 1 -name 'node-*.properties' | wc -l)
  port=()
  for ((i = 1; i <= nodes; i++)); do
    l="$(sed -n 's/^listeners=//p' "$dir/node-$i.properties")"
    p="${l#PLAINTEXT://127.0.0.1:}"
    port[2*i-2]="${p%%,*}" port[2*i-1]="${l##*CONTROLLER://127.0.0.1:}"
  done
fi
[[ "$nodes" == 1 || "$nodes" == 3 ]] || { echo "kafka-reference: --nodes must be 1 or 3" >&2; exit 2; }
echo "$dir" >"$last"

if [[ "$cmd" == start ]]; then
# Ports and the cluster id are new at every start, so a DIR cannot be started twice (restart
# reuses them).
[[ ! -e "$dir/node-1.properties" ]] || { echo "kafka-reference: $dir already holds a cluster" >&2; exit 1; }

# Two free ports per node (client, controller), all held open together so none repeats; and a
# random cluster id (what `kafka-storage random-uuid` prints: 16 random bytes, base64url), made
# here to save a JVM start.
read -r cid ports < <(python3 -c '
import base64, os, socket, sys
socks = [socket.socket() for _ in range(2 * int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
cid = "-"
while cid.startswith("-"):
    cid = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
print(cid, *(s.getsockname()[1] for s in socks))' "$nodes")
read -r -a port <<<"$ports"
fi
voters="" bootstrap=""
for ((i = 1; i <= nodes; i++)); do
  voters+="${voters:+,}$i@127.0.0.1:${port[2*i-1]}"
  bootstrap+="${bootstrap:+,}127.0.0.1:${port[2*i-2]}"
done
rf=$((nodes == 3 ? 3 : 1)) isr=$((nodes == 3 ? 2 : 1))

# Logging: WARN to stderr (tests/java/config/log4j2.xml), which lands in DIR/node-N.log.
jvm=(-Dlog4j2.configurationFile="$root/tests/java/config/log4j2.xml" -Djava.awt.headless=true)
# The class-data archive is only valid for this classpath and this JVM build: key it by both.
javabin="$(readlink -f "$(command -v "$java")")"
jsa="$cache/kafka-cds-$(printf '%s %s %s' "$cp" "$javabin" "$(stat -c %Y "$javabin")" | sha256sum | cut -c1-16).jsa"
cds=() node1_cds=()
if [[ -f "$jsa" ]]; then
  cds=(-XX:SharedArchiveFile="$jsa")
  node1_cds=("${cds[@]}")
else
  node1_cds=(-XX:ArchiveClassesAtExit="$dir/node-1.jsa")
  echo "$jsa" >"$dir/cds-target"
fi
# Short-lived tools (format, readiness probe): C1 only and the serial GC start fastest.
tool=("$java" "${jvm[@]}" "${cds[@]+"${cds[@]}"}" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$cp")
pids=()
# A start that fails half-way leaves no node running (the logs stay in DIR).
trap 'rc=$?; if ((rc)); then stop "$dir"; echo "kafka-reference: $cmd failed, logs in $dir" >&2; fi' EXIT

t_format=-
if [[ "$cmd" == start ]]; then
for ((i = 1; i <= nodes; i++)); do
  cat >"$dir/node-$i.properties" <<EOF
node.id=$i
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:${port[2*i-2]},CONTROLLER://127.0.0.1:${port[2*i-1]}
advertised.listeners=PLAINTEXT://127.0.0.1:${port[2*i-2]}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=$voters
log.dirs=$dir/node-$i
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# Tests join groups often: do not wait 3 s for more members.
group.initial.rebalance.delay.ms=0
EOF
  # Formatting takes a JVM start each (about 1 s): run them side by side.
  "${tool[@]}" kafka.tools.StorageTool format -t "$cid" -c "$dir/node-$i.properties" \
    >"$dir/node-$i.format.log" 2>&1 &
  pids+=($!)
done
for ((i = 1; i <= nodes; i++)); do
  wait "${pids[i-1]}" || { cat "$dir/node-$i.format.log" >&2; exit 1; }
done
t_format=$(since)
fi

for ((i = 1; i <= nodes; i++)); do
  # restart: a node still running is left alone.
  if [[ "$cmd" == restart ]] && is_node "$(cat "$dir/node-$i.pid" 2>/dev/null)" "$dir"; then continue; fi
  if ((i == 1)); then node_cds=("${node1_cds[@]}"); else node_cds=("${cds[@]+"${cds[@]}"}"); fi
  # nohup and every fd redirected: the node outlives this script and holds no pipe of the caller
  # (a caller reading our stdout would otherwise wait for Kafka to exit). GC flags as
  # kafka-server-start.sh uses them, so benchmarks compare with Kafka as shipped.
  nohup "$java" "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent "${jvm[@]}" \
    "${node_cds[@]+"${node_cds[@]}"}" ${KAFKA_OPTS:-} -cp "$cp" kafka.Kafka "$dir/node-$i.properties" </dev/null >>"$dir/node-$i.log" 2>&1 &
  echo $! >"$dir/node-$i.pid"
done
if ((!wait)); then
  echo "BOOTSTRAP=$bootstrap"
  echo "DIR=$dir"
  exit 0
fi

# Ready = each node's client port is open (cheap, checked first) and then one tool run in which
# every broker answers ApiVersions: BrokerApiVersionsCommand asks the metadata for the live
# (unfenced) brokers and lists each that answered, so N entries means all N are up.
deadline=$(($(date +%s) + ${KAFKA_START_TIMEOUT:-90}))
alive() {
  local i
  for ((i = 1; i <= nodes; i++)); do
    is_node "$(cat "$dir/node-$i.pid")" "$dir" || { echo "kafka-reference: node $i exited:" >&2; tail -20 "$dir/node-$i.log" >&2; return 1; }
  done
}
for ((i = 1; i <= nodes; i++)); do
  until (: </dev/tcp/127.0.0.1/"${port[2*i-2]}") 2>/dev/null; do
    alive; (($(date +%s) < deadline)) || { echo "kafka-reference: timed out" >&2; exit 1; }
    sleep 0.1
  done
done
t_ports=$(since)
until [[ $("${tool[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
  --bootstrap-server "$bootstrap" 2>>"$dir/ready.log" | grep -c ' (id: ') == "$nodes" ]]; do
  alive; (($(date +%s) < deadline)) || { echo "kafka-reference: timed out, see $dir/ready.log" >&2; exit 1; }
  sleep 0.5
done
if [[ "$cmd" == start ]]; then how="formatted at $t_format s"; else how="restarted, no format"; fi
echo "kafka-reference: $nodes node(s) ready in $(since) s ($how, ports open at $t_ports s)" >&2
echo "BOOTSTRAP=$bootstrap"
echo "DIR=$dir"
