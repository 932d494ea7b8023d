//! The topic registry: names, ids, partition counts and per-topic configs.
//!
//! Single node for now: the registry is a JSON file `<log.dir>/kairos-topics.json`, replaced
//! atomically (write to a temporary file, fsync, rename). The cluster issue moves this image into
//! the Raft metadata log; the in-memory shape (`TopicInfo`) stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Kafka error codes used by the registry.
pub mod codes {
    pub const NONE: i16 = 0;
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
const TOPIC_CONFIGS: &[(&str, &str, Kind)] = &[
    (
        "cleanup.policy",
        "log.cleanup.policy",
        Kind::ListOf(&["delete", "compact"]),
    ),
    (
        "compression.type",
        "compression.type",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    (
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        Kind::Long { min: 0 },
    ),
    (
        "file.delete.delay.ms",
        "log.segment.delete.delay.ms",
        Kind::Long { min: 0 },
    ),
    (
        "flush.messages",
        "log.flush.interval.messages",
        Kind::Long { min: 1 },
    ),
    ("flush.ms", "log.flush.interval.ms", Kind::Long { min: 0 }),
    (
        "index.interval.bytes",
        "log.index.interval.bytes",
        Kind::Int { min: 0 },
    ),
    (
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        Kind::Long { min: 1 },
    ),
    (
        "max.message.bytes",
        "message.max.bytes",
        Kind::Int { min: 0 },
    ),
    (
        "message.timestamp.type",
        "log.message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        Kind::Ratio,
    ),
    (
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        Kind::Long { min: 0 },
    ),
    (
        "min.insync.replicas",
        "min.insync.replicas",
        Kind::Int { min: 1 },
    ),
    ("preallocate", "log.preallocate", Kind::Bool),
    (
        "retention.bytes",
        "log.retention.bytes",
        Kind::Long { min: -1 },
    ),
    ("retention.ms", "log.retention.ms", Kind::Long { min: -1 }),
    ("segment.bytes", "log.segment.bytes", Kind::Int { min: 14 }),
    (
        "segment.index.bytes",
        "log.index.size.max.bytes",
        Kind::Int { min: 4 },
    ),
    (
        "segment.jitter.ms",
        "log.roll.jitter.ms",
        Kind::Long { min: 0 },
    ),
    ("segment.ms", "log.roll.ms", Kind::Long { min: 1 }),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        Kind::Bool,
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        Kind::Long { min: 0 },
    ),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        Kind::Long { min: 0 },
    ),
];

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
pub fn topic_config_names() -> impl Iterator<Item = (&'static str, &'static str)> {
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
fn validate_delay_configs(
    topics: &BTreeMap<String, TopicInfo>,
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

#[derive(Serialize, Deserialize, Default)]
struct RegistryFile {
    cluster_id: String,
    topics: Vec<TopicInfo>,
}

/// All topics known to this node. Reads are lock-free-ish (RwLock), writes persist first.
pub struct TopicRegistry {
    path: PathBuf,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, TopicInfo>>,
}

impl TopicRegistry {
    pub fn open(log_dir: &Path) -> Result<Self, MetaError> {
        let storage = |e: std::io::Error| MetaError::new(codes::KAFKA_STORAGE_ERROR, e.to_string());
        std::fs::create_dir_all(log_dir).map_err(storage)?;
        let path = log_dir.join("kairos-topics.json");
        let file: RegistryFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                MetaError::new(
                    codes::KAFKA_STORAGE_ERROR,
                    format!("{} is corrupt: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
            Err(e) => return Err(storage(e)),
        };
        let cluster_id = if file.cluster_id.is_empty() {
            // Kafka cluster ids are 22-char URL-safe base64 UUIDs; a hex uuid is fine for clients.
            Uuid::new_v4().simple().to_string()
        } else {
            file.cluster_id
        };
        let reg = TopicRegistry {
            path,
            cluster_id,
            topics: RwLock::new(
                file.topics
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect(),
            ),
        };
        reg.persist(&reg.topics.read())?;
        Ok(reg)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn persist(&self, topics: &BTreeMap<String, TopicInfo>) -> Result<(), MetaError> {
        let file = RegistryFile {
            cluster_id: self.cluster_id.clone(),
            topics: topics.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| MetaError::new(codes::KAFKA_STORAGE_ERROR, e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| MetaError::new(codes::KAFKA_STORAGE_ERROR, e.to_string()))
    }

    pub fn get(&self, name: &str) -> Option<TopicInfo> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<TopicInfo> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    pub fn all(&self) -> Vec<TopicInfo> {
        self.topics.read().values().cloned().collect()
    }

    /// Validates and (unless `validate_only`) records a new topic.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, MetaError> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(MetaError::new(
                codes::INVALID_PARTITIONS,
                "Number of partitions must be larger than 0.",
            ));
        }
        if replication_factor < 1 {
            return Err(MetaError::new(
                codes::INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0.",
            ));
        }
        if replication_factor > 1 {
            return Err(MetaError::new(
                codes::INVALID_REPLICATION_FACTOR,
                format!(
                    "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only 1 broker(s) are registered."
                ),
            ));
        }
        for (k, v) in &configs {
            validate_topic_config(k, v)?;
        }
        let mut topics = self.topics.write();
        if topics.contains_key(name) {
            return Err(MetaError::new(
                codes::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            ));
        }
        validate_delay_configs(&topics, name, &configs)?;
        let info = TopicInfo {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            configs,
            internal: name == OFFSETS_TOPIC,
        };
        if validate_only {
            return Ok(info);
        }
        let mut next = topics.clone();
        next.insert(name.to_string(), info.clone());
        self.persist(&next)?;
        *topics = next;
        Ok(info)
    }

    pub fn delete(&self, name: &str) -> Result<TopicInfo, MetaError> {
        let mut topics = self.topics.write();
        let Some(info) = topics.get(name).cloned() else {
            return Err(MetaError::new(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.",
            ));
        };
        let mut next = topics.clone();
        next.remove(name);
        self.persist(&next)?;
        *topics = next;
        Ok(info)
    }

    pub fn set_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<TopicInfo, MetaError> {
        let mut topics = self.topics.write();
        let Some(mut info) = topics.get(name).cloned() else {
            return Err(MetaError::new(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.",
            ));
        };
        if count == info.partitions {
            return Err(MetaError::new(
                codes::INVALID_PARTITIONS,
                format!("Topic already has {} partitions.", info.partitions),
            ));
        }
        if count < info.partitions {
            return Err(MetaError::new(
                codes::INVALID_PARTITIONS,
                format!(
                    "Topic currently has {} partitions, which is higher than the requested {count}.",
                    info.partitions
                ),
            ));
        }
        info.partitions = count;
        if validate_only {
            return Ok(info);
        }
        let mut next = topics.clone();
        next.insert(name.to_string(), info.clone());
        self.persist(&next)?;
        *topics = next;
        Ok(info)
    }

    /// Replaces the topic's configs after validating every entry.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicInfo, MetaError> {
        for (k, v) in &configs {
            validate_topic_config(k, v)?;
        }
        let mut topics = self.topics.write();
        let Some(mut info) = topics.get(name).cloned() else {
            return Err(MetaError::new(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.",
            ));
        };
        validate_delay_configs(&topics, name, &configs)?;
        info.configs = configs;
        if validate_only {
            return Ok(info);
        }
        let mut next = topics.clone();
        next.insert(name.to_string(), info.clone());
        self.persist(&next)?;
        *topics = next;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn delay_topic_configs_are_checked_across_topics() {
        let dir = tempfile::tempdir().unwrap();
        let reg = TopicRegistry::open(dir.path()).unwrap();
        let cfg = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        reg.create("orders.cancel", 1, 1, BTreeMap::new(), false)
            .unwrap();
        reg.create(
            "orders.delay",
            1,
            1,
            cfg(&[(DELAY_TARGET, "orders.cancel"), (DELAY_MS, "1800000")]),
            false,
        )
        .unwrap();
        let code = |r: Result<TopicInfo, MetaError>| r.unwrap_err().code;
        assert_eq!(
            code(reg.create("self", 1, 1, cfg(&[(DELAY_TARGET, "self")]), false)),
            codes::INVALID_CONFIG
        );
        assert_eq!(
            code(reg.create("bad", 1, 1, cfg(&[(DELAY_TARGET, "a b")]), false)),
            codes::INVALID_CONFIG
        );
        assert_eq!(
            code(reg.create(
                "neg",
                1,
                1,
                cfg(&[(DELAY_TARGET, "x"), (DELAY_MS, "-5")]),
                false
            )),
            codes::INVALID_CONFIG
        );
        assert_eq!(
            code(reg.create("nodelay", 1, 1, cfg(&[(DELAY_MS, "5")]), false)),
            codes::INVALID_CONFIG
        );
        assert_eq!(
            code(reg.create(
                "c",
                1,
                1,
                cfg(&[(DELAY_TARGET, "x"), ("cleanup.policy", "compact")]),
                false
            )),
            codes::INVALID_CONFIG
        );
        // A loop: orders.cancel becomes a delay topic targeting orders.delay.
        assert_eq!(
            code(reg.set_configs(
                "orders.cancel",
                cfg(&[(DELAY_TARGET, "orders.delay")]),
                false
            )),
            codes::INVALID_CONFIG
        );
        // A chain without a loop is fine; the target need not exist yet.
        reg.create(
            "stage1",
            1,
            1,
            cfg(&[(DELAY_TARGET, "orders.delay")]),
            false,
        )
        .unwrap();
        reg.create(
            "later",
            1,
            1,
            cfg(&[(DELAY_TARGET, "not.yet.created")]),
            false,
        )
        .unwrap();
    }

    #[test]
    fn retry_topic_configs_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let reg = TopicRegistry::open(dir.path()).unwrap();
        let cfg = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let code = |r: Result<TopicInfo, MetaError>| r.unwrap_err().code;
        reg.create(
            "orders.retry",
            1,
            1,
            cfg(&[
                (RETRY_TARGET, "orders"),
                (RETRY_BACKOFF_MS, "100, 200"),
                (RETRY_MAX_ATTEMPTS, "3"),
            ]),
            false,
        )
        .unwrap();
        for bad in [
            vec![(RETRY_TARGET, "r")],
            vec![(RETRY_TARGET, "t"), (RETRY_BACKOFF_MS, "10,-1")],
            vec![(RETRY_TARGET, "t"), (RETRY_BACKOFF_MS, "soon")],
            vec![(RETRY_TARGET, "t"), (RETRY_MAX_ATTEMPTS, "0")],
            vec![(RETRY_TARGET, "t"), (DLQ_TOPIC, "t")],
            vec![(RETRY_TARGET, "t"), (DLQ_TOPIC, "r")],
            vec![(RETRY_MAX_ATTEMPTS, "3")],
            vec![(RETRY_TARGET, "t"), (DELAY_TARGET, "x")],
        ] {
            assert_eq!(
                code(reg.create("r", 1, 1, cfg(&bad), false)),
                codes::INVALID_CONFIG,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn registry_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let reg = TopicRegistry::open(dir.path()).unwrap();
        let t = reg.create("a", 3, 1, BTreeMap::new(), false).unwrap();
        assert_eq!(
            reg.create("a", 1, 1, BTreeMap::new(), false)
                .unwrap_err()
                .code,
            codes::TOPIC_ALREADY_EXISTS
        );
        assert!(reg.create("b", 1, 1, BTreeMap::new(), true).is_ok());
        let cluster = reg.cluster_id().to_string();
        drop(reg);
        let reg = TopicRegistry::open(dir.path()).unwrap();
        assert_eq!(reg.get("a"), Some(t));
        assert_eq!(reg.get("b"), None, "validate_only must not create");
        assert_eq!(reg.cluster_id(), cluster);
    }
}
