package dev.kairos;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The Java AdminClient 4.4 against Kairos: every method whose API Kairos serves. */
class AdminTest extends OneBrokerTest {
    static Admin admin;

    @BeforeAll
    static void connect() {
        admin = Clients.admin(broker.bootstrap());
    }

    @AfterAll
    static void disconnect() {
        admin.close();
    }

    private static <T> Throwable failure(KafkaFuture<T> f) {
        ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(30, TimeUnit.SECONDS));
        return e.getCause();
    }

    private static void produce(String topic, int partition, int n) throws Exception {
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap())) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>(topic, partition, 1000L * (i + 1), null,
                        ("v" + i).getBytes(StandardCharsets.UTF_8)));
            }
            p.flush();
        }
    }

    @Test
    void topicsAreCreatedListedDescribedAndDeleted() throws Exception {
        // Proves createTopics (with configs, validateOnly, duplicate and invalid names),
        // listTopics, describeTopics and deleteTopics.
        admin.createTopics(List.of(new NewTopic("dry-run", 2, (short) 1)),
                new CreateTopicsOptions().validateOnly(true)).all().get();
        assertFalse(admin.listTopics().names().get().contains("dry-run"), "validateOnly creates nothing");
        admin.createTopics(List.of(new NewTopic("admin-t", 3, (short) 1)
                .configs(Map.of("retention.ms", "3600000", "cleanup.policy", "compact")))).all().get();
        assertTrue(admin.listTopics().names().get().contains("admin-t"));
        assertInstanceOf(TopicExistsException.class,
                failure(admin.createTopics(List.of(new NewTopic("admin-t", 1, (short) 1))).all()));
        assertInstanceOf(InvalidTopicException.class,
                failure(admin.createTopics(List.of(new NewTopic("bad/name", 1, (short) 1))).all()));
        TopicDescription d = admin.describeTopics(List.of("admin-t")).allTopicNames().get().get("admin-t");
        assertEquals(3, d.partitions().size());
        assertEquals(1, d.partitions().get(0).replicas().size());
        assertFalse(d.isInternal());
        assertTrue(d.topicId() != null);
        admin.deleteTopics(List.of("admin-t")).all().get();
        Clients.waitUntil("admin-t gone", () -> {
            try {
                return !admin.listTopics().names().get().contains("admin-t");
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertInstanceOf(UnknownTopicOrPartitionException.class,
                failure(admin.describeTopics(List.of("admin-t")).allTopicNames()));
    }

    @Test
    void topicAndBrokerConfigsAreDescribedAndAltered() throws Exception {
        // Proves describeConfigs for a topic (dynamic and default sources) and a broker, and
        // incrementalAlterConfigs SET/DELETE with an invalid value refused as INVALID_CONFIG.
        admin.createTopics(List.of(new NewTopic("cfg", 1, (short) 1).configs(Map.of("retention.ms", "60000"))))
                .all().get();
        ConfigResource topic = new ConfigResource(ConfigResource.Type.TOPIC, "cfg");
        Config c = admin.describeConfigs(List.of(topic)).all().get().get(topic);
        assertEquals("60000", c.get("retention.ms").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source());
        assertEquals("delete", c.get("cleanup.policy").value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("cleanup.policy").source());
        admin.incrementalAlterConfigs(Map.of(topic, List.of(
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all().get();
        c = admin.describeConfigs(List.of(topic)).all().get().get(topic);
        assertEquals("2000", c.get("max.message.bytes").value());
        assertEquals("604800000", c.get("retention.ms").value());
        assertInstanceOf(InvalidConfigurationException.class, failure(admin.incrementalAlterConfigs(Map.of(topic,
                List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET)))).all()));

        ConfigResource brokerRes = new ConfigResource(ConfigResource.Type.BROKER, "1");
        Config bc = admin.describeConfigs(List.of(brokerRes)).all().get().get(brokerRes);
        assertEquals("1048588", bc.get("message.max.bytes").value());
        assertTrue(bc.get("log.dirs") != null || bc.get("log.dir") != null, "log dirs described");
    }

    @Test
    void partitionsAreAddedButNeverRemoved() throws Exception {
        // Proves createPartitions grows a topic and refuses a smaller count with
        // INVALID_PARTITIONS.
        admin.createTopics(List.of(new NewTopic("grow", 2, (short) 1))).all().get();
        admin.createPartitions(Map.of("grow", NewPartitions.increaseTo(5))).all().get();
        Clients.waitUntil("5 partitions", () -> {
            try {
                return admin.describeTopics(List.of("grow")).allTopicNames().get().get("grow").partitions().size() == 5;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        assertInstanceOf(InvalidPartitionsException.class,
                failure(admin.createPartitions(Map.of("grow", NewPartitions.increaseTo(3))).all()));
    }

    @Test
    void recordsAreDeletedAndOffsetsListed() throws Exception {
        // Proves deleteRecords moves the log start offset and listOffsets answers earliest,
        // latest, max-timestamp and by-timestamp specs.
        admin.createTopics(List.of(new NewTopic("offs", 1, (short) 1))).all().get();
        produce("offs", 0, 10);
        TopicPartition tp = new TopicPartition("offs", 0);
        var low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp).get();
        assertEquals(4, low.lowWatermark());
        Function<OffsetSpec, Long> list = spec -> {
            try {
                return admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get().offset();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        };
        assertEquals(4L, list.apply(OffsetSpec.earliest()));
        assertEquals(10L, list.apply(OffsetSpec.latest()));
        assertEquals(9L, list.apply(OffsetSpec.maxTimestamp()));
        assertEquals(6L, list.apply(OffsetSpec.forTimestamp(6500)));
        assertEquals(-1L, list.apply(OffsetSpec.forTimestamp(99_000)));
    }

    @Test
    void theClusterAndItsFeaturesAreDescribed() throws Exception {
        // Proves describeCluster (one node, id 1, a controller, a cluster id) and describeFeatures.
        var cluster = admin.describeCluster();
        assertEquals(1, cluster.nodes().get().size());
        assertEquals(1, cluster.nodes().get().iterator().next().id());
        assertFalse(cluster.clusterId().get().isEmpty());
        assertEquals(1, cluster.controller().get().id());
        // Kairos finalizes no Kafka feature levels (docs/compatibility.md): in particular no
        // transaction.version, so producers do not try transactions v2.
        var features = admin.describeFeatures().featureMetadata().get();
        if (!KairosBroker.againstKafka()) {
            assertEquals(Map.of(), features.finalizedFeatures());
        }
    }

    @Test
    void consumerGroupsAreListedDescribedResetAndDeleted() throws Exception {
        // Proves listGroups/describeConsumerGroups, listConsumerGroupOffsets,
        // alterConsumerGroupOffsets, deleteConsumerGroupOffsets and deleteConsumerGroups.
        admin.createTopics(List.of(new NewTopic("grp-t", 2, (short) 1))).all().get();
        produce("grp-t", 0, 5);
        try (var c = Clients.consumer(broker.bootstrap(), "admin-group")) {
            c.subscribe(List.of("grp-t"));
            Clients.poll(c, 5);
            c.commitSync();
            var d = admin.describeConsumerGroups(List.of("admin-group")).all().get().get("admin-group");
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals(1, d.members().size());
            assertEquals(2, d.members().iterator().next().assignment().topicPartitions().size());
        }
        assertTrue(admin.listGroups().all().get().stream().anyMatch(g -> g.groupId().equals("admin-group")));
        TopicPartition p0 = new TopicPartition("grp-t", 0);
        Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets("admin-group").partitionsToOffsetAndMetadata().get();
        assertEquals(5, offsets.get(p0).offset());
        admin.alterConsumerGroupOffsets("admin-group", Map.of(p0, new OffsetAndMetadata(2))).all().get();
        assertEquals(2, admin.listConsumerGroupOffsets("admin-group").partitionsToOffsetAndMetadata().get()
                .get(p0).offset());
        admin.deleteConsumerGroupOffsets("admin-group", Set.of(p0)).all().get();
        assertFalse(admin.listConsumerGroupOffsets("admin-group").partitionsToOffsetAndMetadata().get()
                .containsKey(p0));
        admin.deleteConsumerGroups(List.of("admin-group")).all().get();
        assertFalse(admin.listGroups().all().get().stream().anyMatch(g -> g.groupId().equals("admin-group")));
    }

    @Test
    void leaderElectionAndReassignmentsAnswerOnASingleBroker() throws Exception {
        // Proves electLeaders (preferred: ELECTION_NOT_NEEDED when the preferred leader leads),
        // alterPartitionReassignments to the same replica and listPartitionReassignments.
        admin.createTopics(List.of(new NewTopic("elect", 1, (short) 1))).all().get();
        TopicPartition tp = new TopicPartition("elect", 0);
        var elected = admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).partitions().get();
        Optional<Throwable> err = elected.get(tp);
        assertTrue(err.isPresent() && err.get() instanceof ElectionNotNeededException, "" + elected);
        admin.alterPartitionReassignments(Map.of(tp, Optional.of(new NewPartitionReassignment(List.of(1)))))
                .all().get();
        Clients.waitUntil("no reassignment in progress", () -> {
            try {
                return admin.listPartitionReassignments().reassignments().get().isEmpty();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }

    @Test
    void logDirsAndProducersAreDescribed() throws Exception {
        // Proves describeLogDirs reports the partition's size and describeReplicaLogDirs-free
        // describeProducers lists an idempotent producer of a partition.
        admin.createTopics(List.of(new NewTopic("dirs", 1, (short) 1))).all().get();
        produce("dirs", 0, 3);
        var dirs = admin.describeLogDirs(List.of(1)).allDescriptions().get().get(1);
        assertEquals(1, dirs.size(), "one log dir: " + dirs.keySet());
        var info = dirs.values().iterator().next().replicaInfos().get(new TopicPartition("dirs", 0));
        assertTrue(info != null && info.size() > 0, "replica info: " + info);
        var producers = admin.describeProducers(List.of(new TopicPartition("dirs", 0))).all().get();
        assertEquals(1, producers.get(new TopicPartition("dirs", 0)).activeProducers().size());
    }

    @Test
    void unservedApisFailAtOnceWithUnsupportedVersion() throws Exception {
        // A difference from Kafka by design (docs/compatibility.md); KAIROS_JAVA_TARGET=kafka skips it.
        org.junit.jupiter.api.Assumptions.assumeFalse(KairosBroker.againstKafka(), "Kafka serves these APIs");
        // Proves an Admin method whose API Kairos does not serve throws
        // UnsupportedVersionException quickly: never a hang, never a dropped connection.
        long started = System.nanoTime();
        assertInstanceOf(UnsupportedVersionException.class, failure(admin.describeAcls(AclBindingFilter.ANY).values()));
        assertInstanceOf(UnsupportedVersionException.class,
                failure(admin.describeClientQuotas(ClientQuotaFilter.all()).entities()));
        assertInstanceOf(UnsupportedVersionException.class,
                failure(admin.describeUserScramCredentials().all()));
        assertInstanceOf(UnsupportedVersionException.class, failure(admin.listTransactions().all()));
        assertTrue(System.nanoTime() - started < Duration.ofSeconds(10).toNanos(), "at once");
        // The connection still serves.
        assertEquals(1, admin.describeCluster().nodes().get().size());
    }
}
