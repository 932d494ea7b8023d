//! Partition data replication across `kairos serve` processes: followers fetch from leaders, the
//! HW follows the ISR, `acks=all` waits for it, leaders fail over to in-sync replicas without
//! losing acknowledged records, and the ISR shrinks and heals as followers stop and resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kairos_tests::cluster::{
    create_topic_with, in_sync_leader, leader_and_isr, poll_until, produce_one, wait_registered,
    wait_until,
};
use kairos_tests::{Broker, Cluster};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The fixtures' FAST sessions and elections, and fast ISR changes.
const FAST: &[&str] = &[
    kairos_tests::cluster::FAST[0],
    kairos_tests::cluster::FAST[1],
    kairos_tests::cluster::FAST[2],
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

/// Reads `partitions` of `topic` from the beginning up to their high watermarks and asserts the
/// log is exactly the acknowledged records: each at its acknowledged offset, none twice, nothing
/// else (the high watermarks add up to the acknowledged count).
fn assert_log_is_exactly(
    c: &Cluster,
    topic: &str,
    partitions: i32,
    acked: &BTreeMap<(i32, i64), String>,
) {
    let consumer = read_from_start(c, &[(topic, partitions)]);
    let ends: BTreeMap<i32, i64> = (0..partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect();
    assert_eq!(
        ends.values().sum::<i64>(),
        acked.len() as i64,
        "records in the log {ends:?} vs acknowledged"
    );
    let mut got: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut values = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "read {} of {}",
            got.len(),
            acked.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            assert!(values.insert(v.clone()), "{v} stored twice");
            assert!(
                got.insert((m.partition(), m.offset()), v).is_none(),
                "offset read twice"
            );
        }
    }
    assert_eq!(&got, acked, "every acknowledged record once, at its offset");
}

/// `n` nodes with FAST settings, all registered, and topic `name` (RF=3, min.insync.replicas=2).
fn cluster_with_topic(n: usize, overrides: &[&str], name: &str, partitions: i32) -> Cluster {
    let c = Cluster::start(n, &[FAST, overrides].concat());
    wait_registered(&c);
    let configs = [("min.insync.replicas", "2")];
    assert_eq!(
        create_topic_with(&c.brokers[0], name, partitions, 3, &configs),
        0
    );
    c
}

