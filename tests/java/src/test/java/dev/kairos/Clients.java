package dev.kairos;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** Java clients configured for a bootstrap address, and small waiting helpers. */
final class Clients {
    static final Duration WAIT = Duration.ofSeconds(30);

    private Clients() {}

    static KafkaProducer<byte[], byte[]> producer(String bootstrap, Object... props) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        put(p, props);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap, String group, Object... props) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        put(p, props);
        return new KafkaConsumer<>(p);
    }

    static Admin admin(String bootstrap, Object... props) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        put(p, props);
        return Admin.create(p);
    }

    private static void put(Properties p, Object[] props) {
        if (props.length % 2 != 0) {
            throw new IllegalArgumentException("props come in key, value pairs");
        }
        for (int i = 0; i < props.length; i += 2) {
            p.put(String.valueOf(props[i]), String.valueOf(props[i + 1]));
        }
    }

    static void createTopic(String bootstrap, String name, int partitions, Map<String, String> configs)
            throws Exception {
        try (Admin admin = admin(bootstrap)) {
            admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                    .all().get();
        }
    }

    /** Assigns every partition of {@code topic} from the beginning and reads {@code count} records. */
    static List<ConsumerRecord<byte[], byte[]>> readAll(String bootstrap, String topic, int count)
            throws Exception {
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, null)) {
            List<TopicPartition> tps = new ArrayList<>();
            c.partitionsFor(topic, WAIT).forEach(pi -> tps.add(new TopicPartition(topic, pi.partition())));
            c.assign(tps);
            c.seekToBeginning(tps);
            return poll(c, count);
        }
    }

    /** Polls until {@code count} records arrived; fails after {@link #WAIT} without them. */
    static List<ConsumerRecord<byte[], byte[]>> poll(KafkaConsumer<byte[], byte[]> c, int count) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (out.size() < count) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("got " + out.size() + " of " + count + " records");
            }
            c.poll(Duration.ofMillis(100)).forEach(out::add);
        }
        return out;
    }

    static void waitUntil(String what, BooleanSupplier f) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!f.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    static byte[] bytes(String s) {
        return s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    }

    static Set<TopicPartition> partitions(String topic, int n) {
        Set<TopicPartition> s = new java.util.HashSet<>();
        for (int i = 0; i < n; i++) {
            s.add(new TopicPartition(topic, i));
        }
        return s;
    }
}
