//! Time built into the broker: delayed delivery (and, later, retries and dead letters).
//!
//! - [`headers`] — the `kairos.*` record headers and their parsing (pure).
//! - [`murmur2`] — the Java client's default partitioner, so forwarded records land where a
//!   Kafka producer would put them.
//! - [`due_store`] — the on-disk due-time index (per-minute bucket files).
//! - [`dlq`]       — redrive of dead-letter records.
//! - [`retry_redis`] — retry topics scheduled in Redis sorted sets (`retry.redis.url`).
//! - [`delay`]   — the delay engine: indexes delay topics' logs by due time, forwards due
//!   records to their targets exactly once, applies cancellations.
pub mod delay;
pub mod deliver;
pub mod dlq;
pub mod due_store;
pub mod headers;
pub mod murmur2;
pub mod retry_redis;
