//! Kairos broker: a Kafka-compatible broker with time built in.
//!
//! Module map (data flows one way, top to bottom; nothing below calls up):
//! - [`config`]    — `server.properties` parsing with Kafka's key names and defaults.
//! - [`net`]       — TCP listener, request framing, one task per connection.
//! - [`protocol`]  — dispatch per API key, request → response.
//! - [`metadata`]  — the cluster image (brokers, topics, assignments) and its Raft quorum.
//! - [`partition`] — a partition replica: log + producer state + fetch wake-ups.
//! - [`group`]     — classic consumer group coordinator and committed offsets.
//! - [`time`]      — delay topics (and later retries, dead letters).
//! - [`log`]       — segments, offset/time indexes, recovery, retention, compaction.
//! - [`metrics`]   — Prometheus counters and histograms with Kafka's JMX-exporter names.
//! - [`offsets_log`] — `__consumer_offsets` partitions as the coordinator's durable store.
//! - [`producer_ids`] — producer id blocks for InitProducerId.
//! - [`records`]   — record batches the broker writes itself.
//! - [`server`]    — wiring: shared broker state, `run`, background tasks, shutdown.
//! - [`shutdown`]  — the stop signal every task watches.
//! - [`http`]      — `metrics.listener`: `/metrics`, `/healthz`, `/readyz`.
//! - [`admin`]     — the gRPC admin API (`kairos.admin.v1`) on `admin.listener`.
//! - [`cli`]       — the admin CLI carried by the `kairos` binary.
//! - [`fault`]     — `KAIROS_FAULT` failure points for end-to-end tests.
pub mod admin;
pub mod cli;
pub mod config;
pub mod fault;
pub mod group;
pub mod http;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod offsets_log;
pub mod partition;
pub mod producer_ids;
pub mod protocol;
pub mod records;
pub mod replication;
pub mod server;
pub mod shutdown;
pub mod time;
