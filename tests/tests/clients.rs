//! End-to-end behaviour with the reference client (librdkafka via `rdkafka`) against real
//! `kairos serve` processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_tests::{client, kairos_bin, Broker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn create_topic(b: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    kairos_tests::create_topic(b, name, partitions, configs)
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
}

/// Delivery reports collected by a producer: (partition, offset, payload) or the error text.
#[derive(Default)]
struct Collect {
    acked: Mutex<Vec<(i32, i64, Vec<u8>)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Collect {}

impl ProducerContext for Collect {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => self.acked.lock().unwrap().push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

fn producer(b: &Broker, props: &[(&str, &str)]) -> BaseProducer<Collect> {
    let mut c = client(b);
    c.set("linger.ms", "5");
    for (k, v) in props {
        c.set(*k, *v);
    }
    c.create_with_context(Collect::default()).expect("producer")
}

fn send_blocking(p: &BaseProducer<Collect>, mut rec: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                p.poll(Duration::from_millis(5));
                rec = r;
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Reads every partition of `topic` from the beginning until `count` records arrived (or no
/// progress for 10 s).
fn consume_all(b: &Broker, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client(b)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), WAIT)
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < count && last.elapsed() < Duration::from_secs(10) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.expect("consume").detach());
            last = Instant::now();
        }
    }
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_compression_codec_round_trips_with_keys_and_headers() {
    // Proves batches compressed by the client with each codec are stored and served intact,
    // keys, values and headers included, in order.
    let b = Broker::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&b, &topic, 1, &[]);
        let p = producer(&b, &[("compression.type", codec), ("acks", "all")]);
        for i in 0..300u32 {
            let key = format!("key-{i}");
            let value = format!("value-{i}-{}", "x".repeat((i % 50) as usize));
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "i",
                    value: Some(&i.to_be_bytes()[..]),
                })
                .insert(Header {
                    key: "codec",
                    value: Some(codec),
                });
            send_blocking(
                &p,
                BaseRecord::to(&topic)
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .headers(headers),
            );
        }
        p.flush(WAIT).expect("flush");
        assert!(
            p.context().failed.lock().unwrap().is_empty(),
            "{codec}: delivery failures"
        );
        let msgs = consume_all(&b, &topic, 300);
        assert_eq!(msgs.len(), 300, "{codec}: record count");
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.offset(), i as i64, "{codec}: offsets are dense");
            assert_eq!(m.key(), Some(format!("key-{i}").as_bytes()), "{codec}");
            let want = format!("value-{i}-{}", "x".repeat(i % 50));
            assert_eq!(m.payload(), Some(want.as_bytes()), "{codec}");
            let h = m.headers().expect("headers");
            assert_eq!(h.count(), 2, "{codec}");
            assert_eq!(
                h.get(0).value,
                Some(&(i as u32).to_be_bytes()[..]),
                "{codec}"
            );
            assert_eq!(h.get(1).value, Some(codec.as_bytes()), "{codec}");
        }
    }
}

#[test]
fn offsets_for_times_and_seek_find_the_right_records() {
    // Proves the time index answers offsetsForTimes exactly and seek repositions a consumer.
    let b = Broker::start(&["log.index.interval.bytes=64", "log.segment.bytes=2048"]);
    create_topic(&b, "times", 1, &[]);
    let p = producer(&b, &[("linger.ms", "0")]);
    let base = 1_700_000_000_000i64;
    for i in 0..200i64 {
        let v = format!("v{i}");
        send_blocking(
            &p,
            BaseRecord::to("times")
                .payload(v.as_bytes())
                .timestamp(base + i * 1000),
        );
        if i % 20 == 0 {
            p.flush(WAIT).unwrap();
        }
    }
    p.flush(WAIT).unwrap();
    let consumer: BaseConsumer = client(&b).set("group.id", "times").create().unwrap();
    for (ts, want) in [
        (base, 0),
        (base + 57_500, 58),
        (base + 150_000, 150),
        (base + 199_000, 199),
    ] {
        let mut q = TopicPartitionList::new();
        q.add_partition_offset("times", 0, Offset::Offset(ts))
            .unwrap();
        let r = consumer
            .offsets_for_times(q, WAIT)
            .expect("offsets_for_times");
        assert_eq!(
            r.elements()[0].offset(),
            Offset::Offset(want),
            "timestamp {ts}"
        );
    }
    // Past the last record: no offset (Kafka answers -1 → End).
    let mut q = TopicPartitionList::new();
    q.add_partition_offset("times", 0, Offset::Offset(base + 10_000_000))
        .unwrap();
    let r = consumer.offsets_for_times(q, WAIT).unwrap();
    assert_eq!(r.elements()[0].offset(), Offset::End);

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(10))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let first = loop {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            break m.unwrap().detach();
        }
    };
    assert_eq!(first.offset(), 10);
    consumer
        .seek("times", 0, Offset::Offset(123), WAIT)
        .expect("seek");
    let after_seek = loop {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            if m.offset() != 11 {
                break m.detach();
            }
        }
    };
    assert_eq!(after_seek.offset(), 123);
    assert_eq!(after_seek.payload(), Some(&b"v123"[..]));
    assert_eq!(after_seek.timestamp().to_millis(), Some(base + 123_000));
}