/// A consumer reading `partitions` of each topic from the beginning (no group membership).
fn read_from_start(c: &Cluster, topics: &[(&str, i32)]) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("group.id", "verify")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Calls `send` for records 0..`total`; from the middle on, paced, it SIGKILLs `victim` as soon
/// as the victim's /metrics shows a `forwarded` counter above zero (it is forwarding what it
/// leads), so the kill lands mid-way through forwarding. Returns the record index of the kill.
fn send_killing(
    c: &mut Cluster,
    victim: i32,
    total: usize,
    forwarded: &str,
    mut send: impl FnMut(usize),
) -> usize {
    let forwarding = |b: &Broker| {
        let (_, scrape) = kairos_tests::http_get(&format!("{}/metrics", b.metrics_url()));
        scrape
            .lines()
            .filter(|l| l.starts_with(forwarded))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            > 0.0
    };
    let mut killed_at = None;
    for i in 0..total {
        if killed_at.is_none() && i >= total / 2 && forwarding(c.node(victim)) {
            c.node(victim).kill9();
            killed_at = Some(i);
        }
        send(i);
        if killed_at.is_none() && i >= total / 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    killed_at.expect("the victim forwarded something before the last record: the kill happened")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn acknowledged_records_survive_leader_kills() {
    let mut c = cluster_with_topic(3, &[], "orders", 1);
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
        acked.extend(send_all(
            &rt,
            &p,
            "orders",
            [format!("r{round}-first")].into_iter(),
        ));
        let failover = killed.elapsed();
        let more = send_all(&rt, &p, "orders", (0..299).map(|i| format!("r{round}-{i}")));
        eprintln!(
            "round {round}: leader {leader} killed; first record acknowledged {failover:?} later, 299 more in {:?}",
            killed.elapsed() - failover
        );
        acked.extend(more);
        c.node(leader).restart();
    }
    full(&c);
    assert_eq!(acked.len(), 900);
    // The acknowledged offsets are dense: no offset was handed out twice or skipped.
    assert_eq!(*acked.keys().next().unwrap(), 0);
    assert_eq!(*acked.keys().last().unwrap(), 899);
    let acked = acked.into_iter().map(|(o, v)| ((0, o), v)).collect();
    assert_log_is_exactly(&c, "orders", 1, &acked);
}

#[test]
fn isr_shrinks_when_followers_stop_and_heals_when_they_resume() {
    // Five nodes, so the metadata quorum outlives two stopped followers of a three-replica
    // partition.
    let mut c = cluster_with_topic(5, &[], "isr", 1);
    let (leader, replicas) = wait_until(Duration::from_secs(10), "a full ISR", || {
        leader_and_isr(&c.brokers[0], "isr", 0).filter(|(l, isr)| *l > 0 && isr.len() == 3)
    });
    let followers: Vec<i32> = replicas.iter().copied().filter(|r| *r != leader).collect();
    let isr_seen = |c: &mut Cluster| leader_and_isr(c.node(leader), "isr", 0).map(|(_, i)| i);
    // The leader itself may apply the metadata a Raft heartbeat after the node asked above
    // (NOT_LEADER_OR_FOLLOWER until then); nothing is appended by a refused attempt.
    let first = wait_until(
        Duration::from_secs(5),
        "the leader to take acks=all",
        || match produce_one(c.node(leader), "isr", 0, -1, "before") {
            Some((0, offset)) => Some(offset),
            _ => None,
        },
    );
    assert_eq!(first, 0);

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
    // Through the current leader, as a client would after NOT_LEADER_OR_FOLLOWER: on this
    // loaded machine two stopped nodes out of five can cost a controller election, and the
    // partition may have moved meanwhile.
    let (now_leader, offset) = wait_until(Duration::from_secs(10), "acks=all once healed", || {
        let (l, _) = leader_and_isr(&c.brokers[0], "isr", 0)?;
        match produce_one(c.node(l), "isr", 0, -1, "healed") {
            Some((0, offset)) => Some((l, offset)),
            _ => None,
        }
    });
    if now_leader != leader {
        eprintln!("isr-0 moved from broker {leader} to {now_leader} while followers were stopped");
    }
    assert_eq!(offset, 3);
}

#[test]
fn a_consumer_group_keeps_consuming_when_its_coordinator_is_killed() {
    let mut c = cluster_with_topic(3, &["offsets.topic.num.partitions=5"], "work", 1);
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
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                    seen.insert(m.offset(), v);
                }
                // librdkafka reports the lost connection to the killed broker as an event; it
                // is not fatal (the consumer goes on by itself).
                Some(Err(e)) => eprintln!("{what}: consumer event: {e}"),
                None => {}
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

/// What a background producer saw: acknowledged (partition, offset) -> value, and failures.
#[derive(Default)]
struct Load {
    acked: BTreeMap<(i32, i64), String>,
    failed: Vec<(String, String)>,
    sent: u64,
}

/// A producer thread started by [`steady_load`].
struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    load: std::sync::Arc<std::sync::Mutex<Load>>,
    thread: std::thread::JoinHandle<()>,
    started: Instant,
}

impl SteadyLoad {
    /// Acknowledged records so far (on `partition`, or all).
    fn acked(&self, partition: Option<i32>) -> usize {
        let l = self.load.lock().unwrap();
        l.acked
            .keys()
            .filter(|(p, _)| partition.is_none_or(|want| *p == want))
            .count()
    }

    /// Stops producing, waits for every delivery report, and asserts none failed.
    fn finish(self) -> Load {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("producer thread");
        let load = std::mem::take(&mut *self.load.lock().unwrap());
        eprintln!(
            "{} records sent, {} acknowledged, {} failed in {:?}",
            load.sent,
            load.acked.len(),
            load.failed.len(),
            self.started.elapsed()
        );
        assert!(
            load.failed.is_empty(),
            "failed deliveries: {:?}",
            &load.failed[..load.failed.len().min(5)]
        );
        load
    }
}

