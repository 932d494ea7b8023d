//! Broker-to-broker calls (followers' Fetch and OffsetsForLeaderEpoch) over the shared minimal
//! Kafka client.

pub use kairos_client::Connection;

/// Fetch version used between brokers (replica fetching, redrive reads).
pub const FETCH_VERSION: i16 = 12;