#[test]
fn committed_offsets_survive_restart_and_sigkill() {
    // Proves a group resumes at its committed offset after a clean restart and after SIGKILL.
    let mut b = Broker::start(&[]);
    create_topic(&b, "resume", 2, &[]);
    let p = producer(&b, &[]);
    for i in 0..100u32 {
        let v = format!("{i}");
        send_blocking(
            &p,
            BaseRecord::to("resume")
                .payload(v.as_bytes())
                .partition((i % 2) as i32),
        );
    }
    p.flush(WAIT).unwrap();
    drop(p);

    let consume_some = |b: &Broker, n: usize| -> Vec<(i32, i64)> {
        let c: BaseConsumer = client(b)
            .set("group.id", "resumers")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        c.subscribe(&["resume"]).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < n {
            assert!(
                Instant::now() < deadline,
                "consumed only {} of {n}",
                got.len()
            );
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                got.push((m.partition(), m.offset()));
                c.store_offset_from_message(&m).ok();
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset("resume", m.partition(), Offset::Offset(m.offset() + 1))
                    .unwrap();
                c.commit(&tpl, CommitMode::Sync).expect("commit");
            }
        }
        c.unsubscribe();
        got
    };
    let first = consume_some(&b, 30);
    assert_eq!(b.stop(), Some(0), "SIGTERM exits 0");
    b.restart();
    let second = consume_some(&b, 30);
    b.kill9();
    b.restart();
    let third = consume_some(&b, 40);
    let all: Vec<(i32, i64)> = first.iter().chain(&second).chain(&third).cloned().collect();
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        100,
        "every record exactly once across restarts"
    );
    assert_eq!(
        all.len(),
        100,
        "no record consumed twice: resumed at the committed offset"
    );
}

/// Decodes a ConsumerProtocolAssignment (version i16, [topic string, [partition i32]], ...).
fn assigned_partitions(bytes: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    if bytes.len() < 6 {
        return out;
    }
    let mut pos = 2;
    let rd_i32 = |b: &[u8], p: usize| i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
    let topics = rd_i32(bytes, pos);
    pos += 4;
    for _ in 0..topics {
        let len = i16::from_be_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        pos += 2 + len;
        let n = rd_i32(bytes, pos);
        pos += 4;
        for _ in 0..n {
            out.push(rd_i32(bytes, pos));
            pos += 4;
        }
    }
    out
}

/// (member count, sorted partitions of each member) of a group, from DescribeGroups.
fn group_view(admin: &BaseConsumer, group: &str) -> (String, Vec<Vec<i32>>) {
    let Ok(list) = admin.fetch_group_list(Some(group), WAIT) else {
        return (String::new(), vec![]);
    };
    let Some(g) = list.groups().first() else {
        return (String::new(), vec![]);
    };
    let mut members: Vec<Vec<i32>> = g
        .members()
        .iter()
        .map(|m| {
            let mut p = assigned_partitions(m.assignment().unwrap_or_default());
            p.sort();
            p
        })
        .collect();
    members.sort();
    (g.state().to_string(), members)
}

/// Counts rebalance callbacks a member sees (assignments and revocations).
#[derive(Default)]
struct CountingContext {
    rebalances: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClientContext for CountingContext {}

impl rdkafka::consumer::ConsumerContext for CountingContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &rdkafka::consumer::Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
    }
}

