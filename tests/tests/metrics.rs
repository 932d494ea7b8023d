//! Observability end to end: the broker's `/metrics` scraped by a real Prometheus while a
//! producer and a consumer group work; every dashboard query must return data.

use std::time::{Duration, Instant};

use kairos_tests::{client, create_topic, http_get, sample, Broker, Prometheus};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);
const RECORDS: u64 = 1000;
const RECORD_BYTES: usize = 100;

fn scrape(b: &Broker) -> String {
    let (status, body) = http_get(&format!("{}/metrics", b.metrics_url()));
    assert_eq!(status, 200);
    body
}

/// Produces the known workload: RECORDS records of RECORD_BYTES to `orders` (2 partitions),
/// then a group `billing` reads everything and commits 300 on partition 0 and 100 on 1.
fn workload(b: &Broker) -> [i64; 2] {
    create_topic(b, "orders", 2, &[]).unwrap();
    // A delay topic too, so the Delays panels have data: records due at once, forwarded to
    // `orders.due` (not `orders`, whose counts the tests check exactly).
    create_topic(b, "orders.due", 1, &[]).unwrap();
    create_topic(
        b,
        "orders.later",
        1,
        &[("kairos.delay.target", "orders.due")],
    )
    .unwrap();
    let p: BaseProducer = client(b)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    // And a retry topic: one record redelivered (attempt 1), one dead-lettered.
    create_topic(b, "orders.failed", 1, &[]).unwrap();
    create_topic(b, "orders.failed.dlq", 1, &[]).unwrap();
    let retry = [
        ("kairos.retry.target", "orders.failed"),
        ("kairos.retry.backoff.ms", "100"),
        ("kairos.retry.max.attempts", "1"),
    ];
    create_topic(b, "orders.failed.retry", 1, &retry).unwrap();
    p.send(
        BaseRecord::<[u8], [u8]>::to("orders.failed.retry")
            .key(b"f-1")
            .payload(b"x"),
    )
    .unwrap();
    p.send(
        BaseRecord::<[u8], [u8]>::to("orders.failed.retry")
            .key(b"f-2")
            .payload(b"x")
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "kairos.retry.attempt",
                    value: Some(&b"1"[..]),
                }),
            ),
    )
    .unwrap();
    for i in 0..10 {
        let key = format!("later-{i}");
        p.send(
            BaseRecord::<[u8], [u8]>::to("orders.later")
                .key(key.as_bytes())
                .payload(b"x"),
        )
        .unwrap();
    }
    let payload = [b'x'; RECORD_BYTES];
    for i in 0..RECORDS {
        let key = format!("order-{i}");
        p.send(
            BaseRecord::to("orders")
                .key(key.as_bytes())
                .payload(&payload[..])
                .partition((i % 2) as i32),
        )
        .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(WAIT).unwrap();

    let c: BaseConsumer = client(b)
        .set("group.id", "billing")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["orders"]).unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + WAIT;
    while seen < RECORDS {
        assert!(Instant::now() < deadline, "consumed {seen} of {RECORDS}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            m.unwrap();
            seen += 1;
        }
    }
    let committed = [300, 100];
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in committed.iter().enumerate() {
        tpl.add_partition_offset("orders", partition as i32, Offset::Offset(*offset))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
    committed
}

