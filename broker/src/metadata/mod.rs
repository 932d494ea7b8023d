//! Cluster metadata: topics (ids, configs, partition assignments, leaders, ISR, leader epochs),
//! brokers, and the Raft quorum that keeps every node's copy the same.
//!
//! - [`image`]: the state machine (the cluster image and the commands that change it).
//! - [`store`]: the Raft log, vote and snapshots on disk (`<log.dir>/__cluster_metadata-0/`).
//! - [`quorum`]: openraft wiring, the controller's gRPC service, broker registration,
//!   heartbeats and fencing, and [`quorum::Metadata`], the handle the rest of the broker uses.
//!
//! This file keeps what is independent of the quorum: topic names and topic configs, and the
//! rules that check them.

pub mod image;
pub mod quorum;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use image::{BrokerInfo, ClusterImage, Command, PartitionInfo, Reply, NO_LEADER};

/// Kafka error codes used by metadata.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const BROKER_NOT_AVAILABLE: i16 = 8;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const INVALID_UPDATE_VERSION: i16 = 95;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const INELIGIBLE_REPLICA: i16 = 107;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const TOPIC_DELETION_DISABLED: i16 = 73;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Only the configs set on the topic (Kafka's DYNAMIC_TOPIC_CONFIG source).
    pub configs: BTreeMap<String, String>,
    #[serde(default)]
    pub internal: bool,
    /// Per partition: replicas, ISR, leader and epochs.
    #[serde(default)]
    pub assignment: Vec<PartitionInfo>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MetaError {
    pub code: i16,
    pub message: String,
}