/// A group member on its own thread, polling until told to stop.
struct ThreadMember {
    stop: Arc<AtomicBool>,
    rebalances: Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ThreadMember {
    fn start(b: &Broker, group: &str, topic: &str) -> ThreadMember {
        Self::start_with(
            b,
            group,
            topic,
            &[("partition.assignment.strategy", "range")],
        )
    }

    fn start_with(b: &Broker, group: &str, topic: &str, props: &[(&str, &str)]) -> ThreadMember {
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = CountingContext::default();
        let rebalances = ctx.rebalances.clone();
        let mut cfg = client(b);
        cfg.set("group.id", group)
            .set("session.timeout.ms", "3000")
            .set("heartbeat.interval.ms", "200");
        for (k, v) in props {
            cfg.set(*k, *v);
        }
        let c: BaseConsumer<CountingContext> = cfg.create_with_context(ctx).unwrap();
        c.subscribe(&[topic]).unwrap();
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                c.poll(Duration::from_millis(50));
            }
            // Dropping the consumer closes it: a dynamic member leaves the group (LeaveGroup);
            // a static member (group.instance.id) does not.
            drop(c);
        });
        ThreadMember {
            stop,
            rebalances,
            handle: Some(handle),
        }
    }

    fn rebalances(&self) -> usize {
        self.rebalances.load(Ordering::SeqCst)
    }

    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for ThreadMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A waiter for "Stable, members own these partition counts, each of the 6 exactly once".
fn balanced<'a>(
    admin: &'a BaseConsumer,
    group: &'a str,
    members: &[usize],
) -> impl FnMut() -> bool + 'a {
    let members = members.to_vec();
    move || {
        let (state, view) = group_view(admin, group);
        let mut sizes: Vec<usize> = view.iter().map(Vec::len).collect();
        sizes.sort();
        let all: BTreeMap<i32, usize> = view.iter().flatten().fold(BTreeMap::new(), |mut m, p| {
            *m.entry(*p).or_default() += 1;
            m
        });
        state == "Stable" && sizes == members && all.len() == 6 && all.values().all(|c| *c == 1)
    }
}

#[test]
fn roundrobin_and_cooperative_sticky_assignors_converge() {
    // Proves client-side assignors other than range work through JoinGroup/SyncGroup, including
    // cooperative-sticky's second rebalance round, when a member joins and when one leaves.
    let b = Broker::start(&["group.min.session.timeout.ms=1000"]);
    create_topic(&b, "assign", 6, &[]);
    let admin: BaseConsumer = client(&b).create().unwrap();
    for strategy in ["roundrobin", "cooperative-sticky"] {
        let group = format!("g-{strategy}");
        let props = [("partition.assignment.strategy", strategy)];
        let m1 = ThreadMember::start_with(&b, &group, "assign", &props);
        wait_until("one member", balanced(&admin, &group, &[6]));
        let m2 = ThreadMember::start_with(&b, &group, "assign", &props);
        wait_until("two members", balanced(&admin, &group, &[3, 3]));
        let m3 = ThreadMember::start_with(&b, &group, "assign", &props);
        wait_until("three members", balanced(&admin, &group, &[2, 2, 2]));
        m2.leave();
        wait_until(
            "two members after a leave",
            balanced(&admin, &group, &[3, 3]),
        );
        drop((m1, m3));
    }
}

#[test]
fn static_member_restart_keeps_the_assignment_without_a_rebalance() {
    // Proves KIP-345: a static member (group.instance.id) that restarts within its session
    // timeout gets its partitions back and the other member sees no rebalance.
    let b = Broker::start(&["group.min.session.timeout.ms=1000"]);
    create_topic(&b, "static", 6, &[]);
    let admin: BaseConsumer = client(&b).create().unwrap();
    let props_a = [
        ("partition.assignment.strategy", "range"),
        ("group.instance.id", "a"),
        ("session.timeout.ms", "10000"),
    ];
    let props_b = [
        ("partition.assignment.strategy", "range"),
        ("group.instance.id", "b"),
        ("session.timeout.ms", "10000"),
    ];
    let a = ThreadMember::start_with(&b, "statics", "static", &props_a);
    let bm = ThreadMember::start_with(&b, "statics", "static", &props_b);
    wait_until(
        "two static members, 3 partitions each",
        balanced(&admin, "statics", &[3, 3]),
    );
    // Let any in-flight rebalance callbacks settle, then count from here.
    wait_until("b saw its assignment", || bm.rebalances() >= 1);
    let before = bm.rebalances();
    let (_, view_before) = group_view(&admin, "statics");
    a.leave(); // static: no LeaveGroup
    let a2 = ThreadMember::start_with(&b, "statics", "static", &props_a);
    wait_until("a's replacement assigned", || a2.rebalances() >= 1);
    wait_until(
        "group stable with the same split",
        balanced(&admin, "statics", &[3, 3]),
    );
    let (_, view_after) = group_view(&admin, "statics");
    assert_eq!(view_before, view_after, "the assignment did not change");
    assert_eq!(
        bm.rebalances(),
        before,
        "the other static member saw no rebalance"
    );
}

