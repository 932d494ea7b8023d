//! Retry topics on the embedded scheduler (no `retry.redis.url`): real broker, rdkafka clients.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kairos_tests::{client, http_get, kairos_bin, Broker, Redis};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn create(b: &Broker, name: &str, configs: &[(&str, &str)]) -> Result<(), String> {
    kairos_tests::create_topic(b, name, 1, configs)
}

fn headers_of(m: &OwnedMessage) -> HashMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A consumer reading `topic` from the beginning.
fn reader(b: &Broker, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = client(b)
        .set("group.id", format!("r-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    c
}

fn next(c: &BaseConsumer) -> OwnedMessage {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            return m.unwrap().detach();
        }
        assert!(Instant::now() < deadline, "no record arrived");
    }
}

/// Produces `m` (a record the consumer failed on) to the retry topic, keeping its headers, the
/// way a consumer hands a failure back.
fn fail(p: &BaseProducer, retry_topic: &str, m: &OwnedMessage, reason: &str) {
    let mut hs = OwnedHeaders::new();
    for (k, v) in headers_of(m) {
        if k != "kairos.retry.reason" {
            hs = hs.insert(Header {
                key: &k,
                value: Some(v.as_bytes()),
            });
        }
    }
    hs = hs.insert(Header {
        key: "kairos.retry.reason",
        value: Some(reason.as_bytes()),
    });
    p.send(
        BaseRecord::<[u8], [u8]>::to(retry_topic)
            .key(m.key().unwrap())
            .payload(m.payload().unwrap())
            .headers(hs),
    )
    .unwrap();
    p.flush(WAIT).unwrap();
}

#[test]
fn retries_count_attempts_wait_their_backoff_and_end_in_the_dlq() {
    // Proves the retry contract on the embedded scheduler: each failure comes back after its
    // backoff with the attempt count and the first failure's coordinates; after the last
    // attempt the record lands in the dead-letter topic with reason, attempts and times.
    attempts_backoff_dlq_and_redrive(&Broker::start(&[]), false);
}

#[test]
fn redis_scheduled_retries_count_attempts_wait_their_backoff_and_end_in_the_dlq() {
    // Proves the same contract with the schedule in a real Redis (sorted set + hash).
    let redis = Redis::start();
    let b = Broker::start(&[&format!("retry.redis.url={}", redis.url())]);
    attempts_backoff_dlq_and_redrive(&b, true);
}

#[test]
fn redis_over_tls_with_a_password_schedules_retries() {
    // Proves rediss:// with a private CA (retry.redis.tls.ca.file) and a password in the URL.
    let redis = Redis::start_tls("s3cret");
    let ca = redis.ca_file().unwrap().display().to_string();
    let b = Broker::start(&[
        &format!("retry.redis.url={}", redis.url()),
        &format!("retry.redis.tls.ca.file={ca}"),
    ]);
    attempts_backoff_dlq_and_redrive(&b, true);
}