/// Produces to `topic` until finished: ten records every 5 ms, three in five to partition 0
/// (the busiest), the rest spread over partitions 1 and 2, many in flight (idempotent,
/// acks=all).
fn steady_load(bootstrap: String, topic: &'static str) -> SteadyLoad {
    use futures::StreamExt;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = std::sync::Arc::new(std::sync::Mutex::new(Load::default()));
    let (stop2, load2) = (stop.clone(), load.clone());
    let thread = std::thread::spawn(move || {
        let (stop, load) = (stop2, load2);
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .create()
            .expect("producer");
        let rt = runtime();
        rt.block_on(async {
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut i = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for _ in 0..10 {
                    let v = format!("m{i}");
                    let partition = match i % 5 {
                        0..=2 => 0,
                        3 => 1,
                        _ => 2,
                    };
                    i += 1;
                    let record = FutureRecord::to(topic)
                        .key(&v)
                        .payload(&v)
                        .partition(partition);
                    match p.send_result(record) {
                        Ok(f) => inflight.push(async move { (v, f.await) }),
                        Err((e, _)) => panic!("enqueue {v}: {e}"),
                    }
                }
                load.lock().unwrap().sent = i;
                loop {
                    tokio::select! {
                        _ = tick.tick() => break,
                        Some((v, r)) = inflight.next() => record_delivery(&load, v, r),
                    }
                }
            }
            while let Some((v, r)) = inflight.next().await {
                record_delivery(&load, v, r);
            }
        });
    });
    SteadyLoad {
        stop,
        load,
        thread,
        started: Instant::now(),
    }
}

fn record_delivery(
    load: &std::sync::Mutex<Load>,
    v: String,
    r: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) {
    let mut l = load.lock().unwrap();
    match r {
        Ok(Ok(d)) => {
            if let Some(old) = l.acked.insert((d.partition, d.offset), v.clone()) {
                panic!(
                    "{v} and {old} both acknowledged at {}-{}",
                    d.partition, d.offset
                );
            }
        }
        Ok(Err((e, _))) => l.failed.push((v, e.to_string())),
        Err(_) => l.failed.push((v, "delivery canceled".into())),
    }
}

#[test]
fn twenty_leader_kills_under_acks_all_lose_and_duplicate_nothing() {
    let mut c = cluster_with_topic(3, &[], "load", 3);
    let full = |c: &mut Cluster| {
        wait_until(
            Duration::from_secs(20),
            "partition 0 led with a full ISR",
            || {
                (1..=3).find_map(|id| {
                    leader_and_isr(c.node(id), "load", 0)
                        .filter(|(l, isr)| *l > 0 && isr == &[1, 2, 3])
                })
            },
        )
        .0
    };
    full(&mut c);
    let load = steady_load(c.bootstrap(), "load");
    for round in 0..20 {
        let leader = full(&mut c);
        let before = load.acked(Some(0));
        let controller = kairos_tests::cluster::metadata(c.node(leader)).map(|m| m.controller_id.0);
        c.node(leader).kill9();
        let killed = Instant::now();
        // Producing resumes on the new leader.
        wait_until(
            Duration::from_secs(10),
            "acknowledgements after the kill",
            || (load.acked(Some(0)) > before + 50).then_some(()),
        );
        eprintln!(
            "kill {round}: broker {leader} (controller {controller:?}); acknowledgements flowing again after {:?}",
            killed.elapsed()
        );
        c.node(leader).restart();
    }
    full(&mut c);
    let load = load.finish();
    assert_log_is_exactly(&c, "load", 3, &load.acked);
}