#[test]
fn three_member_group_rebalances_on_join_leave_and_sigkill() {
    // Proves the coordinator rebalances a range-assigned group when members join, when one
    // leaves cleanly, and when one is SIGKILLed (removed after its session timeout).
    let b = Broker::start(&["group.min.session.timeout.ms=1000"]);
    create_topic(&b, "work", 6, &[]);
    let admin: BaseConsumer = client(&b).create().unwrap();
    let expect = |members: &[usize]| balanced(&admin, "workers", members);
    let a = ThreadMember::start(&b, "workers", "work");
    wait_until("one member owning all 6 partitions", expect(&[6]));
    let bm = ThreadMember::start(&b, "workers", "work");
    wait_until("two members with 3 partitions each", expect(&[3, 3]));
    // The third member is a separate process so it can be SIGKILLed.
    let mut c = std::process::Command::new(kairos_bin())
        .args([
            "consume",
            "work",
            "--group",
            "workers",
            "-b",
            &b.bootstrap(),
        ])
        .args([
            "-X",
            "session.timeout.ms=2000",
            "-X",
            "heartbeat.interval.ms=200",
            "-X",
            "partition.assignment.strategy=range",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn consumer process");
    wait_until("three members with 2 partitions each", expect(&[2, 2, 2]));
    bm.leave();
    wait_until(
        "after a clean leave, two members with 3 each",
        expect(&[3, 3]),
    );
    let left_at = Instant::now();
    c.kill().expect("SIGKILL consumer");
    let _ = c.wait();
    wait_until(
        "after SIGKILL and session timeout, one member with all 6",
        expect(&[6]),
    );
    assert!(
        left_at.elapsed() >= Duration::from_millis(1500),
        "the killed member is removed by its session timeout"
    );
    drop(a);
}

#[test]
fn idempotent_producer_retries_produce_no_duplicates() {
    // Proves that when the broker stalls (SIGSTOP) long enough for requests to time out, the
    // idempotent producer's retries are deduplicated: every record is stored exactly once.
    let b = Broker::start(&[]);
    create_topic(&b, "idem", 1, &[]);
    let p = producer(
        &b,
        &[
            ("enable.idempotence", "true"),
            ("request.timeout.ms", "400"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "30000"),
        ],
    );
    let pid = b.pid().expect("broker pid") as i32;
    for i in 0..3000u32 {
        let v = format!("{i}");
        send_blocking(&p, BaseRecord::to("idem").payload(v.as_bytes()));
        if i == 1500 {
            p.poll(Duration::from_millis(10));
            // SAFETY: signals to our own child process.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(Duration::from_millis(1200));
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        p.poll(Duration::ZERO);
    }
    p.flush(WAIT).expect("flush");
    assert!(
        p.context().failed.lock().unwrap().is_empty(),
        "no delivery failed"
    );
    let msgs = consume_all(&b, "idem", 3000);
    let values: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap()).into_owned())
        .collect();
    let expected: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
    assert_eq!(
        values.len(),
        3000,
        "exactly 3000 records stored (duplicates would add more)"
    );
    assert_eq!(values, expected, "in order, no gaps, no duplicates");
    // Nothing beyond them either.
    let c: BaseConsumer = client(&b).create().unwrap();
    assert_eq!(c.fetch_watermarks("idem", 0, WAIT).unwrap(), (0, 3000));
}

#[test]
fn sigkill_during_acks1_produce_keeps_every_acknowledged_record() {
    // Proves that after SIGKILL mid-produce and a restart (log recovery), every record the
    // broker acknowledged (acks=1) is readable at the offset it was acknowledged with.
    let mut b = Broker::start(&["log.segment.bytes=1048576"]);
    create_topic(&b, "crash", 1, &[]);
    let p = producer(
        &b,
        &[
            ("acks", "1"),
            ("linger.ms", "1"),
            ("message.timeout.ms", "3000"),
            ("retries", "0"),
        ],
    );
    let total = 100_000u32;
    let mut killed = false;
    for i in 0..total {
        let v = format!("record-{i:06}");
        send_blocking(&p, BaseRecord::to("crash").payload(v.as_bytes()));
        if i % 256 == 0 {
            p.poll(Duration::ZERO);
        }
        // Killed once 40 000 are acknowledged; a producer far ahead of the broker waits for
        // them at 60 000 sent, so the kill always lands with records still in flight.
        if !killed && (i >= 60_000 || p.context().acked.lock().unwrap().len() >= 40_000) {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while p.context().acked.lock().unwrap().len() < 40_000
                && std::time::Instant::now() < deadline
            {
                p.poll(Duration::from_millis(10));
            }
            b.kill9();
            killed = true;
        }
    }
    let _ = p.flush(Duration::from_secs(10));
    assert!(killed, "the broker was killed mid-produce");
    let acked: Vec<(i32, i64, Vec<u8>)> = p.context().acked.lock().unwrap().clone();
    drop(p);
    assert!(acked.len() >= 40_000);
    b.restart();
    let max_acked = acked.iter().map(|a| a.1).max().unwrap();
    let msgs = consume_all(&b, "crash", (max_acked + 1) as usize);
    let by_offset: HashMap<i64, &[u8]> = msgs
        .iter()
        .map(|m| (m.offset(), m.payload().unwrap_or_default()))
        .collect();
    for (_, offset, value) in &acked {
        assert_eq!(
            by_offset.get(offset).copied(),
            Some(&value[..]),
            "acknowledged record at offset {offset}"
        );
    }
    // The recovered log is consistent: dense offsets from 0 to the end.
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
    }
    // And the broker keeps appending after recovery.
    let p = producer(&b, &[("acks", "1")]);
    send_blocking(&p, BaseRecord::to("crash").payload(&b"after"[..]));
    p.flush(WAIT).unwrap();
    let (_, off, _) = p.context().acked.lock().unwrap()[0].clone();
    assert_eq!(
        off,
        msgs.len() as i64,
        "next offset follows the recovered tail"
    );
}

