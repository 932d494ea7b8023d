//! Partition data replication across `kairos serve` processes: followers fetch from leaders, the
//! HW follows the ISR, `acks=all` waits for it, leaders fail over to in-sync replicas without
//! losing acknowledged records, and the ISR shrinks and heals as followers stop and resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kairos_tests::cluster::{create_topic_with, leader_and_isr, live_broker_ids, wait_until};
use kairos_tests::Cluster;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Fast sessions, elections and ISR changes so failures show within a second or two.
const FAST: &[&str] = &[
    "broker.session.timeout.ms=2000",
    "broker.heartbeat.interval.ms=200",
    "controller.quorum.election.timeout.ms=1000",
    "replica.lag.time.max.ms=1000",
];

fn producer(c: &Cluster) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Sends `values` to `topic`-0 one after another; returns offset -> value of each ack.
fn send_all(
    rt: &tokio::runtime::Runtime,
    p: &FutureProducer,
    topic: &str,
    values: impl Iterator<Item = String>,
) -> BTreeMap<i64, String> {
    let mut acked = BTreeMap::new();
    for v in values {
        let d = rt
            .block_on(p.send(
                FutureRecord::to(topic).key(&v).payload(&v).partition(0),
                Duration::from_secs(30),
            ))
            .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"));
        assert!(
            acked.insert(d.offset, v.clone()).is_none(),
            "offset {} acknowledged twice",
            d.offset
        );
    }
    acked
}

/// Every record of `topic`-0 from the beginning, offset -> value, once `expected` are read.
fn consume_all(c: &Cluster, topic: &str, expected: usize) -> BTreeMap<i64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            assert!(
                got.insert(m.offset(), v).is_none(),
                "offset {} read twice",
                m.offset()
            );
        }
    }
    got
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn acknowledged_records_survive_leader_kills() {
    let mut c = Cluster::start(3, FAST);
    wait_until(Duration::from_secs(10), "three brokers", || {
        (live_broker_ids(&c.brokers[0])?.len() == 3).then_some(())
    });
    assert_eq!(
        create_topic_with(
            &c.brokers[0],
            "orders",
            1,
            3,
            &[("min.insync.replicas", "2")]
        ),
        0
    );
    let full = |c: &Cluster| {
        wait_until(Duration::from_secs(10), "a leader and a full ISR", || {
            leader_and_isr(&c.brokers[0], "orders", 0)
                .filter(|(l, isr)| *l > 0 && isr == &[1, 2, 3])
        })
        .0
    };
    let rt = runtime();
    let p = producer(&c);
    let mut acked = send_all(&rt, &p, "orders", (0..300).map(|i| format!("a{i}")));
    for round in 0..2 {
        let leader = full(&c);
        c.node(leader).kill9();
        let killed = Instant::now();
        let more = send_all(&rt, &p, "orders", (0..300).map(|i| format!("r{round}-{i}")));
        eprintln!(
            "round {round}: leader {leader} killed; 300 records acknowledged by the new leader {:?} later",
            killed.elapsed()
        );
        acked.extend(more);
        c.node(leader).restart();
    }
    full(&c);
    assert_eq!(acked.len(), 900);
    let got = consume_all(&c, "orders", acked.len());
    assert_eq!(got, acked, "every acknowledged record once, at its offset");
    // Every replica holds the same log: whichever leads, the data is the same.
    let first = *acked.keys().next().unwrap();
    assert_eq!(first, 0);
    assert_eq!(*acked.keys().last().unwrap(), 899);
}