#[test]
fn counters_move_by_the_workload_and_lag_is_end_minus_committed() {
    // Proves the counters advance by exactly the records and batch bytes appended, bytes out
    // covers what the consumer read, and lag equals log-end minus committed offset.
    let b = Broker::start(&[]);
    let committed = workload(&b);
    let text = scrape(&b);
    let t = |name: &str| sample(&text, &format!("{name}{{topic=\"orders\"}}")).unwrap_or(-1.0);
    assert_eq!(
        t("kafka_server_brokertopicmetrics_messagesin_total"),
        RECORDS as f64
    );
    let log_bytes: f64 = (0..2)
        .map(|p| {
            sample(
                &text,
                &format!("kafka_log_log_size{{topic=\"orders\",partition=\"{p}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert!(log_bytes >= (RECORDS as usize * RECORD_BYTES) as f64);
    assert_eq!(
        t("kafka_server_brokertopicmetrics_bytesin_total"),
        log_bytes,
        "bytes in = the batch bytes stored"
    );
    assert!(
        t("kafka_server_brokertopicmetrics_bytesout_total") >= log_bytes,
        "the consumer read every batch"
    );
    assert!(t("kafka_server_brokertopicmetrics_totalproducerequests_total") >= 1.0);
    assert_eq!(
        t("kafka_server_brokertopicmetrics_failedproducerequests_total"),
        0.0
    );
    assert!(t("kafka_server_brokertopicmetrics_totalfetchrequests_total") >= 1.0);
    assert!(
        sample(&text, "kafka_server_brokertopicmetrics_messagesin_total").unwrap()
            >= RECORDS as f64
    );
    assert!(
        sample(
            &text,
            "kafka_network_requestmetrics_requests_total{request=\"Produce\"}"
        )
        .unwrap()
            >= 1.0
    );
    for (partition, offset) in committed.iter().enumerate() {
        let end = sample(&text, &format!("kafka_topic_partition_current_offset{{topic=\"orders\",partition=\"{partition}\"}}")).unwrap();
        assert_eq!(end, (RECORDS / 2) as f64);
        let series =
            format!("{{consumergroup=\"billing\",topic=\"orders\",partition=\"{partition}\"}}");
        assert_eq!(
            sample(
                &text,
                &format!("kafka_consumergroup_current_offset{series}")
            ),
            Some(*offset as f64)
        );
        assert_eq!(
            sample(&text, &format!("kafka_consumergroup_lag{series}")),
            Some(end - *offset as f64),
            "lag = end - committed"
        );
    }
    // One more record moves the topic's counter by exactly one.
    let p: BaseProducer = client(&b)
        .set("message.timeout.ms", "2000")
        .create()
        .unwrap();
    let _ = p.send(
        BaseRecord::<(), [u8]>::to("orders")
            .payload(&b"x"[..])
            .partition(0),
    );
    p.flush(WAIT).unwrap();
    let text = scrape(&b);
    assert_eq!(
        sample(
            &text,
            "kafka_server_brokertopicmetrics_messagesin_total{topic=\"orders\"}"
        ),
        Some(RECORDS as f64 + 1.0)
    );

    // The scrape passes promtool's lint.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn health_endpoints_answer() {
    // Proves /healthz and /readyz answer 200 once the broker serves.
    let b = Broker::start(&[]);
    assert_eq!(http_get(&format!("{}/healthz", b.metrics_url())).0, 200);
    let (status, body) = http_get(&format!("{}/readyz", b.metrics_url()));
    assert_eq!((status, body.trim()), (200, "ready"));
}

/// Every `expr` in a dashboard JSON (panels and rows), with the panel title.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    if let Some(panels) = v["panels"].as_array() {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        p["title"].as_str().unwrap_or("?").to_string(),
                        e.to_string(),
                    ));
                }
            }
            dashboard_queries(p, out);
        }
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    // Proves the Grafana dashboards fit the broker's metrics: with a real Prometheus scraping
    // during a workload, every panel's PromQL (template variables substituted) returns at
    // least one series, and every template variable's label exists.
    // With Redis, so the Redis panels have data too.
    let redis = kairos_tests::Redis::start();
    let b = Broker::start(&[&format!("retry.redis.url={}", redis.url())]);
    let prom = Prometheus::start(&[format!("127.0.0.1:{}", b.metrics_port)]);
    workload(&b);
    // Keep a consumer fetching so fetch-side series keep moving while Prometheus scrapes.
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = prom.query("kafka_consumergroup_lag").len() == 2
            && !prom.query("kairos_dlq_records_total > 0").is_empty()
            && !prom.query("kairos_retry_redelivered_total > 0").is_empty()
            && prom
                .query("count_over_time(kafka_server_brokertopicmetrics_messagesin_total{topic=\"orders\"}[1m]) >= 3")
                .len()
                == 1;
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not collect the workload's series"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/kairos-operator/dashboards"
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("dashboards dir") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            json["__inputs"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
            "{name}: uses a DS_PROMETHEUS datasource input"
        );
        for var in json["templating"]["list"].as_array().into_iter().flatten() {
            let q = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or("");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or("");
            let (metric, label) = inner
                .split_once(',')
                .unwrap_or_else(|| panic!("{name}: variable query {q}"));
            let series = prom.query(metric.trim());
            assert!(
                series.iter().any(|s| s["metric"][label.trim()].is_string()),
                "{name}: variable {} finds no {label} on {metric}",
                var["name"]
            );
        }
        let mut queries = Vec::new();
        dashboard_queries(&json, &mut queries);
        assert!(!queries.is_empty(), "{name} has panels");
        for (title, expr) in queries {
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$topic", "orders")
                .replace("$consumergroup", "billing");
            let result = prom.query(&q);
            assert!(
                !result.is_empty(),
                "{name} / {title}: `{q}` returned no series"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "checked {checked} queries");
}