#[test]
fn rolling_sigterm_restart_under_acks_all_load_loses_nothing() {
    // Sessions outlive the test: leadership can only have moved by the controlled shutdown.
    let mut c = cluster_with_topic(3, &["broker.session.timeout.ms=30000"], "rolling", 3);
    let all_full = |c: &mut Cluster| {
        wait_until(
            Duration::from_secs(20),
            "every partition led with a full ISR",
            || {
                (0..3)
                    .all(|p| {
                        leader_and_isr(c.node(1), "rolling", p)
                            .is_some_and(|(l, isr)| l > 0 && isr == [1, 2, 3])
                    })
                    .then_some(())
            },
        )
    };
    all_full(&mut c);
    let load = steady_load(c.bootstrap(), "rolling");
    for id in 1..=3 {
        let before = load.acked(None);
        wait_until(Duration::from_secs(10), "load flowing", || {
            (load.acked(None) > before + 200).then_some(())
        });
        let started = Instant::now();
        assert_eq!(
            c.node(id).stop(),
            Some(0),
            "broker {id} exit code after SIGTERM"
        );
        eprintln!(
            "broker {id}: controlled shutdown took {:?}",
            started.elapsed()
        );
        // Leadership moved before it exited: the others lead everything. (Another node's view
        // may trail the committed change by a Raft heartbeat, hence the short wait.)
        let other = if id == 1 { 2 } else { 1 };
        wait_until(
            Duration::from_secs(2),
            "the others leading everything",
            || {
                (0..3)
                    .all(|p| {
                        leader_and_isr(c.node(other), "rolling", p)
                            .is_some_and(|(leader, _)| leader > 0 && leader != id)
                    })
                    .then_some(())
            },
        );
        c.node(id).restart();
        all_full(&mut c);
    }
    let load = load.finish();
    assert_log_is_exactly(&c, "rolling", 3, &load.acked);
}

/// The `kairos.original.partition` and `kairos.original.offset` headers of a forwarded record.
fn origin(m: &rdkafka::message::BorrowedMessage<'_>) -> (i32, i64) {
    use rdkafka::message::Headers;
    let h = m.headers().expect("forwarded records carry headers");
    let get = |name: &str| -> String {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .unwrap_or_else(|| panic!("header {name} missing"))
    };
    (
        get("kairos.original.partition").parse().unwrap(),
        get("kairos.original.offset").parse().unwrap(),
    )
}

#[test]
fn delayed_records_are_forwarded_exactly_once_across_a_leader_kill() {
    // A delay topic and its target, both RF=3 over three brokers: partition leaders are spread,
    // so forwarding writes to targets led elsewhere through their leaders.
    let mut c = cluster_with_topic(3, &[], "orders", 3);
    let configs = [
        ("min.insync.replicas", "2"),
        ("kairos.delay.target", "orders"),
        ("kairos.delay.ms", "1000"),
    ];
    assert_eq!(
        create_topic_with(&c.brokers[0], "orders.delay", 3, 3, &configs),
        0
    );
    let victim = wait_until(
        Duration::from_secs(10),
        "orders.delay-0 fully in sync",
        || in_sync_leader(&c.brokers[0], "orders.delay", 0, 3),
    );
    let rt = runtime();
    let p = producer(&c);
    let mut acked: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let started = Instant::now();
    // Mid-way, while the first due records are being forwarded: SIGKILL the leader of a delay
    // partition. Its successor must finish what it was forwarding, once.
    let forwarded = r#"kairos_delay_forwarded_total{topic="orders.delay"}"#;
    let killed_at = send_killing(&mut c, victim, 900, forwarded, |i| {
        let v = format!("d{i}");
        let d = rt
            .block_on(p.send(
                FutureRecord::to("orders.delay").key(&v).payload(&v),
                Duration::from_secs(30),
            ))
            .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"));
        assert!(acked.insert((d.partition, d.offset), v).is_none());
    });
    eprintln!(
        "900 delayed records acknowledged in {:?}; broker {victim} killed at record {killed_at}",
        started.elapsed()
    );
    c.node(victim).restart();
    // One more record per delay partition, due after every other: forwarding is in due order
    // and a new leader completes an unfinished intent first, so once these three arrive nothing
    // else is owed.
    for partition in 0..3 {
        let v = format!("last-{partition}");
        let d = rt
            .block_on(
                p.send(
                    FutureRecord::to("orders.delay")
                        .key(&v)
                        .payload(&v)
                        .partition(partition),
                    Duration::from_secs(30),
                ),
            )
            .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"));
        acked.insert((d.partition, d.offset), v);
    }
    let consumer = read_from_start(&c, &[("orders", 3)]);
    let mut forwarded: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut lasts = 0;
    poll_until(&consumer, Duration::from_secs(60), |m| {
        if let Some(m) = m {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            lasts += v.starts_with("last-") as usize;
            let from = origin(m);
            assert!(
                forwarded.insert(from, v.clone()).is_none(),
                "{v} (from delay partition {} offset {}) forwarded twice",
                from.0,
                from.1
            );
        }
        if lasts == 3 {
            Ok(())
        } else {
            Err(format!("{} of {} forwarded", forwarded.len(), acked.len()))
        }
    });
    eprintln!(
        "{} forwarded records read {:?} after the start",
        forwarded.len(),
        started.elapsed()
    );
    assert_eq!(
        forwarded, acked,
        "every acknowledged delayed record forwarded exactly once"
    );
}

