package dev.kairos;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.api.Test;

/** Kafka Streams 4.4 (at-least-once) against Kairos. */
class StreamsTest {
    private static final String APP = "word-count";

    @Test
    void aWordCountWithARepartitionAndAStateStoreStaysCorrectAcrossABrokerRestart() throws Exception {
        // A difference from Kafka by design (docs/compatibility.md); KAIROS_JAVA_TARGET=kafka skips it.
        org.junit.jupiter.api.Assumptions.assumeFalse(KairosBroker.againstKafka(), "the reference cannot restart in place");
        // Proves a Streams topology with a repartition topic and a count store (its changelog
        // compacted) counts correctly, and keeps counting correctly after the broker restarts
        // under it: the final count of every word equals its occurrences in both rounds.
        try (KairosBroker broker = KairosBroker.start("num.partitions=2")) {
            Clients.createTopic(broker.bootstrap(), "lines", 2, Map.of());
            Clients.createTopic(broker.bootstrap(), "counts", 2, Map.of());
            Path state = Files.createTempDirectory("kairos-streams-");
            Map<String, Long> seen = new ConcurrentHashMap<>();
            KafkaStreams streams = new KafkaStreams(topology(), props(broker.bootstrap(), state));
            try {
                streams.start();
                Map<String, Long> expected = new HashMap<>();
                produceLines(broker.bootstrap(), "round one", 200, expected);
                awaitCounts(broker.bootstrap(), expected, seen);

                Map<String, String> changelog = describe(broker.bootstrap(), APP + "-word-counts-changelog");
                assertEquals("compact", changelog.get("cleanup.policy"), "changelog is compacted");
                Map<String, String> repartition = describe(broker.bootstrap(), APP + "-by-word-repartition");
                assertEquals("-1", repartition.get("retention.ms"), "repartition topic config");

                // Wait until Streams has committed everything it read (so at-least-once has
                // nothing to replay), then restart the broker under the running application.
                awaitCommitted(broker.bootstrap());
                broker.restart();
                produceLines(broker.bootstrap(), "round two", 200, expected);
                awaitCounts(broker.bootstrap(), expected, seen);
                assertEquals(KafkaStreams.State.RUNNING, streams.state());
            } finally {
                streams.close(Duration.ofSeconds(20));
                streams.cleanUp();
            }
        }
    }

    private static org.apache.kafka.streams.Topology topology() {
        StreamsBuilder b = new StreamsBuilder();
        b.stream("lines", Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.split(" ")))
                // A new key forces a repartition topic before the count.
                .groupBy((key, word) -> word, Grouped.with("by-word", Serdes.String(), Serdes.String()))
                .count(Materialized.as("word-counts"))
                .toStream()
                .to("counts", Produced.with(Serdes.String(), Serdes.Long()));
        return b.build();
    }

    private static Properties props(String bootstrap, Path state) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, APP);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.STATE_DIR_CONFIG, state.toString());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "200");
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, "0");
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        p.put(StreamsConfig.consumerPrefix("session.timeout.ms"), "10000");
        return p;
    }

    private static void produceLines(String bootstrap, String prefix, int n, Map<String, Long> expected)
            throws Exception {
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(bootstrap)) {
            for (int i = 0; i < n; i++) {
                String line = "w" + (i % 7) + " w" + (i % 3) + " " + prefix.replace(' ', '-');
                for (String w : line.split(" ")) {
                    expected.merge(w, 1L, Long::sum);
                }
                p.send(new ProducerRecord<>("lines", null, line.getBytes(StandardCharsets.UTF_8))).get();
            }
        }
    }

    /** Reads "counts" from the beginning until the latest count of every word is as expected. */
    private static void awaitCounts(String bootstrap, Map<String, Long> expected, Map<String, Long> seen)
            throws Exception {
        try (var c = Clients.consumer(bootstrap, null)) {
            var tps = List.of(new org.apache.kafka.common.TopicPartition("counts", 0),
                    new org.apache.kafka.common.TopicPartition("counts", 1));
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
            while (!seen.equals(expected)) {
                assertTrue(System.nanoTime() < deadline, "counts " + seen + " never reached " + expected);
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    String word = new String(r.key(), StandardCharsets.UTF_8);
                    long count = java.nio.ByteBuffer.wrap(r.value()).getLong();
                    seen.put(word, count);
                }
            }
        }
    }

    /** Waits until the application's committed offsets reach the end of every input topic. */
    private static void awaitCommitted(String bootstrap) throws Exception {
        try (Admin admin = Clients.admin(bootstrap)) {
            Clients.waitUntil("Streams committed its input", () -> {
                try {
                    var committed = admin.listConsumerGroupOffsets(APP).partitionsToOffsetAndMetadata().get();
                    var inputs = new HashMap<org.apache.kafka.common.TopicPartition,
                            org.apache.kafka.clients.admin.OffsetSpec>();
                    for (String t : List.of("lines", APP + "-by-word-repartition")) {
                        for (int p = 0; p < 2; p++) {
                            inputs.put(new org.apache.kafka.common.TopicPartition(t, p),
                                    org.apache.kafka.clients.admin.OffsetSpec.latest());
                        }
                    }
                    var ends = admin.listOffsets(inputs).all().get();
                    return ends.entrySet().stream().allMatch(e -> {
                        var c = committed.get(e.getKey());
                        return e.getValue().offset() == 0 || (c != null && c.offset() >= e.getValue().offset());
                    });
                } catch (Exception e) {
                    return false;
                }
            });
        }
    }

    private static Map<String, String> describe(String bootstrap, String topic) throws Exception {
        try (Admin admin = Clients.admin(bootstrap)) {
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config c = admin.describeConfigs(List.of(r)).all().get().get(r);
            Map<String, String> out = new HashMap<>();
            c.entries().forEach(e -> out.put(e.name(), e.value()));
            return out;
        }
    }
}
