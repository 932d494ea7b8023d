"""kafka-python drives replica placement on a 3-broker Kairos cluster: dynamic broker configs
(replication throttle rates), throttled-replica topic configs, AlterPartitionReassignments,
ListPartitionReassignments and ElectLeaders, with the errors Kafka gives for bad input.

Usage: kafka_python_reassign.py BOOTSTRAP. Exits non-zero on the first failed check.
Run by tests/tests/replication.rs; every check names what it proves.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError

bs = sys.argv[1]
RECORDS = 3000  # 1 KiB each: 3 MB to move
RATE = 2_000_000  # bytes/s


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def wait_for(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A broker a Raft heartbeat behind may not know the topic or change yet.
        try:
            value = cond()
        except (IndexError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    check(False, f"{what} within {timeout}s")


def partition0(topic):
    return admin.describe_topics([topic])[0]["partitions"][0]


def fails_with(what, error_name, call):
    try:
        result = call()
    except KafkaError as e:
        check(type(e).__name__ == error_name, f"{what}: {type(e).__name__}")
        return
    # Per-resource and per-partition errors come back in the (possibly nested) result.
    def leaves(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from leaves(x)
        elif v is not None:
            yield v
    # alter_configs answers "OK" or the error as a string; the others error classes.
    names = [e if isinstance(e, str) else e.__name__ if isinstance(e, type) else type(e).__name__
             for e in leaves(result)]
    names = [n for n in names if n not in ("NoError", "OK")]
    check(len(names) == 1 and error_name in names[0], f"{what}: {names}")


def altered(result):
    return all(v == "OK" for r in result.values() for v in r.values())


admin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=15000)

# A partition on broker 1 alone, with 3 MB in it.
admin.create_topics([NewTopic("moving", replica_assignments={0: [1]})])
wait_for("moving-0 led by broker 1", lambda: partition0("moving")["leader_id"] == 1)
producer = KafkaProducer(bootstrap_servers=bs, acks=1, linger_ms=5)
payload = b"x" * 1024
for i in range(RECORDS):
    producer.send("moving", key=str(i).encode(), value=payload, partition=0)
producer.flush()
producer.close()

# Throttle: kafka-reassign-partitions.sh --throttle sets exactly these.
for b in ("1", "2", "3"):
    check(altered(admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, b, configs={
        "leader.replication.throttled.rate": str(RATE),
        "follower.replication.throttled.rate": str(RATE),
    })])), f"throttle rates set on broker {b}")
check(altered(admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "moving", configs={
    "leader.replication.throttled.replicas": "0:1",
    "follower.replication.throttled.replicas": "0:2,0:3",
})])), "throttled replicas set on the topic")
rate = wait_for("broker 2 describing its new rate", lambda: (lambda r: r if r["value"] == str(RATE) else None)(
    admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "2")], config_filter="all")
    ["broker"]["2"]["follower.replication.throttled.rate"]))
check(rate["value"] == str(RATE) and rate["config_source"] == "DYNAMIC_BROKER_CONFIG",
      f"a dynamic broker config is described with its source ({rate['value']}, {rate['config_source']})")
# Any broker answers; one that applied the change a Raft heartbeat later may not show it yet.
wait_for("the throttled replicas described as a topic config", lambda: admin.describe_configs(
    [ConfigResource(ConfigResourceType.TOPIC, "moving")])["topic"]["moving"]
    .get("follower.replication.throttled.replicas", {}).get("value") == "0:2,0:3")

# Bad input: Kafka's errors, nothing changes.
fails_with("a non-dynamic broker config is refused", "InvalidConfigurationError",
           lambda: admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={"log.dirs": "/x"})], raise_on_unknown=False))
fails_with("a negative rate is refused", "InvalidConfigurationError",
           lambda: admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={"leader.replication.throttled.rate": "-5"})]))
fails_with("a malformed throttled-replica list is refused", "InvalidConfigurationError",
           lambda: admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "moving", configs={"leader.replication.throttled.replicas": "zero:1"})]))
fails_with("a reassignment to an unknown broker is refused", "InvalidReplicationAssignmentError",
           lambda: admin.alter_partition_reassignments({TopicPartition("moving", 0): [2, 99]}))
fails_with("a reassignment naming a broker twice is refused", "InvalidReplicationAssignmentError",
           lambda: admin.alter_partition_reassignments({TopicPartition("moving", 0): [2, 2]}))
fails_with("a reassignment of a missing topic is refused", "UnknownTopicOrPartitionError",
           lambda: admin.alter_partition_reassignments({TopicPartition("nowhere", 0): [2]}))
fails_with("cancelling when nothing moves is refused", "NoReassignmentInProgressError",
           lambda: admin.alter_partition_reassignments({TopicPartition("moving", 0): None}))
check(partition0("moving")["replica_nodes"] == [1], "refused requests changed nothing")

# Move the partition off broker 1 (an operator's scale-down does this).
started = time.monotonic()
result = admin.alter_partition_reassignments({TopicPartition("moving", 0): [2, 3]})
check(result == {TopicPartition("moving", 0): None}, f"the reassignment is accepted ({result})")
ongoing = admin.list_partition_reassignments()
entry = ongoing.get(TopicPartition("moving", 0))
check(entry is not None and entry["adding_replicas"] == [2, 3] and entry["removing_replicas"] == [1],
      f"list_partition_reassignments shows it moving ({entry})")
admin.create_topics([NewTopic("still", replica_assignments={0: [2]})])
check(admin.list_partition_reassignments({"still": [0]}) == {},
      "listing a partition that is not moving shows nothing")
wait_for("the reassignment done", lambda: admin.list_partition_reassignments() == {}, timeout=60)
took = time.monotonic() - started
# Two followers pull 3 MB each through a 2 MB/s leader quota: about 3 s; unthrottled, well under 1 s.
check(took >= 1.0, f"the throttle held the move to its rate ({took:.2f}s for 2 x 3 MB at 2 MB/s)")
p = partition0("moving")
check(sorted(p["replica_nodes"]) == [2, 3] and p["leader_id"] in (2, 3), f"moving-0 is on brokers 2 and 3 ({p})")

consumer = KafkaConsumer(bootstrap_servers=bs, auto_offset_reset="earliest", consumer_timeout_ms=10000)
consumer.assign([TopicPartition("moving", 0)])
count = sum(1 for _ in zip(range(RECORDS), consumer))
consumer.close()
check(count == RECORDS, f"every record moved ({count} of {RECORDS})")

# Preferred leader election: reorder the replicas so the preferred one does not lead.
leader = p["leader_id"]
other = 3 if leader == 2 else 2
admin.alter_partition_reassignments({TopicPartition("moving", 0): [other, leader]})
wait_for("the reorder applied", lambda: partition0("moving")["replica_nodes"] == [other, leader])
check(partition0("moving")["leader_id"] == leader, "a reorder alone keeps the leader")
response = admin.elect_leaders(0, {"moving": [0]}, raise_errors=False)
codes = [r.error_code for t in response.replica_election_results for r in t.partition_result]
check(codes == [0], f"preferred election for moving-0 succeeds ({codes})")
wait_for("the preferred replica leading", lambda: partition0("moving")["leader_id"] == other)
response = admin.elect_leaders(0, {"moving": [0]}, raise_errors=False)
codes = [r.error_code for t in response.replica_election_results for r in t.partition_result]
check(codes == [84], f"electing again is ELECTION_NOT_NEEDED ({codes})")
response = admin.elect_leaders(1, {"moving": [0]}, raise_errors=False)
codes = [r.error_code for t in response.replica_election_results for r in t.partition_result]
check(codes == [84], f"an unclean election with a live leader is ELECTION_NOT_NEEDED ({codes})")

print("all kafka-python reassignment checks passed")
