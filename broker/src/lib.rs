//! Kairos broker: a Kafka-compatible broker with time built in.
//!
//! Module map (data flows one way, top to bottom; nothing below calls up):
//! - [`config`]    — `server.properties` parsing with Kafka's key names and defaults.
//! - [`net`]       — TCP listener, request framing, one task per connection.
//! - [`protocol`]  — dispatch per API key, request → response.
//! - [`metadata`]  — the topic registry (names, ids, partition counts, configs).
//! - [`partition`] — a partition replica: log + producer state + fetch wake-ups.
//! - [`group`]     — classic consumer group coordinator and committed offsets.
//! - [`log`]       — segments, offset/time indexes, recovery, retention, compaction.
//! - [`cli`]       — the admin CLI carried by the `kairos` binary.
pub mod log;
pub mod group;