#[test]
fn retention_deletes_old_segments_and_keeps_new_records() {
    // Proves time-based retention removes only whole segments older than retention.ms, and
    // size-based retention trims the oldest segments down to retention.bytes.
    let b = Broker::start(&["log.retention.check.interval.ms=100"]);
    create_topic(
        &b,
        "old-and-new",
        1,
        &[("segment.bytes", "2048"), ("retention.ms", "3600000")],
    );
    // Batches must fit a segment (else RECORD_LIST_TOO_LARGE, as in Kafka).
    let p = producer(&b, &[("linger.ms", "0"), ("batch.size", "1000")]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..100i64 {
        let v = format!("old-{i:04}-{}", "o".repeat(60));
        send_blocking(
            &p,
            BaseRecord::to("old-and-new")
                .payload(v.as_bytes())
                .timestamp(now - 2 * 86_400_000),
        );
    }
    p.flush(WAIT).unwrap();
    for i in 0..100i64 {
        let v = format!("new-{i:04}-{}", "n".repeat(60));
        send_blocking(&p, BaseRecord::to("old-and-new").payload(v.as_bytes()));
    }
    p.flush(WAIT).unwrap();
    assert!(
        p.context().failed.lock().unwrap().is_empty(),
        "every record was accepted"
    );
    let c: BaseConsumer = client(&b).create().unwrap();
    wait_until("old segments deleted", || {
        c.fetch_watermarks("old-and-new", 0, WAIT)
            .map(|w| w.0 > 0)
            .unwrap_or(false)
    });
    let (low, high) = c.fetch_watermarks("old-and-new", 0, WAIT).unwrap();
    assert_eq!(high, 200);
    assert!(low <= 100, "no new record deleted (log start {low})");
    let msgs = consume_all(&b, "old-and-new", (200 - low) as usize);
    let new_count = msgs
        .iter()
        .filter(|m| m.payload().unwrap().starts_with(b"new-"))
        .count();
    assert_eq!(new_count, 100, "every new record kept");
    assert_eq!(msgs.first().map(|m| m.offset()), Some(low));

    // Size-based: keep at most ~4 KiB.
    create_topic(
        &b,
        "sized",
        1,
        &[("segment.bytes", "1024"), ("retention.bytes", "4096")],
    );
    for i in 0..200i64 {
        let v = format!("s-{i:04}-{}", "s".repeat(60));
        send_blocking(&p, BaseRecord::to("sized").payload(v.as_bytes()));
    }
    p.flush(WAIT).unwrap();
    assert!(
        p.context().failed.lock().unwrap().is_empty(),
        "every record was accepted"
    );
    wait_until("size retention", || {
        c.fetch_watermarks("sized", 0, WAIT)
            .map(|w| w.0 > 100)
            .unwrap_or(false)
    });
    let (low, high) = c.fetch_watermarks("sized", 0, WAIT).unwrap();
    assert_eq!(high, 200);
    let msgs = consume_all(&b, "sized", (200 - low) as usize);
    assert_eq!(
        msgs.len() as i64,
        200 - low,
        "everything from the log start is readable"
    );
    assert_eq!(
        msgs.last().unwrap().payload().unwrap(),
        format!("s-0199-{}", "s".repeat(60)).as_bytes()
    );
}

#[test]
fn compaction_keeps_the_latest_value_per_key() {
    // Proves compaction removes superseded values (and only those): after cleaning, every key
    // still reads as its latest value, and fewer records remain.
    let b = Broker::start(&["log.retention.check.interval.ms=100"]);
    create_topic(
        &b,
        "latest",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "1024"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    let p = producer(&b, &[("linger.ms", "0")]);
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..30 {
        for k in 0..10 {
            let key = format!("k{k}");
            let value = format!("{key}-round-{round:02}");
            send_blocking(
                &p,
                BaseRecord::to("latest")
                    .key(key.as_bytes())
                    .payload(value.as_bytes()),
            );
            latest.insert(key, value);
        }
        p.flush(WAIT).unwrap();
    }
    assert!(
        p.context().failed.lock().unwrap().is_empty(),
        "every record was accepted"
    );
    let produced = 300usize;
    let c: BaseConsumer = client(&b).create().unwrap();
    let count_now = || consume_all(&b, "latest", produced).len();
    wait_until("compaction to remove superseded records", || {
        count_now() < produced / 2
    });
    let msgs = consume_all(&b, "latest", produced);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut last_offset = -1;
    for m in &msgs {
        assert!(m.offset() > last_offset, "offsets stay increasing");
        last_offset = m.offset();
        let k = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        seen.insert(k, String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
    }
    assert_eq!(seen, latest, "every key reads as its latest value");
    assert_eq!(
        c.fetch_watermarks("latest", 0, WAIT).unwrap().1,
        produced as i64,
        "the log end does not move"
    );
    // Keyless records are refused on a compacted topic.
    let p2 = producer(&b, &[("linger.ms", "0"), ("retries", "0")]);
    send_blocking(&p2, BaseRecord::to("latest").payload(&b"no key"[..]));
    p2.flush(WAIT).unwrap();
    let failed = p2.context().failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1, "keyless record rejected: {failed:?}");
}

#[test]
fn fetch_max_bytes_bounds_the_response_across_partitions() {
    // Proves Fetch fills a response up to its max_bytes in partition order (KIP-74): a
    // librdkafka consumer whose receive buffer is fetch.max.bytes + 512 reads three partitions
    // of 900 KiB records, which only works if no response holds two of them (the first batch
    // of a response may exceed max_bytes alone; later partitions get nothing that does not fit).
    let b = Broker::start(&[]);
    create_topic(&b, "big", 3, &[]);
    let p = producer(&b, &[("acks", "all"), ("compression.type", "none")]);
    let per_partition = 10;
    let payload = |part: i32, i: usize| -> Vec<u8> {
        let mut v = vec![(part as u8) ^ (i as u8); 900 * 1024];
        v[..8].copy_from_slice(&((part as u64) << 32 | i as u64).to_be_bytes());
        v
    };
    for i in 0..per_partition {
        for part in 0..3 {
            let value = payload(part, i);
            send_blocking(
                &p,
                BaseRecord::to("big").partition(part).payload(&value[..]),
            );
        }
    }
    p.flush(WAIT).expect("flush");
    let ctx = p.context();
    assert!(ctx.failed.lock().unwrap().is_empty(), "{:?}", ctx.failed);
    assert_eq!(ctx.acked.lock().unwrap().len(), 3 * per_partition);

    let consumer: BaseConsumer = client(&b)
        .set("group.id", "big-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "1000000")
        .set("max.partition.fetch.bytes", "20000000")
        .set("receive.message.max.bytes", "1000512")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for part in 0..3 {
        tpl.add_partition_offset("big", part, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut next = [0usize; 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.iter().sum::<usize>() < 3 * per_partition {
        assert!(
            Instant::now() < deadline,
            "consumer stalled at {next:?} records per partition"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        let part = m.partition();
        let i = next[part as usize];
        assert_eq!(m.offset(), i as i64, "partition {part}");
        assert!(
            m.payload() == Some(&payload(part, i)[..]),
            "partition {part} record {i}"
        );
        next[part as usize] += 1;
    }
}
