//! Broker metrics, named as Kafka's JMX exporter rules name them, so existing dashboards work.
//!
//! Hot paths only touch atomics: per-topic counters are resolved once per partition (an `Arc`
//! held by the partition), per-request counters and histograms are resolved once per API key at
//! start-up. Everything else (log sizes, offsets, group lag, partition counts) is read from the
//! broker's state when Prometheus scrapes (see `http.rs`).
//!
//! Families produced here (labels in braces):
//! - `kafka_server_brokertopicmetrics_{messagesin,bytesin,bytesout,totalproducerequests,
//!   failedproducerequests,totalfetchrequests,failedfetchrequests}_total` — once without labels
//!   (broker-wide, like JMX's topic-less bean) and once per `{topic}`.
//! - `kafka_network_requestmetrics_requests_total{request}`,
//!   `kafka_network_requestmetrics_errors_total{request,error}`,
//!   `kafka_network_requestmetrics_{totaltimems,requestqueuetimems,localtimems,remotetimems,
//!   responsesendtimems}{request}` histograms (milliseconds).
//! - `kafka_server_socket_server_metrics_connections{listener}` (JMX's `connection-count`;
//!   promtool rejects a `_count` suffix on a gauge),
//!   `kafka_network_requestchannel_requestqueuesize`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use parking_lot::RwLock;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};

/// Kafka's BrokerTopicMetrics for one topic (or all topics).
#[derive(Default)]
pub struct TopicCounters {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub produce_requests: AtomicU64,
    pub produce_failed: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub fetch_failed: AtomicU64,
}

/// The counters of a topic plus the broker-wide ones, updated together.
#[derive(Clone)]
pub struct TopicMetrics {
    topic: Arc<TopicCounters>,
    all: Arc<TopicCounters>,
}

