//! Delay topics end to end: real broker processes, librdkafka clients.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kairos_tests::{client, create_topic as create, Broker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn header<'a>(m: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads the target from the beginning until `quiet` passes with no new record after
/// `deadline_ms` (epoch ms) — i.e. after everything could have been forwarded.
fn read_target(
    b: &Broker,
    topic: &str,
    deadline_ms: i64,
    quiet: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = client(b)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), WAIT).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let hard_stop = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().detach());
            last = Instant::now();
        } else if now_ms() > deadline_ms && last.elapsed() > quiet {
            return out;
        }
        assert!(Instant::now() < hard_stop, "target reading did not settle");
    }
}

/// Produces `n` records with keys `k<i>` due at random times in [0, span) from now; every key
/// with i % 10 == 0 is cancelled by a tombstone produced right after it (those are due ≥ 1 s so
/// the tombstone always arrives first). Returns (due per non-cancelled key, cancelled keys).
fn produce_workload(
    b: &Broker,
    topic: &str,
    n: u32,
    span_ms: i64,
    seed: u64,
) -> (HashMap<String, i64>, HashSet<String>) {
    let p: BaseProducer = client(b)
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .unwrap();
    let mut rng = seed;
    let mut next = || {
        // xorshift64*: reproducible from the printed seed.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let base = now_ms();
    let mut due = HashMap::new();
    let mut cancelled = HashSet::new();
    for i in 0..n {
        let key = format!("k{i}");
        let cancel = i % 10 == 0;
        let offset_ms = if cancel {
            1000 + (next() % (span_ms - 1000).max(1) as u64) as i64
        } else {
            (next() % span_ms as u64) as i64
        };
        let at = (base + offset_ms).to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "kairos.deliver.at.ms",
            value: Some(at.as_bytes()),
        });
        let value = format!("value-{i}");
        loop {
            match p.send(
                BaseRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .headers(headers.clone()),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.to_string().contains("Queue full") => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
        if cancel {
            p.send(BaseRecord::<[u8], [u8]>::to(topic).key(key.as_bytes()))
                .unwrap();
            cancelled.insert(key);
        } else {
            due.insert(key, base + offset_ms);
        }
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(WAIT).unwrap();
    (due, cancelled)
}

fn check_exactly_once(
    msgs: &[rdkafka::message::OwnedMessage],
    due: &HashMap<String, i64>,
    cancelled: &HashSet<String>,
    check_time: bool,
) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in msgs {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        assert!(
            !cancelled.contains(&key),
            "cancelled key {key} was delivered"
        );
        *seen.entry(key.clone()).or_default() += 1;
        if check_time {
            let forwarded_at = m.timestamp().to_millis().unwrap();
            let due_at = due[&key];
            assert!(
                forwarded_at >= due_at,
                "{key} forwarded at {forwarded_at}, before its due time {due_at}"
            );
        }
        assert_eq!(header(m, "kairos.original.topic"), Some("delays"));
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.is_empty(),
        "delivered more than once: {:?}",
        &dupes[..dupes.len().min(5)]
    );
    let missing: Vec<_> = due.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn random_delays_deliver_every_record_once_at_or_after_its_due_time_and_tombstones_cancel() {
    // Proves the core contract on 100,000 records with delays in [0, 10 s): each non-cancelled
    // record reaches the target exactly once, not before it is due; no cancelled one does.
    let seed = now_ms() as u64 | 1;
    eprintln!("seed {seed}");
    let b = Broker::start(&[]);
    create(&b, "target", 4, &[]).unwrap();
    create(&b, "delays", 4, &[("kairos.delay.target", "target")]).unwrap();
    let (due, cancelled) = produce_workload(&b, "delays", 100_000, 10_000, seed);
    let last_due = due.values().copied().max().unwrap();
    let msgs = read_target(&b, "target", last_due + 500, Duration::from_secs(2));
    check_exactly_once(&msgs, &due, &cancelled, true);
    // Keyed records land where the Java client's partitioner would put them, with the
    // original coordinates.
    for m in msgs.iter().take(50) {
        assert!(header(m, "kairos.original.offset").is_some());
        assert!(header(m, "kairos.original.timestamp").is_some());
    }
}

#[test]
fn sigkill_during_forwarding_still_delivers_exactly_once() {
    // Proves forwarding survives crashes: the broker is SIGKILLed three times while records
    // are being forwarded; after restarts every non-cancelled record is in the target exactly
    // once and no cancelled record is.
    let seed = now_ms() as u64 | 1;
    eprintln!("seed {seed}");
    let mut b = Broker::start(&[]);
    create(&b, "target", 3, &[]).unwrap();
    create(&b, "delays", 3, &[("kairos.delay.target", "target")]).unwrap();
    let (due, cancelled) = produce_workload(&b, "delays", 30_000, 6_000, seed);
    let start = Instant::now();
    for kill_at in [1500u64, 3000, 4500] {
        while start.elapsed() < Duration::from_millis(kill_at) {
            std::thread::sleep(Duration::from_millis(20));
        }
        b.kill9();
        b.restart();
    }
    let last_due = due.values().copied().max().unwrap();
    let msgs = read_target(&b, "target", last_due + 500, Duration::from_secs(3));
    check_exactly_once(&msgs, &due, &cancelled, false);
}

#[test]
fn fixed_delay_topic_preserves_partition_order_and_waits_for_a_missing_target() {
    // Proves a topic-level delay forwards in produce order per partition, and that records
    // due while the target does not exist wait (nothing dropped) and go out once it exists.
    let b = Broker::start(&["auto.create.topics.enable=false"]);
    create(
        &b,
        "later",
        1,
        &[
            ("kairos.delay.target", "ordered"),
            ("kairos.delay.ms", "200"),
        ],
    )
    .unwrap();
    let p: BaseProducer = client(&b).set("linger.ms", "2").create().unwrap();
    for i in 0..1000 {
        let v = format!("{i:04}");
        p.send(BaseRecord::<[u8], [u8]>::to("later").payload(v.as_bytes()))
            .unwrap();
    }
    p.flush(WAIT).unwrap();
    // Everything is due after 200 ms; the target does not exist yet: the partition reports
    // itself blocked and every record stays pending.
    let scrape = || kairos_tests::http_get(&format!("{}/metrics", b.metrics_url())).1;
    kairos_tests::cluster::wait_until(
        Duration::from_secs(10),
        "the delay partition blocked",
        || {
            (kairos_tests::sample(&scrape(), "kairos_delay_blocked{topic=\"later\"}") == Some(1.0))
                .then_some(())
        },
    );
    assert_eq!(
        kairos_tests::sample(&scrape(), "kairos_delay_pending{topic=\"later\"}"),
        Some(1000.0),
        "records wait for the target"
    );
    create(&b, "ordered", 1, &[]).unwrap();
    let msgs = read_target(&b, "ordered", now_ms(), Duration::from_secs(2));
    let values: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
    assert_eq!(values, expected, "same order as produced, nothing lost");
}

#[test]
fn bad_delay_configs_and_headers_are_refused() {
    // Proves INVALID_CONFIG for a self-targeting or looping delay topic and INVALID_RECORD for
    // malformed kairos headers, with nothing appended.
    let b = Broker::start(&[]);
    let e = create(&b, "self", 1, &[("kairos.delay.target", "self")]).unwrap_err();
    assert!(
        e.contains("InvalidConfig") || e.contains("INVALID_CONFIG") || e.contains("configuration"),
        "{e}"
    );
    create(&b, "a", 1, &[("kairos.delay.target", "b")]).unwrap();
    // (librdkafka's admin API keeps only the error code, not the broker's message.)
    let e = create(&b, "b", 1, &[("kairos.delay.target", "a")]).unwrap_err();
    assert!(e.contains("InvalidConfig"), "{e}");
    create(&b, "t", 1, &[]).unwrap();
    create(&b, "d", 1, &[("kairos.delay.target", "t")]).unwrap();
    let p: rdkafka::producer::FutureProducer = client(&b)
        .set("linger.ms", "0")
        .set("retries", "0")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for bad in ["-5", "soon"] {
        let headers = OwnedHeaders::new().insert(Header {
            key: "kairos.delay.ms",
            value: Some(bad),
        });
        let sent = rt.block_on(
            p.send(
                rdkafka::producer::FutureRecord::<[u8], [u8]>::to("d")
                    .payload(b"x")
                    .headers(headers),
                Duration::from_secs(10),
            ),
        );
        let (err, _) = sent.expect_err("a malformed kairos.delay.ms is refused");
        assert!(err.to_string().contains("InvalidRecord"), "{bad}: {err}");
    }
    let c: BaseConsumer = client(&b).create().unwrap();
    assert_eq!(
        c.fetch_watermarks("d", 0, WAIT).unwrap(),
        (0, 0),
        "the malformed record was not appended"
    );
}

#[test]
fn retention_keeps_pending_records_until_they_are_delivered() {
    // Proves retention on a delay topic waits for pending records: with retention.ms=1 and
    // tiny segments, nothing pending is deleted; once delivered, the segments can go.
    let b = Broker::start(&["log.retention.check.interval.ms=100"]);
    create(&b, "kept", 1, &[]).unwrap();
    create(
        &b,
        "waiting",
        1,
        &[
            ("kairos.delay.target", "kept"),
            ("kairos.delay.ms", "2500"),
            ("retention.ms", "1"),
            ("segment.bytes", "1024"),
        ],
    )
    .unwrap();
    let p: BaseProducer = client(&b)
        .set("linger.ms", "0")
        .set("batch.size", "512")
        .create()
        .unwrap();
    for i in 0..200 {
        let v = format!("record-{i:04}-{}", "x".repeat(40));
        p.send(BaseRecord::<[u8], [u8]>::to("waiting").payload(v.as_bytes()))
            .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(WAIT).unwrap();
    let c: BaseConsumer = client(&b).create().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        c.fetch_watermarks("waiting", 0, WAIT).unwrap().0,
        0,
        "nothing pending was deleted"
    );
    let msgs = read_target(&b, "kept", now_ms() + 2000, Duration::from_secs(1));
    assert_eq!(msgs.len(), 200, "every record forwarded");
    let deadline = Instant::now() + WAIT;
    while c.fetch_watermarks("waiting", 0, WAIT).unwrap().0 == 0 {
        assert!(
            Instant::now() < deadline,
            "retention never ran after delivery"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts: BTreeMap<i32, usize> = msgs.iter().fold(BTreeMap::new(), |mut m, x| {
        *m.entry(x.partition()).or_default() += 1;
        m
    });
    assert_eq!(counts.values().sum::<usize>(), 200);
}

#[test]
fn far_future_records_wait_on_disk_and_survive_sigkill() {
    // Proves the on-disk due index: with half-second buckets and window, records due seconds
    // ahead start out only in bucket files, are loaded as they come near, and are forwarded
    // exactly once (cancelled ones never) across SIGKILLs before and during forwarding.
    let seed = now_ms() as u64 | 1;
    eprintln!("seed {seed}");
    let mut b = Broker::start(&["kairos.delay.bucket.ms=500", "kairos.delay.window.ms=500"]);
    create(&b, "target", 2, &[]).unwrap();
    create(&b, "delays", 2, &[("kairos.delay.target", "target")]).unwrap();
    let (due, cancelled) = produce_workload(&b, "delays", 20_000, 7_000, seed);
    let start = Instant::now();
    for kill_at in [800u64, 2500, 4500] {
        while start.elapsed() < Duration::from_millis(kill_at) {
            std::thread::sleep(Duration::from_millis(20));
        }
        b.kill9();
        b.restart();
    }
    let last_due = due.values().copied().max().unwrap();
    let msgs = read_target(&b, "target", last_due + 500, Duration::from_secs(3));
    check_exactly_once(&msgs, &due, &cancelled, true);
}
