package dev.kairos;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Kafka's own CLI tools from kafka-tools 4.4 (the classes behind bin/kafka-*.sh) against Kairos. */
class KafkaToolsTest extends OneBrokerTest {
    static String bs;

    @BeforeAll
    static void address() {
        bs = broker.bootstrap();
    }

    private static KafkaTools.Run tool(String cls, String... args) throws Exception {
        return KafkaTools.run(cls, "", args);
    }

    private static List<String> lines(String s) {
        return Arrays.stream(s.split("\n")).map(String::strip).filter(l -> !l.isEmpty()).toList();
    }

    private static final String TOPICS = "org.apache.kafka.tools.TopicCommand";
    private static final String CONFIGS = "org.apache.kafka.tools.ConfigCommand";
    private static final String PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
    private static final String CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";
    private static final String GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";

    @Test
    void kafkaTopicsCreatesListsDescribesAltersAndDeletes() throws Exception {
        // Proves kafka-topics.sh: --create with a config, --list, --describe (partition lines
        // with leader, replicas, ISR), --alter --partitions, and --delete.
        var created = tool(TOPICS, "--bootstrap-server", bs, "--create", "--topic", "tools-t",
                "--partitions", "3", "--replication-factor", "1", "--config", "retention.ms=3600000").ok("create");
        assertEquals("Created topic tools-t.", created.out().strip());
        assertTrue(lines(tool(TOPICS, "--bootstrap-server", bs, "--list").ok("list").out()).contains("tools-t"));
        var described = tool(TOPICS, "--bootstrap-server", bs, "--describe", "--topic", "tools-t").ok("describe");
        List<String> d = lines(described.out());
        assertTrue(d.get(0).startsWith("Topic: tools-t\tTopicId: "), d.get(0));
        assertTrue(d.get(0).contains("PartitionCount: 3\tReplicationFactor: 1\tConfigs: "), d.get(0));
        assertTrue(d.get(0).contains("retention.ms=3600000"), d.get(0));
        for (int p = 0; p < 3; p++) {
            assertEquals("Topic: tools-t\tPartition: " + p + "\tLeader: 1\tReplicas: 1\tIsr: 1\tElr: \tLastKnownElr:",
                    d.get(p + 1), "partition line");
        }
        tool(TOPICS, "--bootstrap-server", bs, "--alter", "--topic", "tools-t", "--partitions", "5").ok("alter");
        Clients.waitUntil("5 partitions", () -> {
            try {
                return lines(tool(TOPICS, "--bootstrap-server", bs, "--describe", "--topic", "tools-t").out()).size() == 6;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        var dup = tool(TOPICS, "--bootstrap-server", bs, "--create", "--topic", "tools-t", "--partitions", "1");
        assertEquals(1, dup.code());
        assertTrue(dup.out().contains("Topic 'tools-t' already exists") || dup.err().contains("already exists"),
                dup.out() + dup.err());
        tool(TOPICS, "--bootstrap-server", bs, "--delete", "--topic", "tools-t").ok("delete");
        Clients.waitUntil("deleted", () -> {
            try {
                return !lines(tool(TOPICS, "--bootstrap-server", bs, "--list").out()).contains("tools-t");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }

    @Test
    void kafkaConfigsAltersAndDescribesTopicAndBrokerConfigs() throws Exception {
        // Proves kafka-configs.sh --alter --add-config / --delete-config and --describe for a topic,
        // and --describe --all for a broker.
        Clients.createTopic(bs, "cfg-tool", 1, Map.of());
        tool(CONFIGS, "--bootstrap-server", bs, "--alter", "--entity-type", "topics", "--entity-name", "cfg-tool",
                "--add-config", "retention.ms=5000,max.message.bytes=2048").ok("alter");
        var out = tool(CONFIGS, "--bootstrap-server", bs, "--describe", "--entity-type", "topics",
                "--entity-name", "cfg-tool").ok("describe").out();
        assertTrue(out.startsWith("Dynamic configs for topic cfg-tool are:"), out);
        assertTrue(out.contains("retention.ms=5000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=5000"), out);
        assertTrue(out.contains("max.message.bytes=2048 sensitive=false"), out);
        tool(CONFIGS, "--bootstrap-server", bs, "--alter", "--entity-type", "topics", "--entity-name", "cfg-tool",
                "--delete-config", "retention.ms").ok("delete-config");
        out = tool(CONFIGS, "--bootstrap-server", bs, "--describe", "--entity-type", "topics",
                "--entity-name", "cfg-tool").ok("describe").out();
        assertTrue(!out.contains("retention.ms=5000"), out);
        var bad = tool(CONFIGS, "--bootstrap-server", bs, "--alter", "--entity-type", "topics",
                "--entity-name", "cfg-tool", "--add-config", "retention.ms=soon");
        assertTrue(bad.code() != 0, "an invalid value fails");
        var brokerAll = tool(CONFIGS, "--bootstrap-server", bs, "--describe", "--entity-type", "brokers",
                "--entity-name", "1", "--all").ok("broker describe").out();
        assertTrue(brokerAll.startsWith("All configs for broker 1 are:"), brokerAll);
        assertTrue(brokerAll.contains("message.max.bytes=1048588 sensitive=false synonyms={DEFAULT_CONFIG:message.max.bytes=1048588}"),
                brokerAll);
    }

    @Test
    void consoleProducerAndConsumerRoundTripKeysAndValues() throws Exception {
        // Proves kafka-console-producer.sh (parse.key) and kafka-console-consumer.sh
        // (--from-beginning, print.key, --max-messages) carry keys and values.
        Clients.createTopic(bs, "console", 1, Map.of());
        KafkaTools.run(PRODUCER, "k1:hello\nk2:world\n", "--bootstrap-server", bs, "--topic", "console",
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:").ok("produce");
        var out = KafkaTools.run(CONSUMER, "", "--bootstrap-server", bs, "--topic", "console", "--from-beginning",
                "--max-messages", "2", "--formatter-property", "print.key=true", "--timeout-ms", "20000").ok("consume");
        assertEquals(List.of("k1\thello", "k2\tworld"), lines(out.out()));
    }

    @Test
    void consumerGroupsDescribeResetAndDelete() throws Exception {
        // Proves kafka-consumer-groups.sh --describe (offsets and lag), --reset-offsets
        // --to-earliest --execute, and --delete on a group with no members.
        Clients.createTopic(bs, "grp-tool", 1, Map.of());
        KafkaTools.run(PRODUCER, "a\nb\nc\n", "--bootstrap-server", bs, "--topic", "grp-tool").ok("produce");
        KafkaTools.run(CONSUMER, "", "--bootstrap-server", bs, "--topic", "grp-tool", "--group", "tool-group",
                "--from-beginning", "--max-messages", "2", "--timeout-ms", "20000").ok("consume");
        var described = tool(GROUPS, "--bootstrap-server", bs, "--describe", "--group", "tool-group").ok("describe");
        String row = lines(described.out()).stream().filter(l -> l.startsWith("tool-group")).findFirst()
                .orElseThrow(() -> new AssertionError(described.out()));
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
        String[] cols = row.split("\\s+");
        assertEquals(List.of("tool-group", "grp-tool", "0", "2", "3", "1"), List.of(cols).subList(0, 6), row);
        var reset = tool(GROUPS, "--bootstrap-server", bs, "--reset-offsets", "--group", "tool-group",
                "--topic", "grp-tool", "--to-earliest", "--execute").ok("reset");
        assertTrue(Pattern.compile("tool-group\\s+grp-tool\\s+0\\s+0").matcher(reset.out()).find(), reset.out());
        var deleted = tool(GROUPS, "--bootstrap-server", bs, "--delete", "--group", "tool-group").ok("delete");
        assertTrue(deleted.out().contains("Deletion of requested consumer groups ('tool-group') was successful."),
                deleted.out());
    }

    @Test
    void getOffsetsDeleteRecordsAndLogDirs() throws Exception {
        // Proves kafka-get-offsets.sh (latest and earliest), kafka-delete-records.sh and
        // kafka-log-dirs.sh --describe.
        Clients.createTopic(bs, "offs-tool", 2, Map.of());
        KafkaTools.run(PRODUCER, "k1:a\nk2:b\nk3:c\nk4:d\n", "--bootstrap-server", bs, "--topic", "offs-tool",
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:").ok("produce");
        var latest = tool("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", bs, "--topic", "offs-tool")
                .ok("get-offsets").out();
        long total = lines(latest).stream().mapToLong(l -> Long.parseLong(l.split(":")[2])).sum();
        assertEquals(4, total, latest);
        Path json = Files.createTempFile("delete-records", ".json");
        Files.writeString(json, "{\"partitions\":[{\"topic\":\"offs-tool\",\"partition\":0,\"offset\":1}],\"version\":1}");
        var del = tool("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", bs,
                "--offset-json-file", json.toString()).ok("delete-records").out();
        assertTrue(del.contains("partition: offs-tool-0\tlow_watermark: 1"), del);
        var earliest = tool("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", bs, "--topic", "offs-tool",
                "--time", "-2").ok("earliest").out();
        assertTrue(lines(earliest).contains("offs-tool:0:1"), earliest);
        var dirs = tool("org.apache.kafka.tools.LogDirsCommand", "--bootstrap-server", bs, "--describe",
                "--broker-list", "1", "--topic-list", "offs-tool").ok("log-dirs").out();
        assertTrue(dirs.contains("\"broker\":1") && dirs.contains("\"partition\":\"offs-tool-0\""), dirs);
    }

    @Test
    void reassignPartitionsAndLeaderElection() throws Exception {
        // Proves kafka-reassign-partitions.sh --execute/--verify and kafka-leader-election.sh
        // (preferred: nothing to elect on one broker) run to completion.
        Clients.createTopic(bs, "move-tool", 1, Map.of());
        Path json = Files.createTempFile("reassign", ".json");
        Files.writeString(json, "{\"version\":1,\"partitions\":[{\"topic\":\"move-tool\",\"partition\":0,\"replicas\":[1]}]}");
        tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", "--bootstrap-server", bs, "--execute",
                "--reassignment-json-file", json.toString()).ok("reassign execute");
        var verify = tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", "--bootstrap-server", bs,
                "--verify", "--reassignment-json-file", json.toString()).ok("reassign verify").out();
        assertTrue(verify.contains("Reassignment of partition move-tool-0 is completed."), verify);
        var elect = tool("org.apache.kafka.tools.LeaderElectionCommand", "--bootstrap-server", bs,
                "--election-type", "preferred", "--topic", "move-tool", "--partition", "0");
        assertTrue(elect.out().contains("Valid replica already elected for partitions move-tool-0"),
                elect.out() + elect.err());
    }

    @Test
    void producerAndConsumerPerfTestsRun() throws Exception {
        // Proves kafka-producer-perf-test.sh and kafka-consumer-perf-test.sh run against Kairos
        // and report every record.
        Clients.createTopic(bs, "perf-tool", 1, Map.of());
        var p = tool("org.apache.kafka.tools.ProducerPerformance", "--topic", "perf-tool", "--num-records", "20000",
                "--record-size", "100", "--throughput", "-1", "--producer-props", "bootstrap.servers=" + bs,
                "acks=1").ok("producer perf").out();
        assertTrue(p.contains("20000 records sent"), p);
        var c = tool("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bs, "--topic", "perf-tool",
                "--num-records", "20000", "--timeout", "30000").ok("consumer perf").out();
        List<String> rows = lines(c);
        assertTrue(rows.get(0).startsWith("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg"),
                rows.get(0));
        String[] cols = rows.get(1).split(",\\s*");
        assertEquals("20000", cols[4], rows.get(1));
    }
}
