//! The `metrics.listener` HTTP endpoints: `/metrics` (Prometheus text format), `/healthz`
//! (the process answers) and `/readyz` (logs loaded and the Kafka listener serving).
//!
//! Scrape-time families, from the broker's state (names as Kafka's JMX exporter and
//! kafka-exporter produce them):
//! - `kafka_server_replicamanager_{leadercount,partitioncount,underreplicatedpartitions}`
//! - `kafka_controller_kafkacontroller_{activecontrollercount,offlinepartitionscount}`
//! - `kafka_log_log_{size,logstartoffset,logendoffset}{topic,partition}`
//! - `kafka_topic_partitions{topic}`, `kafka_topic_partition_{current,oldest}_offset{topic,partition}`
//! - `kafka_consumergroup_{current_offset,lag}{consumergroup,topic,partition}` (kafka-exporter's
//!   `kafka_consumergroup_lag_sum` is left out: promtool rejects `_sum` on a gauge; use
//!   `sum by (consumergroup, topic) (kafka_consumergroup_lag)`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::Encoder;
use tokio::net::TcpListener;

use crate::metadata::image::NO_LEADER;
use crate::metadata::quorum::Metadata;
use crate::metrics::{family, Metrics};
use crate::server::Broker;

pub struct HttpState {
    metrics: Arc<Metrics>,
    broker: OnceLock<Arc<Broker>>,
    metadata: OnceLock<Arc<Metadata>>,
    ready: AtomicBool,
}

impl HttpState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            broker: OnceLock::new(),
            metadata: OnceLock::new(),
            ready: AtomicBool::new(false),
        }
    }
    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }
    pub fn set_metadata(&self, metadata: Arc<Metadata>) {
        let _ = self.metadata.set(metadata);
    }
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!("metrics listener stopped: {e}");
    }
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else if state.metadata.get().is_none() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the metadata quorum\n",
        )
    } else if state.broker.get().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "loading logs\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting the Kafka listener\n",
        )
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let mut families = state.metrics.registry.gather();
    families.extend(state.metrics.families());
    if let Some(m) = state.metadata.get() {
        families.extend(controller_families(m));
    }
    if let Some(broker) = state.broker.get() {
        let b = broker.clone();
        // Reads every partition's size under its lock: keep it off the async workers.
        match tokio::task::spawn_blocking(move || broker_families(&b)).await {
            Ok(f) => families.extend(f),
            Err(e) => tracing::warn!("collecting broker metrics: {e}"),
        }
    }
    // A family without samples (e.g. no redelivery yet) is not valid exposition: leave it out.
    families.retain(|f| !f.get_metric().is_empty());
    let mut buf = Vec::with_capacity(64 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut buf) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding metrics: {e}\n").into_bytes(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        buf,
    )
}

/// The active controller's view (Kafka reports these on the active controller only, 0 elsewhere).
fn controller_families(metadata: &Metadata) -> Vec<MetricFamily> {
    let active = metadata.is_controller_leader();
    let offline = if active {
        metadata
            .image()
            .topics
            .values()
            .flat_map(|t| &t.assignment)
            .filter(|p| p.leader == NO_LEADER)
            .count()
    } else {
        0
    };
    let g =
        |name: &str, help: &str, v: f64| family(name, help, MetricType::GAUGE, vec![(vec![], v)]);
    vec![
        g(
            "kafka_controller_kafkacontroller_activecontrollercount",
            "1 on the active controller (the metadata quorum's leader), else 0.",
            if active { 1.0 } else { 0.0 },
        ),
        g(
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            "Partitions without a leader (on the active controller; 0 elsewhere).",
            offline as f64,
        ),
    ]
}