impl TopicMetrics {
    /// A successful append of `messages` records in `bytes` batch bytes.
    pub fn produced(&self, messages: u64, bytes: u64) {
        for c in [&self.topic, &self.all] {
            c.produce_requests.fetch_add(1, Ordering::Relaxed);
            c.messages_in.fetch_add(messages, Ordering::Relaxed);
            c.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    pub fn produce_failed(&self) {
        for c in [&self.topic, &self.all] {
            c.produce_requests.fetch_add(1, Ordering::Relaxed);
            c.produce_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// A fetch of this partition answered with `bytes` record bytes (0 when failed).
    pub fn fetched(&self, bytes: u64, failed: bool) {
        for c in [&self.topic, &self.all] {
            c.fetch_requests.fetch_add(1, Ordering::Relaxed);
            c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
            if failed {
                c.fetch_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Error codes counted per request type: Kafka's codes run from -1 to about 130.
const ERROR_CODES_MAX: usize = 160;

/// Per API key: request count, errors by code, and latency histograms.
pub struct RequestMetrics {
    pub requests: AtomicU64,
    errors: Vec<AtomicU64>,
    pub total_ms: Histogram,
    pub queue_ms: Histogram,
    pub local_ms: Histogram,
    pub remote_ms: Histogram,
    pub send_ms: Histogram,
}

impl RequestMetrics {
    /// Counts an error code found in a response (0 is not an error; -1 is UNKNOWN_SERVER_ERROR).
    pub fn error(&self, code: i16) {
        if code == 0 {
            return;
        }
        let index = (code as i32 + 1).clamp(0, ERROR_CODES_MAX as i32 - 1) as usize;
        self.errors[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// Kafka's name for an API key as the JMX `request` label shows it (e.g. "Produce").
pub fn request_name(key: ApiKey) -> String {
    format!("{key:?}")
}

/// Kafka's `Errors` enum name for a code, e.g. 3 → "UNKNOWN_TOPIC_OR_PARTITION".
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(kafka_protocol::error::ResponseError::Unknown(c)) => format!("UNKNOWN_{c}"),
        Some(e) => {
            let camel = e.to_string();
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    all_topics: Arc<TopicCounters>,
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    /// Indexed by API key number.
    requests: Vec<Option<RequestMetrics>>,
    pub connections: AtomicI64,
    /// Requests read and not yet answered (Kafka's request queue size).
    pub in_flight: AtomicI64,
    /// `kairos_delay_lateness_seconds`: forward time minus due time.
    pub delay_lateness: Histogram,
    /// `kairos_retry_lateness_seconds`: redelivery time minus due time.
    pub retry_lateness: Histogram,
    /// `kairos_redis_up`: 1 when the retry scheduler's last Redis call worked, 0 when not,
    /// -1 before any call (Redis not configured or no retry topic yet; not exported).
    pub redis_up: AtomicI64,
    /// `kairos_redis_request_seconds`: round trip of the retry scheduler's Redis calls.
    pub redis_latency: Histogram,
}

/// Latency buckets in milliseconds: from 0.1 ms (a cached metadata answer) to 30 s (a long
/// poll at its cap).
const LATENCY_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0, 30000.0,
];

impl Metrics {
    /// Registers the histograms and the process collector for the API keys served.
    pub fn new(served: impl Fn(ApiKey) -> bool) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let histogram = |name: &str, help: &str| -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_MS.to_vec()),
                &["request"],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let total = histogram(
            "kafka_network_requestmetrics_totaltimems",
            "Request total time in milliseconds, from the frame read to the response written.",
        )?;
        let queue = histogram(
            "kafka_network_requestmetrics_requestqueuetimems",
            "Time a read request waited before its handler ran, in milliseconds.",
        )?;
        let local = histogram(
            "kafka_network_requestmetrics_localtimems",
            "Time the handler worked on the request, in milliseconds.",
        )?;
        let remote = histogram(
            "kafka_network_requestmetrics_remotetimems",
            "Time the request waited in a purgatory (long-poll fetch), in milliseconds.",
        )?;
        let send = histogram(
            "kafka_network_requestmetrics_responsesendtimems",
            "Time to write the response, in milliseconds.",
        )?;
        let max_key = ApiKey::iter().map(|k| k as usize).max().unwrap_or(0);
        let mut requests: Vec<Option<RequestMetrics>> = (0..=max_key).map(|_| None).collect();
        for key in ApiKey::iter().filter(|k| served(*k)) {
            let name = request_name(key);
            let labels = [name.as_str()];
            requests[key as usize] = Some(RequestMetrics {
                requests: AtomicU64::new(0),
                errors: (0..ERROR_CODES_MAX).map(|_| AtomicU64::new(0)).collect(),
                total_ms: total.get_metric_with_label_values(&labels)?,
                queue_ms: queue.get_metric_with_label_values(&labels)?,
                local_ms: local.get_metric_with_label_values(&labels)?,
                remote_ms: remote.get_metric_with_label_values(&labels)?,
                send_ms: send.get_metric_with_label_values(&labels)?,
            });
        }
        // Lateness of forwarded records: 1 ms to a minute.
        let lateness = |name: &str, help: &str| -> prometheus::Result<Histogram> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let delay_lateness = lateness(
            "kairos_delay_lateness_seconds",
            "How late delayed records were forwarded: forward time minus due time, in seconds.",
        )?;
        let retry_lateness = lateness(
            "kairos_retry_lateness_seconds",
            "How late retries were redelivered: redelivery time minus due time, in seconds.",
        )?;
        let redis_latency = Histogram::with_opts(
            HistogramOpts::new(
                "kairos_redis_request_seconds",
                "Round trip of the retry scheduler's Redis calls (scripts and pipelines), in seconds.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )?;
        registry.register(Box::new(redis_latency.clone()))?;
        Ok(Metrics {
            registry,
            delay_lateness,
            retry_lateness,
            redis_up: AtomicI64::new(-1),
            redis_latency,
            all_topics: Arc::new(TopicCounters::default()),
            topics: RwLock::new(HashMap::new()),
            requests,
            connections: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
        })
    }

    /// The counters of `topic` (created on first use; partitions keep the handle).
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        if let Some(t) = self.topics.read().get(topic) {
            return TopicMetrics {
                topic: t.clone(),
                all: self.all_topics.clone(),
            };
        }
        let t = self
            .topics
            .write()
            .entry(topic.to_string())
            .or_default()
            .clone();
        TopicMetrics {
            topic: t,
            all: self.all_topics.clone(),
        }
    }

    /// Forgets a deleted topic's series.
    pub fn remove_topic(&self, topic: &str) {
        self.topics.write().remove(topic);
    }

    pub fn request(&self, key: ApiKey) -> Option<&RequestMetrics> {
        self.requests.get(key as usize).and_then(Option::as_ref)
    }

    /// The counter and gauge families kept here (histograms and process metrics come from the
    /// registry).
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let topics = self.topics.read();
        type Field = fn(&TopicCounters) -> &AtomicU64;
        let fields: [(&str, &str, Field); 7] = [
            ("messagesin", "Records appended.", |c| &c.messages_in),
            ("bytesin", "Record batch bytes appended.", |c| &c.bytes_in),
            ("bytesout", "Record batch bytes sent to fetchers.", |c| {
                &c.bytes_out
            }),
            (
                "totalproducerequests",
                "Produce requests per partition.",
                |c| &c.produce_requests,
            ),
            (
                "failedproducerequests",
                "Failed produce requests per partition.",
                |c| &c.produce_failed,
            ),
            ("totalfetchrequests", "Fetch requests per partition.", |c| {
                &c.fetch_requests
            }),
            (
                "failedfetchrequests",
                "Failed fetch requests per partition.",
                |c| &c.fetch_failed,
            ),
        ];
        for (name, help, field) in fields {
            let mut samples = vec![(
                vec![],
                field(&self.all_topics).load(Ordering::Relaxed) as f64,
            )];
            for (topic, c) in topics.iter() {
                samples.push((
                    vec![("topic", topic.as_str())],
                    field(c).load(Ordering::Relaxed) as f64,
                ));
            }
            out.push(family(
                &format!("kafka_server_brokertopicmetrics_{name}_total"),
                help,
                MetricType::COUNTER,
                samples,
            ));
        }
        let mut requests = Vec::new();
        let mut errors = Vec::new();
        let names: Vec<(ApiKey, String)> = ApiKey::iter().map(|k| (k, request_name(k))).collect();
        for (key, name) in &names {
            let Some(r) = self.request(*key) else {
                continue;
            };
            requests.push((
                vec![("request", name.as_str())],
                r.requests.load(Ordering::Relaxed) as f64,
            ));
            for (i, e) in r.errors.iter().enumerate() {
                let n = e.load(Ordering::Relaxed);
                if n > 0 {
                    errors.push((name.as_str(), error_name(i as i16 - 1), n));
                }
            }
        }
        out.push(family(
            "kafka_network_requestmetrics_requests_total",
            "Requests received, by type.",
            MetricType::COUNTER,
            requests,
        ));
        let error_samples: Vec<(Vec<(&str, &str)>, f64)> = errors
            .iter()
            .map(|(r, e, n)| (vec![("request", *r), ("error", e.as_str())], *n as f64))
            .collect();
        if !error_samples.is_empty() {
            out.push(family(
                "kafka_network_requestmetrics_errors_total",
                "Error codes in responses, by request type and error.",
                MetricType::COUNTER,
                error_samples,
            ));
        }
        out.push(family(
            "kafka_server_socket_server_metrics_connections",
            "Open client connections.",
            MetricType::GAUGE,
            vec![(
                vec![("listener", "PLAINTEXT")],
                self.connections.load(Ordering::Relaxed) as f64,
            )],
        ));
        let redis_up = self.redis_up.load(Ordering::Relaxed);
        if redis_up >= 0 {
            out.push(family(
                "kairos_redis_up",
                "1 when the retry scheduler reaches Redis, 0 when it does not.",
                MetricType::GAUGE,
                vec![(vec![], redis_up as f64)],
            ));
        }
        out.push(family(
            "kafka_network_requestchannel_requestqueuesize",
            "Requests read and not yet answered.",
            MetricType::GAUGE,
            vec![(vec![], self.in_flight.load(Ordering::Relaxed) as f64)],
        ));
        out
    }
}

/// Builds one metric family from (labels, value) samples.
pub fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Vec<(&str, &str)>, f64)>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    for (labels, value) in samples {
        let pairs = labels
            .into_iter()
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name(k.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect();
        let mut m = Metric::from_label(pairs);
        match kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        f.mut_metric().push(m);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_follow_kafkas_enum() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
    }

    #[test]
    fn topic_counters_feed_the_broker_wide_series_too() {
        let m = Metrics::new(|_| true).unwrap();
        let a = m.topic("a");
        a.produced(10, 1000);
        m.topic("b").produced(1, 50);
        a.fetched(300, false);
        m.request(ApiKey::Produce).unwrap().error(3);
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &m.families(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(
            text.contains("kafka_server_brokertopicmetrics_messagesin_total 11\n"),
            "{text}"
        );
        assert!(
            text.contains("kafka_server_brokertopicmetrics_messagesin_total{topic=\"a\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("kafka_server_brokertopicmetrics_bytesin_total{topic=\"b\"} 50\n"),
            "{text}"
        );
        assert!(
            text.contains("kafka_server_brokertopicmetrics_bytesout_total 300\n"),
            "{text}"
        );
        assert!(
            text.contains("kafka_network_requestmetrics_errors_total{request=\"Produce\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 1\n"),
            "{text}"
        );
    }
}