impl MetaError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's rule: 1–249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let bad = |why: &str| {
        Err(MetaError::new(
            codes::INVALID_TOPIC_EXCEPTION,
            format!("Topic name \"{name}\" is illegal, {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it can't be empty");
    }
    if name == "." || name == ".." {
        return bad("it can't be '.' or '..'");
    }
    if name.len() > 249 {
        return bad("it can't be longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("it contains a character other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// The kind of value a topic config takes, for validation.
#[derive(Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    Ratio,
    Bool,
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    /// The name of another topic (Kairos' `kairos.delay.target`).
    TopicName,
    /// A comma-separated list of non-negative longs (`kairos.retry.backoff.ms`).
    LongList,
    /// `*`, empty, or `partition:broker,...` (the `*.replication.throttled.replicas` configs).
    ThrottledReplicas,
}

/// Kairos' own topic configs (delay topics, design.md §4).
pub const DELAY_TARGET: &str = "kairos.delay.target";
pub const DELAY_MS: &str = "kairos.delay.ms";
/// Retry topics (design.md §4).
pub const RETRY_TARGET: &str = "kairos.retry.target";
pub const RETRY_BACKOFF_MS: &str = "kairos.retry.backoff.ms";
pub const RETRY_MAX_ATTEMPTS: &str = "kairos.retry.max.attempts";
pub const RETRY_JITTER_MS: &str = "kairos.retry.jitter.ms";
pub const DLQ_TOPIC: &str = "kairos.dlq.topic";
/// Kafka's default retry schedule for Kairos retry topics.
pub const RETRY_BACKOFF_DEFAULT: &str =
    "10000,30000,60000,120000,300000,600000,1800000,3600000,7200000";
pub const RETRY_MAX_ATTEMPTS_DEFAULT: i64 = 9;

/// Topic-level configs Kairos accepts: Kafka's name, the broker key whose value is the default,
/// and the value kind.
const TOPIC_CONFIGS: &[(&str, Option<&str>, Kind)] = &[
    (
        "cleanup.policy",
        Some("log.cleanup.policy"),
        Kind::ListOf(&["delete", "compact"]),
    ),
    (
        "compression.type",
        Some("compression.type"),
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    (
        "delete.retention.ms",
        Some("log.cleaner.delete.retention.ms"),
        Kind::Long { min: 0 },
    ),
    (
        "file.delete.delay.ms",
        Some("log.segment.delete.delay.ms"),
        Kind::Long { min: 0 },
    ),
    (
        "flush.messages",
        Some("log.flush.interval.messages"),
        Kind::Long { min: 1 },
    ),
    (
        "flush.ms",
        Some("log.flush.interval.ms"),
        Kind::Long { min: 0 },
    ),
    (
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        Kind::Int { min: 0 },
    ),
    (
        "max.compaction.lag.ms",
        Some("log.cleaner.max.compaction.lag.ms"),
        Kind::Long { min: 1 },
    ),
    (
        "max.message.bytes",
        Some("message.max.bytes"),
        Kind::Int { min: 0 },
    ),
    (
        "message.timestamp.type",
        Some("log.message.timestamp.type"),
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    (
        "min.cleanable.dirty.ratio",
        Some("log.cleaner.min.cleanable.ratio"),
        Kind::Ratio,
    ),
    (
        "min.compaction.lag.ms",
        Some("log.cleaner.min.compaction.lag.ms"),
        Kind::Long { min: 0 },
    ),
    (
        "min.insync.replicas",
        Some("min.insync.replicas"),
        Kind::Int { min: 1 },
    ),
    ("preallocate", Some("log.preallocate"), Kind::Bool),
    // Any negative size means no limit (Kafka has no lower bound here).
    (
        "retention.bytes",
        Some("log.retention.bytes"),
        Kind::Long { min: i64::MIN },
    ),
    (
        "retention.ms",
        Some("log.retention.ms"),
        Kind::Long { min: -1 },
    ),
    (
        "segment.bytes",
        Some("log.segment.bytes"),
        Kind::Int { min: 14 },
    ),
    (
        "segment.index.bytes",
        Some("log.index.size.max.bytes"),
        Kind::Int { min: 4 },
    ),
    (
        "segment.jitter.ms",
        Some("log.roll.jitter.ms"),
        Kind::Long { min: 0 },
    ),
    ("segment.ms", Some("log.roll.ms"), Kind::Long { min: 1 }),
    (
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        Kind::Bool,
    ),
    (
        "message.timestamp.before.max.ms",
        Some("log.message.timestamp.before.max.ms"),
        Kind::Long { min: 0 },
    ),
    (
        "message.timestamp.after.max.ms",
        Some("log.message.timestamp.after.max.ms"),
        Kind::Long { min: 0 },
    ),
    (LEADER_THROTTLED_REPLICAS, None, Kind::ThrottledReplicas),
    (FOLLOWER_THROTTLED_REPLICAS, None, Kind::ThrottledReplicas),
];

/// Replicas whose leader-side replication is throttled to `leader.replication.throttled.rate`.
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
/// Replicas whose follower-side replication is throttled to `follower.replication.throttled.rate`.
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";
pub const LEADER_THROTTLED_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_THROTTLED_RATE: &str = "follower.replication.throttled.rate";

/// Broker configs that change while the broker runs (Kafka's dynamic broker configs): set with
/// AlterConfigs / IncrementalAlterConfigs on a broker resource, for one broker id or, with the
/// empty name, as the cluster-wide default.
const DYNAMIC_BROKER_CONFIGS: &[(&str, Kind)] = &[
    (LEADER_THROTTLED_RATE, Kind::Long { min: 0 }),
    (FOLLOWER_THROTTLED_RATE, Kind::Long { min: 0 }),
];

pub fn dynamic_broker_config_names() -> impl Iterator<Item = &'static str> {
    DYNAMIC_BROKER_CONFIGS.iter().map(|(n, _)| *n)
}

/// Checks one dynamic broker config, with Kafka's messages.
pub fn validate_broker_config(key: &str, value: &str) -> Result<(), MetaError> {
    match DYNAMIC_BROKER_CONFIGS.iter().find(|(n, _)| *n == key) {
        Some((_, kind)) => check_kind(kind, key, value),
        None => Err(MetaError::new(
            codes::INVALID_CONFIG,
            format!(
                "Cannot update these configs dynamically: {key} (Kairos changes only {} while running; set others in server.properties)",
                dynamic_broker_config_names().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Which partitions of a topic a `*.replication.throttled.replicas` value throttles on broker
/// `node`: all of them, or those listed as `partition:node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttled {
    All,
    Partitions(std::collections::BTreeSet<i32>),
}

impl Throttled {
    /// What a well-formed value throttles on broker `node` (None: nothing, or malformed).
    pub fn parse(value: &str, node: i32) -> Option<Throttled> {
        let value = value.trim();
        if value == "*" {
            return Some(Throttled::All);
        }
        let set: std::collections::BTreeSet<i32> = throttled_pairs(value)?
            .into_iter()
            .filter(|(_, b)| *b == node)
            .map(|(p, _)| p)
            .collect();
        (!set.is_empty()).then_some(Throttled::Partitions(set))
    }

    pub fn contains(&self, partition: i32) -> bool {
        match self {
            Throttled::All => true,
            Throttled::Partitions(set) => set.contains(&partition),
        }
    }
}

/// The `partition:broker` pairs of a throttled-replicas list other than `*` (empty for an empty
/// value); None when an item is not two non-negative ints.
fn throttled_pairs(value: &str) -> Option<Vec<(i32, i32)>> {
    let id = |v: &str| v.trim().parse::<i32>().ok().filter(|v| *v >= 0);
    if value.trim().is_empty() {
        return Some(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let (p, b) = item.split_once(':')?;
            Some((id(p)?, id(b)?))
        })
        .collect()
}

/// Kairos topic configs: no broker-level default.
const KAIROS_TOPIC_CONFIGS: &[(&str, Kind)] = &[
    (DELAY_TARGET, Kind::TopicName),
    (DELAY_MS, Kind::Long { min: 0 }),
    (RETRY_TARGET, Kind::TopicName),
    (RETRY_BACKOFF_MS, Kind::LongList),
    (RETRY_MAX_ATTEMPTS, Kind::Int { min: 1 }),
    (RETRY_JITTER_MS, Kind::Long { min: 0 }),
    (DLQ_TOPIC, Kind::TopicName),
];

/// Kairos' own topic config names (no broker default).
pub fn kairos_topic_config_names() -> impl Iterator<Item = &'static str> {
    KAIROS_TOPIC_CONFIGS.iter().map(|(n, _)| *n)
}

/// Names of every topic config, with the broker key that supplies its default.
/// Each topic config and the broker config behind its default (None: no broker default, the
/// default is empty).
pub fn topic_config_names() -> impl Iterator<Item = (&'static str, Option<&'static str>)> {
    TOPIC_CONFIGS.iter().map(|(n, b, _)| (*n, *b))
}

/// Checks one topic config the way Kafka's LogConfig.validate does.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), MetaError> {
    let kind = TOPIC_CONFIGS
        .iter()
        .find(|(n, _, _)| *n == key)
        .map(|(_, _, k)| k)
        .or_else(|| {
            KAIROS_TOPIC_CONFIGS
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, k)| k)
        });
    let Some(kind) = kind else {
        return Err(MetaError::new(
            codes::INVALID_CONFIG,
            format!("Unknown topic config name: {key}"),
        ));
    };
    check_kind(kind, key, value)
}

fn check_kind(kind: &Kind, key: &str, value: &str) -> Result<(), MetaError> {
    let invalid = |why: String| {
        Err(MetaError::new(
            codes::INVALID_CONFIG,
            format!("Invalid value {value} for configuration {key}: {why}"),
        ))
    };
    match kind {
        Kind::Long { min } | Kind::Int { min } => match value.trim().parse::<i64>() {
            Ok(v) if v < *min => invalid(format!("Value must be at least {min}")),
            Ok(v) if matches!(kind, Kind::Int { .. }) && v > i32::MAX as i64 => {
                invalid("Value must fit in an int".into())
            }
            Ok(_) => Ok(()),
            Err(_) => invalid("Not a number".into()),
        },
        Kind::LongList => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.is_empty()
                || items
                    .iter()
                    .any(|i| i.parse::<i64>().map(|v| v < 0).unwrap_or(true))
            {
                invalid("Expected a comma-separated list of non-negative milliseconds".into())
            } else {
                Ok(())
            }
        }
        Kind::ThrottledReplicas => {
            let value = value.trim();
            if value == "*" || throttled_pairs(value).is_some() {
                Ok(())
            } else {
                invalid("Expected '*' or a comma-separated list of [partitionId]:[brokerId]".into())
            }
        }
        Kind::TopicName => match validate_topic_name(value.trim()) {
            Ok(()) => Ok(()),
            Err(e) => invalid(e.message),
        },
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => invalid("Value must be between 0 and 1".into()),
        },
        Kind::Bool => match value.trim() {
            "true" | "false" => Ok(()),
            _ => invalid("Expected value to be either true or false".into()),
        },
        Kind::OneOf(allowed) => {
            if allowed.contains(&value.trim()) {
                Ok(())
            } else {
                invalid(format!("String must be one of: {}", allowed.join(", ")))
            }
        }
        Kind::ListOf(allowed) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.is_empty() || items.iter().any(|i| !allowed.contains(i)) {
                invalid(format!("Each value must be one of: {}", allowed.join(", ")))
            } else {
                Ok(())
            }
        }
    }
}

