package dev.kairos;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.utils.Utils;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The Java producer 4.4 against Kairos: acks, idempotence, codecs, headers, sizes, partitioning. */
class ProducerTest extends OneBrokerTest {

    @ParameterizedTest
    @ValueSource(strings = {"0", "1", "all"})
    void everyAcksSettingDeliversEveryRecordInOrder(String acks) throws Exception {
        // Proves acks=0/1/all each deliver 200 records to one partition in send order; acks=0
        // answers offset -1 (no response), the others the record's offset.
        String topic = "acks-" + acks;
        Clients.createTopic(broker.bootstrap(), topic, 1, Map.of());
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap(), "acks", acks,
                "enable.idempotence", acks.equals("all") ? "true" : "false")) {
            for (int i = 0; i < 200; i++) {
                sent.add(p.send(new ProducerRecord<>(topic, Clients.bytes("k" + i), Clients.bytes("v" + i))));
            }
            p.flush();
        }
        for (int i = 0; i < sent.size(); i++) {
            long offset = sent.get(i).get().offset();
            assertEquals(acks.equals("0") ? -1 : i, offset, "record " + i);
        }
        List<ConsumerRecord<byte[], byte[]>> got = Clients.readAll(broker.bootstrap(), topic, 200);
        for (int i = 0; i < 200; i++) {
            assertEquals(i, got.get(i).offset());
            assertEquals("v" + i, new String(got.get(i).value(), StandardCharsets.UTF_8));
        }
    }

    @Test
    void idempotenceIsOnByDefaultAndGetsAProducerId() throws Exception {
        // Proves the default producer (enable.idempotence=true, acks=all) works: InitProducerId
        // answers, and the stored batches carry a producer id with sequences from 0.
        String topic = "idempotent-default";
        Clients.createTopic(broker.bootstrap(), topic, 1, Map.of());
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap())) {
            for (int i = 0; i < 50; i++) {
                p.send(new ProducerRecord<>(topic, Clients.bytes("v" + i))).get();
            }
        }
        try (var admin = Clients.admin(broker.bootstrap())) {
            var producers = admin.describeProducers(List.of(new org.apache.kafka.common.TopicPartition(topic, 0)))
                    .all().get();
            var states = producers.get(new org.apache.kafka.common.TopicPartition(topic, 0)).activeProducers();
            assertEquals(1, states.size(), "one idempotent producer: " + states);
            assertTrue(states.get(0).producerId() >= 0);
            assertEquals(49, states.get(0).lastSequence());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCodecRoundTripsKeysValuesAndHeaders(String codec) throws Exception {
        // Proves each compression codec's batches are stored and fetched intact, with keys,
        // null values and repeated headers.
        String topic = "codec-" + codec;
        Clients.createTopic(broker.bootstrap(), topic, 1, Map.of());
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap(),
                "compression.type", codec, "linger.ms", "20", "batch.size", "65536")) {
            for (int i = 0; i < 300; i++) {
                List<Header> headers = List.of(new RecordHeader("trace", Clients.bytes("t" + i)),
                        new RecordHeader("trace", Clients.bytes("again")), new RecordHeader("empty", null));
                byte[] value = i % 10 == 0 ? null : Clients.bytes("value-" + i + "-" + "x".repeat(i));
                p.send(new ProducerRecord<>(topic, null, Clients.bytes("key-" + i), value, headers));
            }
            p.flush();
        }
        List<ConsumerRecord<byte[], byte[]>> got = Clients.readAll(broker.bootstrap(), topic, 300);
        for (int i = 0; i < 300; i++) {
            ConsumerRecord<byte[], byte[]> r = got.get(i);
            assertArrayEquals(Clients.bytes("key-" + i), r.key());
            if (i % 10 == 0) {
                assertEquals(null, r.value());
            } else {
                assertArrayEquals(Clients.bytes("value-" + i + "-" + "x".repeat(i)), r.value());
            }
            Header[] hs = r.headers().toArray();
            assertEquals(3, hs.length);
            assertEquals("trace", hs[0].key());
            assertArrayEquals(Clients.bytes("t" + i), hs[0].value());
            assertArrayEquals(Clients.bytes("again"), hs[1].value());
            assertEquals(null, hs[2].value());
        }
    }

    @Test
    void recordsNearTheLimitPassAndLargerOnesFailWithRecordTooLarge() throws Exception {
        // Proves a record just under the topic's max.message.bytes is accepted and read back,
        // and one above it fails with RecordTooLargeException (MESSAGE_TOO_LARGE from the broker,
        // the producer's own max.request.size raised so the broker decides).
        String topic = "sizes";
        int limit = 100_000;
        Clients.createTopic(broker.bootstrap(), topic, 1, Map.of("max.message.bytes", String.valueOf(limit)));
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap(),
                "max.request.size", "10000000", "compression.type", "none")) {
            byte[] near = new byte[limit - 200];
            Arrays.fill(near, (byte) 7);
            assertEquals(0, p.send(new ProducerRecord<>(topic, near)).get().offset());
            byte[] over = new byte[limit + 1];
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> p.send(new ProducerRecord<>(topic, over)).get());
            assertInstanceOf(RecordTooLargeException.class, e.getCause());
            // The partition still works afterwards.
            assertEquals(1, p.send(new ProducerRecord<>(topic, Clients.bytes("after"))).get().offset());
        }
        List<ConsumerRecord<byte[], byte[]>> got = Clients.readAll(broker.bootstrap(), topic, 2);
        assertEquals(limit - 200, got.get(0).value().length);
        assertArrayEquals(Clients.bytes("after"), got.get(1).value());
    }

    @Test
    void theBrokerDefaultMessageMaxBytesAdmitsAMegabyteRecord() throws Exception {
        // Proves the broker's default message.max.bytes (1048588) accepts a record that fills the
        // producer's default max.request.size (1048576) less batch overhead.
        String topic = "default-limit";
        Clients.createTopic(broker.bootstrap(), topic, 1, Map.of());
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap(), "compression.type", "none")) {
            byte[] v = new byte[1_048_576 - 200];
            assertEquals(0, p.send(new ProducerRecord<>(topic, v)).get().offset());
        }
    }

    @Test
    void theDefaultPartitionerPlacesKeysByMurmur2() throws Exception {
        // Proves keyed records land where Kafka's default partitioner puts them
        // (murmur2(key) mod partitions), so Kairos and Kafka agree on key placement.
        String topic = "partitioned";
        int n = 6;
        Clients.createTopic(broker.bootstrap(), topic, n, Map.of());
        Map<String, Integer> placed = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker.bootstrap())) {
            for (int i = 0; i < 100; i++) {
                String key = "order-" + i;
                RecordMetadata md = p.send(new ProducerRecord<>(topic, Clients.bytes(key), Clients.bytes("v"))).get();
                placed.put(key, md.partition());
            }
        }
        for (var e : placed.entrySet()) {
            int expected = Utils.toPositive(Utils.murmur2(Clients.bytes(e.getKey()))) % n;
            assertEquals(expected, e.getValue(), e.getKey());
        }
    }
}