#[test]
fn kafka_python_moves_a_partition_under_a_replication_throttle_and_elects_preferred_leaders() {
    // kafka-python (not librdkafka, which has no reassignment API) does what
    // kafka-reassign-partitions.sh and kafka-leader-election.sh do: throttle rates as dynamic
    // broker configs, throttled replicas as topic configs, a reassignment off broker 1, the list
    // of ongoing moves, preferred and unclean elections, and Kafka's errors for bad input.
    let c = Cluster::start(3, FAST);
    wait_registered(&c);
    kairos_tests::run_python(
        "kafka_python_reassign.py",
        &c.bootstrap(),
        "all kafka-python reassignment checks passed",
        || {
            c.brokers
                .iter()
                .map(|b| format!("--- broker log:\n{}", b.log()))
                .collect()
        },
    );
    // kafka-python always names the partitions; Kafka's null means every partition, and leaves
    // out those that need no election. Make moving-0's preferred replica a follower (a reorder
    // keeps the leader), then elect with null: only moving-0 is listed, elected.
    let (leader, isr) = leader_and_isr(&c.brokers[0], "moving", 0).expect("moving-0");
    let other = *isr
        .iter()
        .find(|r| **r != leader)
        .expect("a second in-sync replica");
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, TopicName};
    let reorder = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(TopicName(
                kafka_protocol::protocol::StrBytes::from_static_str("moving"),
            ))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(0)
                .with_replicas(Some(vec![BrokerId(other), BrokerId(leader)]))]),
    ]);
    let resp = kairos_tests::kafka_call(c.brokers[0].addr(), 0, &reorder).expect("reorder");
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    let replicas = |b: &Broker| -> Option<Vec<i32>> {
        let m = kairos_tests::cluster::metadata(b)?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "moving"))?;
        Some(
            t.partitions
                .first()?
                .replica_nodes
                .iter()
                .map(|r| r.0)
                .collect(),
        )
    };
    wait_until(
        Duration::from_secs(10),
        "the reorder seen by broker 2",
        || (replicas(&c.brokers[1])? == vec![other, leader]).then_some(()),
    );
    let elect_all = || {
        let req = kafka_protocol::messages::ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(None)
            .with_timeout_ms(10_000);
        let resp = kairos_tests::kafka_call(c.brokers[1].addr(), 2, &req).expect("ElectLeaders v2");
        assert_eq!(resp.error_code, 0);
        resp.replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(|p| (t.topic.to_string(), p.partition_id, p.error_code))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(elect_all(), vec![("moving".to_string(), 0, 0)]);
    let listed = elect_all();
    assert!(listed.is_empty(), "{listed:?}");

    // The empty broker name sets the cluster-wide default (kafka-python cannot name it): once
    // broker 1's own value is deleted, broker 1 describes the default, with that source.
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
    let rate = "leader.replication.throttled.rate";
    let alter = |resource: &'static str, op: i8, value: Option<&'static str>| {
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(kafka_protocol::protocol::StrBytes::from_static_str(
                    resource,
                ))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(kafka_protocol::protocol::StrBytes::from_static_str(rate))
                    .with_config_operation(op)
                    .with_value(
                        value.map(kafka_protocol::protocol::StrBytes::from_static_str),
                    )]),
        ]);
        let resp = kairos_tests::kafka_call(c.brokers[0].addr(), 1, &req).expect("alter");
        assert_eq!(resp.responses[0].error_code, 0, "{resource}: {resp:?}");
    };
    alter("", 0, Some("123456"));
    alter("1", 1, None);
    let described = wait_until(Duration::from_secs(10), "broker 1 on the default", || {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(kafka_protocol::protocol::StrBytes::from_static_str("1"))
                .with_configuration_keys(Some(vec![
                    kafka_protocol::protocol::StrBytes::from_static_str(rate),
                ])),
        ]);
        let resp = kairos_tests::kafka_call(c.brokers[0].addr(), 4, &req)?;
        let entry = resp.results.first()?.configs.first()?.clone();
        let value = entry.value.as_ref()?.to_string();
        (value == "123456").then_some(entry.config_source)
    });
    assert_eq!(described, 3, "DYNAMIC_DEFAULT_BROKER_CONFIG");
    // The empty name describes the default entity itself (kafka-configs --entity-default): its
    // dynamic configs only, not the answering broker's whole config. Asked of another broker,
    // once that one has applied the change (each broker applies the metadata at its own pace).
    let req = DescribeConfigsRequest::default().with_resources(vec![
        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(kafka_protocol::protocol::StrBytes::from_static_str(""))
            .with_configuration_keys(None),
    ]);
    let entries = wait_until(Duration::from_secs(10), "the default on broker 2", || {
        let resp = kairos_tests::kafka_call(c.brokers[1].addr(), 4, &req)?;
        let entries: Vec<(String, Option<String>, i8, bool)> = resp
            .results
            .first()?
            .configs
            .iter()
            .map(|e| {
                (
                    e.name.to_string(),
                    e.value.as_ref().map(|v| v.to_string()),
                    e.config_source,
                    e.read_only,
                )
            })
            .collect();
        (!entries.is_empty()).then_some(entries)
    });
    assert_eq!(
        entries,
        [(rate.to_string(), Some("123456".to_string()), 3, false)]
    );
}