fn attempts_backoff_dlq_and_redrive(b: &Broker, redis: bool) {
    create(b, "work", &[]).unwrap();
    create(b, "work.dlq", &[]).unwrap();
    create(
        b,
        "work.retry",
        &[
            ("kairos.retry.target", "work"),
            ("kairos.retry.backoff.ms", "300,700"),
            ("kairos.retry.max.attempts", "3"),
        ],
    )
    .unwrap();
    let p: BaseProducer = client(b).set("linger.ms", "0").create().unwrap();
    let work = reader(b, "work");
    let dlq = reader(b, "work.dlq");

    // First failure of an original record.
    let produced_at = Instant::now();
    p.send(
        BaseRecord::<[u8], [u8]>::to("work.retry")
            .key(b"order-7")
            .payload(b"charge")
            .headers(OwnedHeaders::new().insert(Header {
                key: "kairos.retry.reason",
                value: Some(b"card declined"),
            })),
    )
    .unwrap();
    p.flush(WAIT).unwrap();
    // A scrape while the first retry is pending (nothing redelivered yet) is valid.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(http_get(&format!("{}/metrics", b.metrics_url())).0, 200);
    let mut m = next(&work);
    let waited = produced_at.elapsed();
    let h = headers_of(&m);
    assert_eq!(h["kairos.retry.attempt"], "1");
    assert_eq!(h["kairos.original.topic"], "work.retry");
    assert_eq!(h["kairos.original.offset"], "0");
    assert!(
        waited >= Duration::from_millis(290),
        "attempt 1 after its 300 ms backoff ({waited:?})"
    );
    let first_failure = h["kairos.original.timestamp"].clone();

    // Attempts 2 and 3 use the last backoff (700 ms) and keep the first failure's coordinates.
    for attempt in 2..=3 {
        let failed_at = Instant::now();
        fail(&p, "work.retry", &m, &format!("still declined ({attempt})"));
        m = next(&work);
        let h = headers_of(&m);
        assert_eq!(h["kairos.retry.attempt"], attempt.to_string());
        assert_eq!(
            h["kairos.original.timestamp"], first_failure,
            "first failure kept"
        );
        assert!(
            failed_at.elapsed() >= Duration::from_millis(690),
            "attempt {attempt} waited 700 ms"
        );
        assert_eq!(m.payload(), Some(&b"charge"[..]));
    }

    // The fourth failure exceeds max attempts: dead-lettered at once.
    let failed_at = Instant::now();
    fail(&p, "work.retry", &m, "gave up");
    let d = next(&dlq);
    assert!(
        failed_at.elapsed() < Duration::from_millis(2000),
        "dead-lettered without a backoff"
    );
    let h = headers_of(&d);
    assert_eq!(h["kairos.dlq.reason"], "gave up");
    assert_eq!(h["kairos.dlq.attempts"], "3");
    assert_eq!(h["kairos.dlq.first.failure.ms"], first_failure);
    assert_eq!(h["kairos.dlq.source.topic"], "work");
    assert!(
        h["kairos.dlq.last.failure.ms"].parse::<i64>().unwrap()
            >= first_failure.parse::<i64>().unwrap()
    );
    assert_eq!(d.key(), Some(&b"order-7"[..]));

    // The CLI: list the DLQ, stats of the retry topic, redrive (dry run, to a missing topic,
    // then for real: back in `work` with the attempt count reset).
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(kairos_bin())
            .args(["-b", &b.bootstrap(), "--admin-server", &b.admin_addr()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["dlq", "ls", "work.dlq"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("order-7") && out.contains("gave up") && out.contains(" work "),
        "{out}"
    );
    let (ok, out, err) = cli(&["retry", "stats", "work.retry"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("dead-lettered  1") && out.contains("pending        0"),
        "{out}"
    );
    let (ok, out, _) = cli(&["dlq", "redrive", "work.dlq", "--dry-run"]);
    assert!(ok && out.contains("would redrive 1 of 1"), "{out}");
    let (ok, _, err) = cli(&["dlq", "redrive", "work.dlq", "--to", "gone"]);
    assert!(!ok && err.contains("no longer exists"), "{err}");
    let (ok, out, err) = cli(&["dlq", "redrive", "work.dlq"]);
    assert!(ok && out.contains("redrove 1 of 1"), "{out}{err}");
    let back = next(&work);
    let h = headers_of(&back);
    assert_eq!(back.key(), Some(&b"order-7"[..]));
    assert!(
        !h.contains_key("kairos.retry.attempt") && !h.keys().any(|k| k.starts_with("kairos.dlq.")),
        "{h:?}"
    );
    assert_eq!(
        h["kairos.original.timestamp"], first_failure,
        "the first failure stays traceable"
    );

    // Metrics.
    let (_, text) = http_get(&format!("{}/metrics", b.metrics_url()));
    for (series, value) in [
        ("kairos_retry_scheduled_total{topic=\"work.retry\"}", 4.0),
        (
            "kairos_retry_redelivered_total{topic=\"work.retry\",attempt=\"1\"}",
            1.0,
        ),
        (
            "kairos_retry_redelivered_total{topic=\"work.retry\",attempt=\"3\"}",
            1.0,
        ),
        ("kairos_dlq_records_total{topic=\"work.dlq\"}", 1.0),
        ("kairos_retry_pending{topic=\"work.retry\"}", 0.0),
    ] {
        assert_eq!(kairos_tests::sample(&text, series), Some(value), "{series}");
    }
    assert_eq!(
        kairos_tests::sample(&text, "kairos_redis_up"),
        redis.then_some(1.0),
        "kairos_redis_up 1 with Redis, absent without"
    );
}

#[test]
fn bad_retry_configs_are_refused() {
    // Proves INVALID_CONFIG for negative or non-numeric backoffs, max attempts below 1, and a
    // dead-letter topic equal to the target or the retry topic.
    let b = Broker::start(&[]);
    for bad in [
        vec![
            ("kairos.retry.target", "t"),
            ("kairos.retry.backoff.ms", "100,-1"),
        ],
        vec![
            ("kairos.retry.target", "t"),
            ("kairos.retry.backoff.ms", "soon"),
        ],
        vec![
            ("kairos.retry.target", "t"),
            ("kairos.retry.max.attempts", "0"),
        ],
        vec![("kairos.retry.target", "t"), ("kairos.dlq.topic", "t")],
        vec![("kairos.retry.target", "t"), ("kairos.dlq.topic", "r")],
    ] {
        let e = create(&b, "r", &bad).unwrap_err();
        assert!(e.contains("InvalidConfig"), "{bad:?}: {e}");
    }
}

#[test]
fn sigkill_during_retries_ends_every_record_exactly_once_in_target_or_dlq() {
    // Proves crash safety of the embedded retry scheduler: 20,000 failed records (a quarter on
    // their last attempt) are in flight while the broker is SIGKILLed three times; afterwards
    // each is exactly once in the target or (last attempt) exactly once in the DLQ.
    let mut b = Broker::start(&["kairos.delay.bucket.ms=500", "kairos.delay.window.ms=500"]);
    crash_workload(&mut b, |b| {
        b.kill9();
        b.restart();
    });
}

#[test]
fn redis_scheduled_retries_survive_broker_sigkills() {
    // Proves the Redis scheduler's exactly-once: claims in flight when the broker dies are
    // reaped on restart and checked against the destination before being appended again.
    let redis = Redis::start();
    let url = format!("retry.redis.url={}", redis.url());
    let mut b = Broker::start(&[&url]);
    crash_workload(&mut b, |b| {
        b.kill9();
        b.restart();
    });
}

#[test]
fn a_redis_retry_batch_delivered_but_not_finalized_is_not_delivered_twice() {
    // The broker aborts at the worst point (KAIROS_FAULT): right after a batch of retries was
    // appended and committed, before Redis recorded it as delivered. On restart the entries
    // are claimed again with their stamp and sent as the same idempotent batch, which the
    // partition drops as a duplicate: each record arrives once.
    let redis = Redis::start();
    let url = format!("retry.redis.url={}", redis.url());
    let mut b = Broker::prepare(&[&url], None);
    b.fault = Some("retry-after-send".into());
    b.spawn();
    create(&b, "jobs", &[]).unwrap();
    create(
        &b,
        "jobs.retry",
        &[
            ("kairos.retry.target", "jobs"),
            ("kairos.retry.backoff.ms", "200"),
        ],
    )
    .unwrap();
    let p: BaseProducer = client(&b).set("acks", "all").create().unwrap();
    for i in 0..50 {
        let key = format!("job-{i}");
        p.send(
            BaseRecord::<str, str>::to("jobs.retry")
                .key(&key)
                .payload("x"),
        )
        .unwrap();
    }
    p.flush(WAIT).unwrap();
    assert!(
        b.wait_exit(WAIT),
        "the broker did not reach the fault point; log:\n{}",
        b.log()
    );
    b.fault = None;
    b.restart();
    let c = reader(&b, "jobs");
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 50 || last.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "{} of 50 arrived", seen.len());
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = m.unwrap();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            *seen.entry(key).or_default() += 1;
            last = Instant::now();
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), 50);
    assert!(
        b.log().contains("records) to jobs-0 again"),
        "the unfinished batch was sent again; log:\n{}",
        b.log()
    );
}

