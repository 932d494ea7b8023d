//! Partition data replication across `kairos serve` processes: followers fetch from leaders, the
//! HW follows the ISR, `acks=all` waits for it, leaders fail over to in-sync replicas without
//! losing acknowledged records, and the ISR shrinks and heals as followers stop and resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kairos_tests::cluster::{
    create_topic_with, leader_and_isr, live_broker_ids, produce_one, wait_until,
};
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

#[test]
fn isr_shrinks_when_followers_stop_and_heals_when_they_resume() {
    // Five nodes, so the metadata quorum outlives two stopped followers of a three-replica
    // partition.
    let mut c = Cluster::start(5, FAST);
    wait_until(Duration::from_secs(10), "five brokers", || {
        (live_broker_ids(&c.brokers[0])?.len() == 5).then_some(())
    });
    assert_eq!(
        create_topic_with(&c.brokers[0], "isr", 1, 3, &[("min.insync.replicas", "2")]),
        0
    );
    let (leader, replicas) = wait_until(Duration::from_secs(10), "a full ISR", || {
        leader_and_isr(&c.brokers[0], "isr", 0).filter(|(l, isr)| *l > 0 && isr.len() == 3)
    });
    let followers: Vec<i32> = replicas.iter().copied().filter(|r| *r != leader).collect();
    let isr_seen = |c: &mut Cluster| leader_and_isr(c.node(leader), "isr", 0).map(|(_, i)| i);
    assert_eq!(
        produce_one(c.node(leader), "isr", 0, -1, "before"),
        Some((0, 0))
    );

    c.node(followers[0]).signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let mut two = vec![leader, followers[1]];
    two.sort_unstable();
    wait_until(
        Duration::from_secs(5),
        "the ISR without the stopped follower",
        || (isr_seen(&mut c)? == two).then_some(()),
    );
    eprintln!(
        "ISR shrank {:?} after SIGSTOP (replica.lag.time.max.ms=1000)",
        stopped.elapsed()
    );
    // Two in sync of min.insync.replicas=2: acks=all still succeeds.
    assert_eq!(
        produce_one(c.node(leader), "isr", 0, -1, "one stopped"),
        Some((0, 1))
    );

    c.node(followers[1]).signal(libc::SIGSTOP);
    wait_until(Duration::from_secs(5), "the ISR down to the leader", || {
        (isr_seen(&mut c)? == vec![leader]).then_some(())
    });
    // Below min.insync.replicas: refused, not silently accepted...
    let (code, _) = produce_one(c.node(leader), "isr", 0, -1, "refused").unwrap();
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS");
    // ...while acks=1 is still served by the leader alone.
    assert_eq!(
        produce_one(c.node(leader), "isr", 0, 1, "acks=1"),
        Some((0, 2))
    );

    for f in &followers {
        c.node(*f).signal(libc::SIGCONT);
    }
    wait_until(Duration::from_secs(15), "the ISR healed", || {
        (isr_seen(&mut c)? == replicas).then_some(())
    });
    assert_eq!(
        produce_one(c.node(leader), "isr", 0, -1, "healed"),
        Some((0, 3))
    );
}

#[test]
fn a_consumer_group_keeps_consuming_when_its_coordinator_is_killed() {
    let mut c = Cluster::start(3, &[FAST, &["offsets.topic.num.partitions=5"]].concat());
    wait_until(Duration::from_secs(10), "three brokers", || {
        (live_broker_ids(&c.brokers[0])?.len() == 3).then_some(())
    });
    assert_eq!(create_topic_with(&c.brokers[0], "work", 1, 3, &[]), 0);
    let rt = runtime();
    let p = producer(&c);
    let first = send_all(&rt, &p, "work", (0..200).map(|i| format!("w{i}")));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("group.id", "workers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&["work"]).unwrap();
    let mut seen: BTreeMap<i64, String> = BTreeMap::new();
    let mut poll_until = |consumer: &BaseConsumer, want: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < want {
            assert!(
                Instant::now() < deadline,
                "timed out: {what} ({} seen)",
                seen.len()
            );
            if let Some(r) = consumer.poll(Duration::from_millis(100)) {
                let m = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                seen.insert(m.offset(), v);
            }
        }
    };
    poll_until(&consumer, 100, "first half");
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .expect("commit before the kill");
    let coordinator = kairos_tests::cluster::coordinator(&c.brokers[0], "workers").unwrap();
    c.node(coordinator).kill9();
    let killed = Instant::now();
    poll_until(&consumer, 200, "after the coordinator was killed");
    let more = send_all(&rt, &p, "work", (0..100).map(|i| format!("x{i}")));
    poll_until(&consumer, 300, "new records after the kill");
    let mut all = first.clone();
    all.extend(more);
    assert_eq!(seen, all, "every record consumed, at its offset");
    // Commits reach the new coordinator.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "commit after the kill: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    eprintln!(
        "group kept consuming; commit accepted by the new coordinator {:?} after the kill",
        killed.elapsed()
    );
    let new =
        kairos_tests::cluster::coordinator(c.node(if coordinator == 1 { 2 } else { 1 }), "workers")
            .unwrap();
    assert_ne!(new, coordinator);
    let committed = consumer
        .committed(Duration::from_secs(10))
        .expect("committed offsets");
    let offset = committed
        .find_partition("work", 0)
        .map(|e| e.offset())
        .unwrap();
    assert_eq!(offset, rdkafka::Offset::Offset(300));
}