#[test]
fn redis_scheduled_retries_are_delivered_exactly_once_across_a_leader_kill() {
    // A Redis-scheduled retry topic, its target and its DLQ, all RF=3 over three brokers that
    // share one Redis: a retry partition's leader delivers to targets led anywhere, stamping
    // each batch with an idempotent producer sequence. SIGKILL the leader of retry partition 0
    // while retries are due; its successor takes over the Redis entries (and any batch in
    // flight) and every record still ends exactly once in the target or the DLQ.
    let redis = kairos_tests::Redis::start();
    let url = format!("retry.redis.url={}", redis.url());
    let mut c = cluster_with_topic(3, &[&url], "jobs", 3);
    let insync = [("min.insync.replicas", "2")];
    assert_eq!(
        create_topic_with(&c.brokers[0], "jobs.dlq", 3, 3, &insync),
        0
    );
    let configs = [
        ("min.insync.replicas", "2"),
        ("kairos.retry.target", "jobs"),
        ("kairos.retry.backoff.ms", "1000"),
        ("kairos.retry.max.attempts", "3"),
        ("kairos.dlq.topic", "jobs.dlq"),
    ];
    assert_eq!(
        create_topic_with(&c.brokers[0], "jobs.retry", 3, 3, &configs),
        0
    );
    let victim = wait_until(
        Duration::from_secs(10),
        "jobs.retry-0 fully in sync",
        || in_sync_leader(&c.brokers[0], "jobs.retry", 0, 3),
    );
    let rt = runtime();
    let p = producer(&c);
    let total = 900;
    let started = Instant::now();
    let redelivered = r#"kairos_retry_redelivered_total{topic="jobs.retry""#;
    let killed_at = send_killing(&mut c, victim, total, redelivered, |i| {
        let key = format!("job-{i}");
        // Previous attempt 0..=3: attempt 4 is past the maximum and goes to the DLQ at once.
        let prev = (i % 4).to_string();
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "kairos.retry.attempt",
            value: Some(prev.as_bytes()),
        });
        rt.block_on(
            p.send(
                FutureRecord::to("jobs.retry")
                    .key(&key)
                    .payload("x")
                    .headers(headers),
                Duration::from_secs(30),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("produce {key}: {e}"));
    });
    eprintln!(
        "{total} failed records acknowledged in {:?}; broker {victim} killed at record {killed_at}",
        started.elapsed()
    );
    c.node(victim).restart();
    let consumer = read_from_start(&c, &[("jobs", 3), ("jobs.dlq", 3)]);
    // key -> (deliveries to the target, deliveries to the DLQ); read until every record
    // arrived and nothing more comes for two seconds.
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut arrivals = 0;
    let mut last = Instant::now();
    poll_until(&consumer, Duration::from_secs(60), |m| {
        if let Some(m) = m {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            let e = seen.entry(key).or_default();
            if m.topic() == "jobs.dlq" {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
            arrivals += 1;
            last = Instant::now();
        }
        if arrivals >= total && last.elapsed() >= Duration::from_secs(2) {
            Ok(())
        } else {
            Err(format!("{arrivals} of {total} records arrived"))
        }
    });
    eprintln!(
        "{arrivals} deliveries read {:?} after the start",
        started.elapsed()
    );
    assert_eq!(seen.len(), total, "every record arrived somewhere");
    for i in 0..total {
        let want = if i % 4 == 3 { (0, 1) } else { (1, 0) };
        assert_eq!(
            seen[&format!("job-{i}")],
            want,
            "job-{i}: (target, DLQ) deliveries"
        );
    }
}