#[test]
fn redis_outage_during_retries_loses_nothing() {
    // Proves a 10 s Redis outage (SIGKILL, append-only file kept, restart) during retries loses
    // and duplicates nothing: records wait in the retry topic, and scheduling resumes.
    let redis = std::cell::RefCell::new(Redis::start());
    let url = format!("retry.redis.url={}", redis.borrow().url());
    let mut b = Broker::start(&[&url]);
    let mut round = 0;
    crash_workload(&mut b, |b| {
        round += 1;
        if round == 1 {
            redis.borrow_mut().kill9();
            std::thread::sleep(Duration::from_secs(10));
            let (_, text) = http_get(&format!("{}/metrics", b.metrics_url()));
            assert!(
                text.contains("kairos_redis_up 0"),
                "kairos_redis_up is 0 during the outage"
            );
            let (status, _) = http_get(&format!("{}/readyz", b.metrics_url()));
            assert_eq!(status, 200, "the broker stays ready without Redis");
            redis.borrow_mut().restart();
        }
    });
}

/// 20,000 failed records (previous attempt 0..=3, max 3 attempts) produced to `jobs.retry`;
/// `fault` runs three times while they are in flight; then every record must be exactly once
/// in `jobs` (attempts left) or in `jobs.dlq` (attempts exhausted).
fn crash_workload(b: &mut Broker, mut fault: impl FnMut(&mut Broker)) {
    create(b, "jobs", &[]).unwrap();
    create(b, "jobs.dlq", &[]).unwrap();
    create(
        b,
        "jobs.retry",
        &[
            ("kairos.retry.target", "jobs"),
            ("kairos.retry.backoff.ms", "1000,2000,3000"),
            ("kairos.retry.max.attempts", "3"),
        ],
    )
    .unwrap();
    let p: BaseProducer = client(b)
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .unwrap();
    let total = 20_000u32;
    for i in 0..total {
        let key = format!("job-{i}");
        // Previous attempt 0..=3: attempt 4 exceeds max (3) and goes to the DLQ at once.
        let prev = (i % 4).to_string();
        let hs = OwnedHeaders::new().insert(Header {
            key: "kairos.retry.attempt",
            value: Some(prev.as_bytes()),
        });
        loop {
            match p.send(
                BaseRecord::<[u8], [u8]>::to("jobs.retry")
                    .key(key.as_bytes())
                    .payload(b"x")
                    .headers(hs.clone()),
            ) {
                Ok(()) => break,
                // Only a full queue waits; any other error is a failure, not a hang.
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce {key}: {e}"),
            }
        }
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(WAIT).unwrap();
    let start = Instant::now();
    for at in [700u64, 1800, 3200] {
        while start.elapsed() < Duration::from_millis(at) {
            std::thread::sleep(Duration::from_millis(20));
        }
        fault(b);
    }
    // Read both topics until 20,000 records arrived in all and nothing more comes.
    let work = reader(b, "jobs");
    let dlq = reader(b, "jobs.dlq");
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    let mut count = 0;
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while (count < total as usize || last.elapsed() < Duration::from_secs(2))
        && Instant::now() < deadline
    {
        let mut got = false;
        for (c, in_dlq) in [(&work, false), (&dlq, true)] {
            while let Some(m) = c.poll(Duration::ZERO) {
                let m = m.unwrap();
                let e = seen
                    .entry(String::from_utf8(m.key().unwrap().to_vec()).unwrap())
                    .or_default();
                if in_dlq {
                    e.1 += 1
                } else {
                    e.0 += 1
                }
                count += 1;
                got = true;
            }
        }
        if got {
            last = Instant::now();
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert_eq!(seen.len(), total as usize, "every record arrived somewhere");
    for i in 0..total {
        let (t, d) = seen[&format!("job-{i}")];
        let want = if i % 4 == 3 { (0, 1) } else { (1, 0) };
        assert_eq!((t, d), want, "job-{i}: (target, dlq) deliveries");
    }
}

#[test]
fn redis_cluster_schedules_retries_across_slots() {
    // Proves scheduling works on a 3-node Redis Cluster: each retry partition's keys live in
    // one slot (hash tag), different partitions land on different nodes, and every failure is
    // redelivered exactly once.
    let cluster = kairos_tests::RedisCluster::start();
    let b = Broker::start(&[&format!("retry.redis.url={}", cluster.url())]);
    create(&b, "spread", &[]).unwrap();
    create(&b, "spread.dlq", &[]).unwrap();
    let retry = [
        ("kairos.retry.target", "spread"),
        ("kairos.retry.backoff.ms", "1500"),
    ];
    kairos_tests::create_topic(&b, "spread.retry", 6, &retry).unwrap();
    let p: BaseProducer = client(&b).set("linger.ms", "5").create().unwrap();
    for i in 0..600 {
        let key = format!("s-{i}");
        p.send(
            BaseRecord::<[u8], [u8]>::to("spread.retry")
                .key(key.as_bytes())
                .payload(b"x"),
        )
        .unwrap();
    }
    p.flush(WAIT).unwrap();
    // While they wait out the backoff, their keys sit on more than one node.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes_used = cluster
            .ports
            .iter()
            .filter(|port| {
                cluster
                    .cli(**port, &["DBSIZE"])
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
                    > 0
            })
            .count();
        if nodes_used >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retry keys did not spread over the cluster"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let work = reader(&b, "spread");
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    let mut quiet = Instant::now();
    while seen.len() < 600 || quiet.elapsed() < Duration::from_secs(1) {
        assert!(
            Instant::now() < deadline,
            "only {} of 600 redelivered",
            seen.len()
        );
        if let Some(m) = work.poll(Duration::from_millis(50)) {
            let m = m.unwrap();
            *seen
                .entry(String::from_utf8(m.key().unwrap().to_vec()).unwrap())
                .or_default() += 1;
            quiet = Instant::now();
        }
    }
    assert_eq!(seen.len(), 600);
    assert!(
        seen.values().all(|n| *n == 1),
        "each redelivered exactly once"
    );
}

#[test]
fn two_brokers_sharing_one_redis_never_deliver_twice() {
    // Proves two clusters sharing one Redis, with the same topic names but their own
    // `retry.redis.key.prefix` (the README's rule), keep to their own schedules: every failure
    // is redelivered exactly once, by its own broker, to its own target.
    let redis = Redis::start();
    let url = format!("retry.redis.url={}", redis.url());
    let brokers = [
        Broker::start(&[&url, "retry.redis.key.prefix=cluster0"]),
        Broker::start(&[&url, "retry.redis.key.prefix=cluster1"]),
    ];
    for b in &brokers {
        create(b, "t", &[]).unwrap();
        create(b, "t.dlq", &[]).unwrap();
        create(
            b,
            "t.retry",
            &[
                ("kairos.retry.target", "t"),
                ("kairos.retry.backoff.ms", "500"),
            ],
        )
        .unwrap();
    }
    for (i, b) in brokers.iter().enumerate() {
        let p: BaseProducer = client(b).set("linger.ms", "5").create().unwrap();
        for n in 0..2_000 {
            let key = format!("b{i}-{n}");
            p.send(
                BaseRecord::<[u8], [u8]>::to("t.retry")
                    .key(key.as_bytes())
                    .payload(b"x"),
            )
            .unwrap();
            p.poll(Duration::ZERO);
        }
        p.flush(WAIT).unwrap();
    }
    for (i, b) in brokers.iter().enumerate() {
        let c = reader(b, "t");
        let mut seen: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + WAIT;
        let mut quiet = Instant::now();
        while seen.len() < 2_000 || quiet.elapsed() < Duration::from_secs(1) {
            assert!(
                Instant::now() < deadline,
                "broker {i}: only {} of 2000 redelivered",
                seen.len()
            );
            while let Some(m) = c.poll(Duration::ZERO) {
                let key = String::from_utf8(m.unwrap().key().unwrap().to_vec()).unwrap();
                assert!(
                    key.starts_with(&format!("b{i}-")),
                    "broker {i} got another broker's record {key}"
                );
                *seen.entry(key).or_default() += 1;
                quiet = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(seen.len(), 2_000);
        assert!(
            seen.values().all(|n| *n == 1),
            "broker {i}: each redelivered exactly once"
        );
    }
}

#[test]
fn malformed_attempt_header_counts_as_a_first_failure_and_jitter_stays_in_bounds() {
    // Proves a garbage kairos.retry.attempt never breaks scheduling (it is attempt 1), and
    // kairos.retry.jitter.ms delays a retry by at most the jitter on top of the backoff.
    let b = Broker::start(&[]);
    create(&b, "jt", &[]).unwrap();
    create(&b, "jt.dlq", &[]).unwrap();
    create(
        &b,
        "jt.retry",
        &[
            ("kairos.retry.target", "jt"),
            ("kairos.retry.backoff.ms", "200"),
            ("kairos.retry.jitter.ms", "300"),
        ],
    )
    .unwrap();
    let p: BaseProducer = client(&b).set("linger.ms", "0").create().unwrap();
    let sent = Instant::now();
    for bad in ["abc", "-4", ""] {
        let hs = OwnedHeaders::new().insert(Header {
            key: "kairos.retry.attempt",
            value: Some(bad.as_bytes()),
        });
        p.send(
            BaseRecord::<[u8], [u8]>::to("jt.retry")
                .key(bad.as_bytes())
                .payload(b"x")
                .headers(hs),
        )
        .unwrap();
    }
    p.flush(WAIT).unwrap();
    let c = reader(&b, "jt");
    for _ in 0..3 {
        let m = next(&c);
        assert_eq!(headers_of(&m)["kairos.retry.attempt"], "1");
    }
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "the backoff applies ({took:?})"
    );
    assert!(
        took < Duration::from_millis(200 + 300 + 2000),
        "jitter stays bounded ({took:?})"
    );
}

#[test]
fn unreachable_redis_is_reported_and_the_broker_stays_up() {
    // Proves a misconfigured Redis (nothing listening) is one clear log line and
    // kairos_redis_up 0, while the broker serves and stays ready.
    let port = kairos_tests::free_port();
    let b = Broker::start(&[&format!("retry.redis.url=redis://:pw@127.0.0.1:{port}")]);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(&format!("{}/metrics", b.metrics_url()));
        if text.contains("kairos_redis_up 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kairos_redis_up never reported 0"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(&format!("{}/readyz", b.metrics_url())).0, 200);
    let log = b.log();
    assert!(
        log.contains("cannot use Redis at redis://***@127.0.0.1"),
        "clear line, password hidden: {log}"
    );
    assert!(!log.contains(":pw@"), "the password is never logged");
    create(&b, "still-works", &[]).unwrap();
}