fn broker_families(broker: &Broker) -> Vec<MetricFamily> {
    let partitions = broker.replicas.all();
    let me = broker.config.node_id;
    let image = broker.topics.image();
    let led = || {
        image
            .topics
            .values()
            .flat_map(|t| &t.assignment)
            .filter(move |p| p.leader == me)
    };
    let g =
        |name: &str, help: &str, v: f64| family(name, help, MetricType::GAUGE, vec![(vec![], v)]);
    let mut out = vec![
        g(
            "kafka_server_replicamanager_leadercount",
            "Partitions led by this broker.",
            led().count() as f64,
        ),
        g(
            "kafka_server_replicamanager_partitioncount",
            "Partition replicas hosted by this broker.",
            partitions.len() as f64,
        ),
        g(
            "kafka_server_replicamanager_underreplicatedpartitions",
            "Partitions led by this broker whose ISR is smaller than the replica set.",
            led().filter(|p| p.isr.len() < p.replicas.len()).count() as f64,
        ),
    ];
    // (topic, partition) → (size, start, end)
    let mut logs: BTreeMap<(String, i32), (u64, i64, i64)> = BTreeMap::new();
    for p in &partitions {
        logs.insert(
            (p.topic.clone(), p.index),
            (p.size_bytes(), p.log_start_offset(), p.high_watermark()),
        );
    }
    let parts: Vec<(String, String)> = logs
        .keys()
        .map(|(t, p)| (t.clone(), p.to_string()))
        .collect();
    let per_partition = |f: &dyn Fn(&(u64, i64, i64)) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
        logs.values()
            .zip(&parts)
            .map(|(v, (t, p))| (vec![("topic", t.as_str()), ("partition", p.as_str())], f(v)))
            .collect()
    };
    out.push(family(
        "kafka_log_log_size",
        "Bytes of the partition's log on disk.",
        MetricType::GAUGE,
        per_partition(&|v| v.0 as f64),
    ));
    out.push(family(
        "kafka_log_log_logstartoffset",
        "First offset of the partition's log.",
        MetricType::GAUGE,
        per_partition(&|v| v.1 as f64),
    ));
    out.push(family(
        "kafka_log_log_logendoffset",
        "Log end offset of the partition.",
        MetricType::GAUGE,
        per_partition(&|v| v.2 as f64),
    ));
    out.push(family(
        "kafka_topic_partition_current_offset",
        "Current (high watermark) offset of a partition (kafka-exporter).",
        MetricType::GAUGE,
        per_partition(&|v| v.2 as f64),
    ));
    out.push(family(
        "kafka_topic_partition_oldest_offset",
        "Oldest offset of a partition (kafka-exporter).",
        MetricType::GAUGE,
        per_partition(&|v| v.1 as f64),
    ));
    let mut topic_partitions: BTreeMap<&str, usize> = BTreeMap::new();
    for (t, _) in logs.keys() {
        *topic_partitions.entry(t.as_str()).or_default() += 1;
    }
    out.push(family(
        "kafka_topic_partitions",
        "Number of partitions of a topic (kafka-exporter).",
        MetricType::GAUGE,
        topic_partitions
            .iter()
            .map(|(t, n)| (vec![("topic", *t)], *n as f64))
            .collect(),
    ));
    // Delay topics.
    let mut delay: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    // Retry topics (scheduled by the same engine) are reported on their own.
    let mut retry_pending: BTreeMap<String, u64> = BTreeMap::new();
    let mut retry_scheduled: BTreeMap<String, u64> = BTreeMap::new();
    let mut redelivered: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut dead_lettered: BTreeMap<String, u64> = BTreeMap::new();
    for d in broker.delays.partitions() {
        let r = d.retry.lock().clone();
        if r.is_retry {
            *retry_pending.entry(d.topic.clone()).or_default() += d.pending() as u64;
            *retry_scheduled.entry(d.topic.clone()).or_default() += r.scheduled;
            for (attempt, n) in &r.redelivered {
                *redelivered
                    .entry((d.topic.clone(), attempt.to_string()))
                    .or_default() += n;
            }
            *dead_lettered.entry(r.dlq_topic.clone()).or_default() += r.dead_lettered;
            continue;
        }
        let e = delay.entry(d.topic.clone()).or_default();
        e.0 += d.pending() as u64;
        e.1 += d.forwarded.load(std::sync::atomic::Ordering::Relaxed);
        e.2 += d.cancelled.load(std::sync::atomic::Ordering::Relaxed);
        e.3 += d.blocked.lock().is_some() as u64;
    }
    if !delay.is_empty() {
        let per_topic = |f: fn(&(u64, u64, u64, u64)) -> u64| -> Vec<(Vec<(&str, &str)>, f64)> {
            delay
                .iter()
                .map(|(t, v)| (vec![("topic", t.as_str())], f(v) as f64))
                .collect()
        };
        out.push(family(
            "kairos_delay_pending",
            "Records waiting in a delay topic.",
            MetricType::GAUGE,
            per_topic(|v| v.0),
        ));
        out.push(family(
            "kairos_delay_forwarded_total",
            "Delayed records forwarded to their target.",
            MetricType::COUNTER,
            per_topic(|v| v.1),
        ));
        out.push(family(
            "kairos_delay_cancelled_total",
            "Delayed records cancelled before they were due.",
            MetricType::COUNTER,
            per_topic(|v| v.2),
        ));
        out.push(family(
            "kairos_delay_blocked",
            "Partitions of a delay topic whose due records wait (e.g. the target topic does not exist).",
            MetricType::GAUGE,
            per_topic(|v| v.3),
        ));
    }
    if !retry_pending.is_empty() {
        fn per(m: &BTreeMap<String, u64>) -> Vec<(Vec<(&str, &str)>, f64)> {
            m.iter()
                .map(|(t, v)| (vec![("topic", t.as_str())], *v as f64))
                .collect()
        }
        out.push(family(
            "kairos_retry_pending",
            "Records waiting in a retry topic.",
            MetricType::GAUGE,
            per(&retry_pending),
        ));
        out.push(family(
            "kairos_retry_scheduled_total",
            "Failed records scheduled for a retry.",
            MetricType::COUNTER,
            per(&retry_scheduled),
        ));
        out.push(family(
            "kairos_retry_redelivered_total",
            "Records redelivered to their target, by attempt.",
            MetricType::COUNTER,
            redelivered
                .iter()
                .map(|((t, a), n)| {
                    (
                        vec![("topic", t.as_str()), ("attempt", a.as_str())],
                        *n as f64,
                    )
                })
                .collect(),
        ));
        out.push(family(
            "kairos_dlq_records_total",
            "Records sent to a dead-letter topic.",
            MetricType::COUNTER,
            per(&dead_lettered),
        ));
    }
    // Consumer groups: committed offset and lag = log end - committed (never negative).
    struct GroupRow {
        group: String,
        topic: String,
        partition: String,
        committed: i64,
        lag: i64,
    }
    let rows: Vec<GroupRow> = broker
        .groups
        .all_committed_offsets()
        .into_iter()
        .filter_map(|(group, topic, partition, committed)| {
            let &(_, _, end) = logs.get(&(topic.clone(), partition))?;
            Some(GroupRow {
                group,
                topic,
                partition: partition.to_string(),
                committed,
                lag: (end - committed).max(0),
            })
        })
        .collect();
    let group_family = |name: &str, help: &str, value: fn(&GroupRow) -> i64| {
        let samples = rows
            .iter()
            .map(|r| {
                let labels = vec![
                    ("consumergroup", r.group.as_str()),
                    ("topic", r.topic.as_str()),
                    ("partition", r.partition.as_str()),
                ];
                (labels, value(r) as f64)
            })
            .collect();
        family(name, help, MetricType::GAUGE, samples)
    };
    if !rows.is_empty() {
        out.push(group_family(
            "kafka_consumergroup_current_offset",
            "Committed offset of a consumer group (kafka-exporter).",
            |r| r.committed,
        ));
        out.push(group_family(
            "kafka_consumergroup_lag",
            "Log end offset minus committed offset (kafka-exporter).",
            |r| r.lag,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_is_503_until_the_broker_is_loaded_and_serving() {
        // Proves probes see "not ready" while logs load, and ready only after the listener runs.
        let metrics = Arc::new(Metrics::new(|_| true).unwrap());
        let state = Arc::new(HttpState::new(metrics.clone()));
        let status = |s: &Arc<HttpState>| {
            let s = s.clone();
            async move { readyz(State(s)).await.into_response().status() }
        };
        assert_eq!(status(&state).await, StatusCode::SERVICE_UNAVAILABLE);
        let dir = tempfile::tempdir().unwrap();
        let config = crate::server::test_config(dir.path(), 1);
        state.set_broker(
            crate::server::open_standalone(&config, metrics)
                .await
                .unwrap(),
        );
        assert_eq!(
            status(&state).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "listener not started yet"
        );
        state.set_ready();
        assert_eq!(status(&state).await, StatusCode::OK);
    }
}