#[test]
fn dead_letters_are_redriven_from_any_broker() {
    // RF=1 topics spread over three brokers: the admin API of a broker that does not lead the
    // destination, and hosts one of the three dead-letter partitions, reads the other two from
    // their leaders and writes to the destination through its leader.
    let c = Cluster::start(3, FAST);
    wait_registered(&c);
    assert_eq!(create_topic_with(&c.brokers[0], "orders", 1, 1, &[]), 0);
    assert_eq!(create_topic_with(&c.brokers[0], "orders.dlq", 3, 1, &[]), 0);
    let dest = wait_until(Duration::from_secs(10), "orders-0 led", || {
        leader_and_isr(&c.brokers[0], "orders", 0)
            .map(|(l, _)| l)
            .filter(|l| *l > 0)
    });
    let dlq_leaders = wait_until(Duration::from_secs(10), "orders.dlq led", || {
        let l = kairos_tests::cluster::leaders(&c.brokers[0], "orders.dlq")?;
        (l.len() == 3 && l.iter().all(|x| *x > 0)).then_some(l)
    });
    let admin = (1..=3).find(|i| *i != dest).unwrap();
    let remote = dlq_leaders.iter().filter(|l| **l != admin).count();
    assert!(
        remote >= 1,
        "some dead-letter partition is elsewhere: {dlq_leaders:?}"
    );
    let rt = runtime();
    let p = producer(&c);
    for i in 0..30 {
        let key = format!("dead-{i}");
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "kairos.dlq.source.topic",
                value: Some("orders"),
            })
            .insert(rdkafka::message::Header {
                key: "kairos.dlq.reason",
                value: Some("gave up"),
            });
        rt.block_on(
            p.send(
                FutureRecord::to("orders.dlq")
                    .key(&key)
                    .payload("x")
                    .partition(i % 3)
                    .headers(headers),
                Duration::from_secs(30),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("produce {key}: {e}"));
    }
    let b = &c.brokers[(admin - 1) as usize];
    let out = std::process::Command::new(kairos_tests::kairos_bin())
        .args(["-b", &b.bootstrap(), "--admin-server", &b.admin_addr()])
        .args(["dlq", "redrive", "orders.dlq"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("redrove 30 of 30"),
        "{stdout}{stderr}"
    );
    let consumer = read_from_start(&c, &[("orders", 1)]);
    let mut keys = std::collections::BTreeSet::new();
    poll_until(&consumer, Duration::from_secs(30), |m| {
        if let Some(m) = m {
            use rdkafka::message::Headers;
            let dlq_headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .filter(|h| h.key.starts_with("kairos.dlq."))
                        .count()
                })
                .unwrap_or(0);
            assert_eq!(dlq_headers, 0, "dead-letter headers are removed");
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            assert!(keys.insert(key.clone()), "{key} redriven twice");
        }
        if keys.len() == 30 {
            Ok(())
        } else {
            Err(format!("{} of 30 redriven", keys.len()))
        }
    });
    let want: std::collections::BTreeSet<String> = (0..30).map(|i| format!("dead-{i}")).collect();
    assert_eq!(keys, want);
    assert!(
        consumer.poll(Duration::from_millis(500)).is_none(),
        "nothing more than the 30"
    );
}