/// Checks what a delay topic's configs mean across topics (INVALID_CONFIG otherwise): the target
/// is not the topic itself, following targets never loops back, and a delay topic is not
/// compacted (its pending records must stay until delivered).
pub(crate) fn validate_delay_configs(
    topics: &BTreeMap<String, Arc<TopicInfo>>,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> Result<(), MetaError> {
    validate_retry_configs(name, configs)?;
    let Some(target) = configs.get(DELAY_TARGET).map(|t| t.trim().to_string()) else {
        if configs.contains_key(DELAY_MS) {
            return Err(MetaError::new(
                codes::INVALID_CONFIG,
                format!("{DELAY_MS} needs {DELAY_TARGET}: only delay topics delay records"),
            ));
        }
        return Ok(());
    };
    let invalid = |why: String| Err(MetaError::new(codes::INVALID_CONFIG, why));
    if target == name {
        return invalid(format!("Invalid value {target} for configuration {DELAY_TARGET}: a delay topic cannot target itself"));
    }
    if configs
        .get("cleanup.policy")
        .is_some_and(|p| p.contains("compact"))
    {
        return invalid(format!("A delay topic ({DELAY_TARGET}) cannot use cleanup.policy=compact: pending records must stay until delivered"));
    }
    // Follow the chain of delay targets; bounded by the number of topics.
    let mut next = target.clone();
    for _ in 0..=topics.len() {
        let Some(t) = topics.get(&next).and_then(|t| t.configs.get(DELAY_TARGET)) else {
            return Ok(());
        };
        if t == name {
            return invalid(format!("Invalid value {target} for configuration {DELAY_TARGET}: delay topics would forward in a loop ({name} -> {target} -> ... -> {name})"));
        }
        next = t.clone();
    }
    invalid(format!(
        "Invalid value {target} for configuration {DELAY_TARGET}: the chain of delay targets loops"
    ))
}

/// A retry topic's configs: target not itself, DLQ neither the target nor the retry topic,
/// retry keys only on a retry topic, and not a delay topic at the same time.
fn validate_retry_configs(name: &str, configs: &BTreeMap<String, String>) -> Result<(), MetaError> {
    let invalid = |why: String| Err(MetaError::new(codes::INVALID_CONFIG, why));
    let Some(target) = configs.get(RETRY_TARGET).map(|t| t.trim().to_string()) else {
        for k in [
            RETRY_BACKOFF_MS,
            RETRY_MAX_ATTEMPTS,
            RETRY_JITTER_MS,
            DLQ_TOPIC,
        ] {
            if configs.contains_key(k) {
                return invalid(format!(
                    "{k} needs {RETRY_TARGET}: only retry topics retry records"
                ));
            }
        }
        return Ok(());
    };
    if configs.contains_key(DELAY_TARGET) {
        return invalid(format!("A topic cannot be both a delay topic ({DELAY_TARGET}) and a retry topic ({RETRY_TARGET})"));
    }
    if target == name {
        return invalid(format!("Invalid value {target} for configuration {RETRY_TARGET}: a retry topic cannot target itself"));
    }
    let dlq = configs
        .get(DLQ_TOPIC)
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|| format!("{target}.dlq"));
    if dlq == target || dlq == name {
        return invalid(format!("Invalid value {dlq} for configuration {DLQ_TOPIC}: the dead-letter topic must differ from the target and the retry topic"));
    }
    if configs
        .get("cleanup.policy")
        .is_some_and(|p| p.contains("compact"))
    {
        return invalid(format!("A retry topic ({RETRY_TARGET}) cannot use cleanup.policy=compact: pending retries must stay until delivered"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_replicas_are_read_for_this_broker() {
        assert_eq!(Throttled::parse("*", 3), Some(Throttled::All));
        let t = Throttled::parse("0:1, 1:3 ,2:3", 3).unwrap();
        assert!(!t.contains(0) && t.contains(1) && t.contains(2));
        assert_eq!(Throttled::parse("0:1", 3), None);
        assert_eq!(Throttled::parse("", 3), None);
        for bad in ["zero:1", "0:1,", "0-1", "-1:2"] {
            assert!(
                validate_topic_config(LEADER_THROTTLED_REPLICAS, bad).is_err(),
                "{bad}"
            );
        }
        for good in ["", "*", "0:1", " 0:1 , 2:3 "] {
            assert!(
                validate_topic_config(LEADER_THROTTLED_REPLICAS, good).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "é", &"x".repeat(250)] {
            assert_eq!(
                validate_topic_name(bad).unwrap_err().code,
                codes::INVALID_TOPIC_EXCEPTION,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topic_configs_are_validated() {
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        for (k, v) in [
            ("retention.ms", "soon"),
            ("retention.ms", "-2"),
            ("cleanup.policy", "forever"),
            ("min.cleanable.dirty.ratio", "2"),
            ("no.such.config", "1"),
            ("segment.bytes", "99999999999"),
        ] {
            assert_eq!(
                validate_topic_config(k, v).unwrap_err().code,
                codes::INVALID_CONFIG,
                "{k}={v}"
            );
        }
    }
}
