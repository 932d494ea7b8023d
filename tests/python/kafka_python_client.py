"""kafka-python (a pure-Python port of the Java client's logic) against a Kairos broker.

Usage: kafka_python_client.py BOOTSTRAP. Exits non-zero on the first failed check.
Run by tests/tests/python_client.rs; every check names what it proves.
"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import InvalidTopicError, TopicAlreadyExistsError, KafkaError
from kafka.structs import OffsetAndMetadata

bs = sys.argv[1]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


admin = KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=10000)

# Topics: create, duplicate, invalid name, list, describe, partitions, configs.
admin.create_topics([NewTopic("py", 3, 1, topic_configs={"retention.ms": "3600000"})])
try:
    admin.create_topics([NewTopic("py", 3, 1)])
    check(False, "creating an existing topic fails")
except TopicAlreadyExistsError:
    check(True, "creating an existing topic fails with TopicAlreadyExists")
try:
    admin.create_topics([NewTopic("bad name", 1, 1)])
    check(False, "an invalid topic name is refused")
except (InvalidTopicError, KafkaError) as e:
    check("InvalidTopic" in type(e).__name__ or "InvalidTopic" in str(e), f"an invalid topic name is refused ({type(e).__name__})")
check("py" in admin.list_topics(), "list_topics shows the new topic")
described = admin.describe_topics(["py"])
check(len(described[0]["partitions"]) == 3, "describe_topics shows 3 partitions")
cluster = admin.describe_cluster()
check(len(cluster["brokers"]) == 1 and cluster["cluster_id"], "describe_cluster shows one broker and a cluster id")
admin.create_partitions({"py": NewPartitions(total_count=4)})
check(len(admin.describe_topics(["py"])[0]["partitions"]) == 4, "create_partitions grows the topic to 4")
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py", configs={"retention.ms": "7200000", "cleanup.policy": "delete"})])
configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py")])
entries = configs["topic"]["py"]
check(entries["retention.ms"]["value"] == "7200000", "alter_configs then describe_configs round trip")
check(entries["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", "a set config reports its source")

# Produce: idempotent, gzip, keys and headers.
p = KafkaProducer(bootstrap_servers=bs, acks="all", compression_type="gzip", enable_idempotence=True)
for i in range(200):
    p.send("py", key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"%d" % i)])
p.flush()
p.close()
tps = [TopicPartition("py", i) for i in range(4)]

# Consume in a group, commit, and read back committed offsets.
c = KafkaConsumer("py", bootstrap_servers=bs, group_id="pyg", auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=10000)
seen = {}
for m in c:
    seen[m.key] = (m.value, dict(m.headers))
    if len(seen) == 200:
        break
check(len(seen) == 200, "the group consumer reads all 200 records")
check(all(v == (b"v" + k[1:], {"h": k[1:]}) for k, v in seen.items()), "keys, values and headers intact")
c.commit()
committed = {tp.partition: c.committed(tp) for tp in c.assignment()}
end = c.end_offsets(tps)
check(all(committed[tp.partition] == end[tp] for tp in tps), "committed offsets equal the end offsets")
check(sum(end.values()) == 200, "end offsets add up to 200")
check(all(v == 0 for v in c.beginning_offsets(tps).values()), "beginning offsets are 0")
times = c.offsets_for_times({tps[0]: 0})
check(times[tps[0]] is not None and times[tps[0]].offset == 0, "offsets_for_times(0) is offset 0")
c.close()

# Group administration.
def group_ids():
    return [g["group_id"] for g in admin.list_groups()]


def group_offsets():
    return admin.list_group_offsets("pyg")["pyg"]


check("pyg" in group_ids(), "list_groups shows the group")
state = admin.describe_groups(["pyg"])["pyg"]["group_state"]
check(state == "Empty", f"the closed group is Empty ({state})")
check(sum(o.offset for o in group_offsets().values()) == 200, "list_group_offsets matches the commits")
admin.alter_group_offsets("pyg", {tps[0]: OffsetAndMetadata(0, "", -1)})
check(group_offsets()[tps[0]].offset == 0, "alter_group_offsets rewinds a partition")
admin.delete_group_offsets("pyg", [tps[1]])
check(tps[1] not in group_offsets(), "delete_group_offsets (OffsetDelete) removes one partition")
admin.delete_groups(["pyg"])
check("pyg" not in group_ids(), "delete_groups removes the group")

# Records and topics.
admin.delete_records({tps[0]: end[tps[0]] // 2})
c2 = KafkaConsumer(bootstrap_servers=bs)
check(c2.beginning_offsets([tps[0]])[tps[0]] == end[tps[0]] // 2, "delete_records moves the log start offset")
c2.close()
admin.delete_topics(["py"])
check("py" not in admin.list_topics(), "delete_topics removes the topic")
admin.close()
print("all kafka-python checks passed")