#[test]
fn killing_the_controller_that_also_leads_a_partition_fails_over_without_loss() {
    // Kafka's default timings (heartbeat 500 ms, session 9 s, election 1 s): the worst single
    // kill, the active controller that also leads the partition being written. A new controller
    // is elected, finds the dead broker's listener refusing connections, fences it at once, and
    // the partition's leadership moves to an in-sync follower.
    let mut c = Cluster::start(3, &[]);
    wait_registered(&c);
    let configs = [("min.insync.replicas", "2")];
    assert_eq!(
        create_topic_with(&c.brokers[0], "orders", 3, 3, &configs),
        0
    );
    let (controller, partition) = wait_until(
        Duration::from_secs(10),
        "a partition led by the controller, fully in sync",
        || {
            let controller = kairos_tests::cluster::metadata(&c.brokers[0])?
                .controller_id
                .0;
            (0..3).find_map(|p| {
                leader_and_isr(&c.brokers[0], "orders", p)
                    .filter(|(l, isr)| *l == controller && isr.len() == 3)
                    .map(|_| (controller, p))
            })
        },
    );
    let rt = runtime();
    let p = producer(&c);
    let send = |v: String| {
        rt.block_on(
            p.send(
                FutureRecord::to("orders")
                    .key(&v)
                    .payload(&v)
                    .partition(partition),
                Duration::from_secs(30),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"))
        .offset
    };
    let mut acked = BTreeMap::new();
    for i in 0..100 {
        let v = format!("a{i}");
        acked.insert((partition, send(v.clone())), v);
    }
    c.node(controller).kill9();
    let killed = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("killed at unix {:.3}", wall.as_secs_f64());
    let v = "after-kill".to_string();
    acked.insert((partition, send(v.clone())), v);
    let failover = killed.elapsed();
    for i in 0..100 {
        let v = format!("b{i}");
        acked.insert((partition, send(v.clone())), v);
    }
    eprintln!(
        "controller {controller} (leader of orders-{partition}) killed; first record acknowledged {failover:?} later"
    );
    // A survivor saw the dead controller's listener refuse connections and campaigned once the
    // leader lease was over, rather than after a full election timeout.
    let gone = format!(
        "campaigning for the metadata quorum's leadership: controller {controller} is gone"
    );
    assert!(
        c.brokers.iter().any(|b| b.log().contains(&gone)),
        "no survivor campaigned on the dead controller"
    );
    let (new_leader, _) =
        leader_and_isr(&c.brokers[(controller % 3) as usize], "orders", partition)
            .expect("a surviving broker's metadata");
    assert!(
        new_leader > 0 && new_leader != controller,
        "leadership moved to a live broker (now {new_leader})"
    );
    c.node(controller).restart();
    wait_until(Duration::from_secs(20), "the ISR healed", || {
        leader_and_isr(&c.brokers[0], "orders", partition)
            .filter(|(_, isr)| isr.len() == 3)
            .map(|_| ())
    });
    assert_eq!(acked.len(), 201);
    // Only `partition` was written: the others must be empty.
    assert_log_is_exactly(&c, "orders", 3, &acked);
}
