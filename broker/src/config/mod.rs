//! Broker configuration: Kafka's `server.properties` keys, names and defaults.
//!
//! `kairos serve [--config FILE] [--override key=value ...]`. Unknown keys are kept (so topic
//! defaults such as `log.cleaner.*` can be read later) and warned about once at start-up.

mod security;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config line {line}: expected key=value, got {text:?}")]
    Syntax { line: usize, text: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// Keys Kairos understands. Anything else is warned about (but kept).
const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "log.dirs",
    "log.dir",
    "num.partitions",
    "default.replication.factor",
    "min.insync.replicas",
    "auto.create.topics.enable",
    "delete.topic.enable",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.index.interval.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.flush.scheduler.interval.ms",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.backoff.ms",
    "message.max.bytes",
    "socket.request.max.bytes",
    "max.connections",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offset.metadata.max.bytes",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "controller.quorum.voters",
    "controller.listener.names",
    "process.roles",
    "listener.security.protocol.map",
    "cluster.id",
    "metrics.listener",
    "admin.listener",
    "retry.redis.url",
    "retry.redis.key.prefix",
    "retry.redis.tls.ca.file",
    "kairos.delay.bucket.ms",
    "kairos.delay.window.ms",
    "broker.rack",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "controller.quorum.election.timeout.ms",
    "controller.quorum.startup.timeout.ms",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "replica.lag.time.max.ms",
    "unclean.leader.election.enable",
    "replica.fetch.wait.max.ms",
    "replica.fetch.min.bytes",
    "replica.fetch.max.bytes",
    "replica.fetch.response.max.bytes",
    "replica.fetch.backoff.ms",
    "replica.socket.timeout.ms",
    "replica.high.watermark.checkpoint.interval.ms",
];

/// One entry of `controller.quorum.voters`: `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl Voter {
    /// `host:port` of the voter's controller listener.
    pub fn addr(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// `host:port` to connect to; an IPv6 host (stored without brackets) gets them back.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `process.roles`: broker, controller, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.broker, self.controller) {
            (true, true) => f.write_str("broker,controller"),
            (true, false) => f.write_str("broker"),
            _ => f.write_str("controller"),
        }
    }
}

/// Parses `controller.quorum.voters`; ids must be distinct.
pub fn parse_voters(value: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("{part:?} is not id@host:port"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("{part:?}: node id {id:?} is not a number of 0 or more"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{part:?} is not id@host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{part:?}: port {port:?} is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{part:?}: the host is empty"));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(format!("node id {id} appears twice"));
        }
        if voters.iter().any(|v| v.host == host && v.port == port) {
            return Err(format!("{host}:{port} appears twice"));
        }
        voters.push(Voter {
            id,
            host: host.to_string(),
            port,
        });
    }
    Ok(voters)
}

/// The `host:port` of the listener called `name` in `listeners`.
fn named_listener(value: &str, name: &str) -> Option<(String, u16)> {
    value.split(',').find_map(|part| {
        let (n, rest) = part.trim().split_once("://")?;
        if !n.eq_ignore_ascii_case(name) {
            return None;
        }
        let (host, port) = rest.rsplit_once(':')?;
        Some((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.parse().ok()?,
        ))
    })
}

/// Parsed broker configuration. Field names follow the Kafka keys; units are last.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// The Kafka listener; None on a controller-only node (`process.roles=controller`).
    pub listener: Option<SocketAddr>,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_index_interval_bytes: u64,
    pub log_flush_interval_messages: u64,
    pub log_flush_interval_ms: i64,
    pub log_flush_scheduler_interval_ms: u64,
    /// How far a CreateTime record may be older / newer than the broker's clock (Kafka 4:
    /// unlimited and one hour).
    pub log_message_timestamp_before_max_ms: i64,
    pub log_message_timestamp_after_max_ms: i64,
    pub log_cleanup_policy: String,
    pub log_cleaner_delete_retention_ms: i64,
    pub log_cleaner_min_cleanable_ratio: f64,
    pub log_cleaner_min_compaction_lag_ms: i64,
    pub log_cleaner_backoff_ms: u64,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub offsets_topic_num_partitions: i32,
    pub offsets_retention_minutes: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub metrics_listener: String,
    pub admin_listener: String,
    pub retry_redis_url: Option<String>,
    pub retry_redis_key_prefix: String,
    /// PEM CA for `rediss://` when the server's certificate is not in the system roots.
    pub retry_redis_tls_ca_file: Option<PathBuf>,
    /// Delay engine: width of a due-index bucket file, and how far ahead records are held in
    /// memory (the rest cost no RAM until they come within this window).
    pub kairos_delay_bucket_ms: i64,
    pub kairos_delay_window_ms: i64,
    pub cluster_id: Option<String>,
    pub process_roles: Roles,
    pub quorum_voters: Vec<Voter>,
    /// Where the controller RPCs are served (`controller.listener.names` in `listeners`).
    pub controller_listener: Option<SocketAddr>,
    pub broker_rack: Option<String>,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub controller_quorum_election_timeout_ms: u64,
    /// Kairos: how long start-up waits for a majority of voters before giving up.
    pub controller_quorum_startup_timeout_ms: u64,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    pub replica_lag_time_max_ms: u64,
    pub unclean_leader_election_enable: bool,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_min_bytes: i32,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    /// Kairos default 100 ms (Kafka: 1000): a follower retries sooner after a leader change.
    pub replica_fetch_backoff_ms: u64,
    pub replica_socket_timeout_ms: u64,
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    pub offsets_topic_replication_factor: i16,
    /// Every key=value given, known or not (for DescribeConfigs and later features).
    pub raw: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        // Built from an empty property set, so defaults live in one place: `from_properties`.
        match Self::from_properties(BTreeMap::new()) {
            Ok(c) => c,
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }
}

fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            return Err(ConfigError::Syntax {
                line: i + 1,
                text: line.to_string(),
            });
        };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

struct Props(BTreeMap<String, String>);

impl Props {
    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<T>().map_err(|e| ConfigError::Invalid {
                key: key.into(),
                value: v.clone(),
                reason: e.to_string(),
            }),
        }
    }
    fn opt<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|e| ConfigError::Invalid {
                key: key.into(),
                value: v.clone(),
                reason: e.to_string(),
            }),
        }
    }
    fn invalid(&self, key: &str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            value: self.0.get(key).cloned().unwrap_or_default(),
            reason: reason.into(),
        }
    }

    /// The Kafka listener's bind address and its advertised host and port.
    fn client_listener(
        &self,
        host: String,
        port: u16,
        controller_name: &str,
    ) -> Result<(SocketAddr, String, u16), ConfigError> {
        let bind_host = if host.is_empty() {
            "0.0.0.0".to_string()
        } else {
            host.clone()
        };
        let listener: SocketAddr = format!("{bind_host}:{port}")
            .parse()
            .or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(&(bind_host.as_str(), port))
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or(())
            })
            .map_err(|_| self.invalid("listeners", "host does not resolve"))?;
        let (advertised_host, advertised_port) = match self.0.get("advertised.listeners") {
            Some(v) => parse_listener(v, controller_name)
                .ok_or_else(|| self.invalid("advertised.listeners", "expected NAME://host:port"))?,
            None => {
                let h = if host.is_empty() || host == "0.0.0.0" {
                    "127.0.0.1".to_string()
                } else {
                    host
                };
                (h, port)
            }
        };
        Ok((listener, advertised_host, advertised_port))
    }
}

/// Parses `PLAINTEXT://host:port` (first listener that is not a controller listener).
fn parse_listener(value: &str, controller: &str) -> Option<(String, u16)> {
    for part in value.split(',') {
        let part = part.trim();
        let (name, rest) = part.split_once("://")?;
        if name.eq_ignore_ascii_case(controller) {
            continue;
        }
        let (host, port) = rest.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok()?;
        return Some((host.to_string(), port));
    }
    None
}

impl BrokerConfig {
    pub fn load(path: Option<&std::path::Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut props = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                parse_properties(&text)?
            }
            None => BTreeMap::new(),
        };
        for (i, o) in overrides.iter().enumerate() {
            let Some((k, v)) = o.split_once('=') else {
                return Err(ConfigError::Syntax {
                    line: i + 1,
                    text: format!("--override {o}"),
                });
            };
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        Self::from_properties(props)
    }

    /// Keys that Kairos does not know; `serve` warns about each once.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.raw
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .map(|k| k.as_str())
            .collect()
    }

    pub fn from_properties(map: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let p = Props(map);
        let (node_id, key) = match p.opt::<i32>("node.id")? {
            Some(v) => (v, "node.id"),
            None => (p.get("broker.id", 1)?, "broker.id"),
        };
        // -1 means "no leader" and "no controller" on the wire: ids are 0 or more, as in Kafka.
        if node_id < 0 {
            return Err(p.invalid(key, "must be 0 or more"));
        }
        let listeners =
            p.0.get("listeners")
                .cloned()
                .unwrap_or_else(|| "PLAINTEXT://127.0.0.1:9092".into());
        let controller_name =
            p.0.get("controller.listener.names")
                .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
                .unwrap_or_else(|| "CONTROLLER".to_string());
        security::refuse_unsupported(&p.0, &controller_name)?;
        let process_roles = match p.0.get("process.roles") {
            None => Roles {
                broker: true,
                controller: true,
            },
            Some(v) => {
                let items: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if items.is_empty() || items.iter().any(|i| *i != "broker" && *i != "controller") {
                    return Err(p.invalid(
                        "process.roles",
                        "expected broker, controller or broker,controller",
                    ));
                }
                Roles {
                    broker: items.contains(&"broker"),
                    controller: items.contains(&"controller"),
                }
            }
        };
        let (listener, advertised_host, advertised_port) = match parse_listener(
            &listeners,
            &controller_name,
        ) {
            Some(_) if !process_roles.broker => {
                // Kafka's rule: a controller-only node lists only controller listeners.
                return Err(p.invalid(
                        "listeners",
                        &format!("process.roles=controller serves no Kafka clients: list only {controller_name}:// (controller.listener.names)"),
                    ));
            }
            Some((host, port)) => {
                let (listener, host, port) = p.client_listener(host, port, &controller_name)?;
                (Some(listener), host, port)
            }
            None if !process_roles.broker => (None, String::new(), 0),
            None => return Err(p.invalid("listeners", "expected NAME://host:port")),
        };
        let log_dirs: Vec<PathBuf> =
            p.0.get("log.dirs")
                .or_else(|| p.0.get("log.dir"))
                .map(|s| s.split(',').map(|d| PathBuf::from(d.trim())).collect())
                .unwrap_or_else(|| vec![PathBuf::from("./data")]);
        let hour_ms = 3_600_000i64;
        let log_retention_ms = match p.opt::<i64>("log.retention.ms")? {
            Some(v) => v,
            None => match p.opt::<i64>("log.retention.minutes")? {
                Some(m) => m * 60_000,
                None => p.get("log.retention.hours", 168i64)? * hour_ms,
            },
        };
        let log_roll_ms = match p.opt::<i64>("log.roll.ms")? {
            Some(v) => v,
            None => p.get("log.roll.hours", 168i64)? * hour_ms,
        };
        let quorum_voters = parse_voters(
            p.0.get("controller.quorum.voters")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(|why| p.invalid("controller.quorum.voters", &why))?;
        let controller_listener = match named_listener(&listeners, &controller_name) {
            None => None,
            Some((h, port)) => {
                let h = if h.is_empty() {
                    "0.0.0.0".to_string()
                } else {
                    h
                };
                Some(
                    std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), port))
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| {
                            p.invalid("listeners", "controller listener host does not resolve")
                        })?,
                )
            }
        };
        if process_roles.controller && !quorum_voters.is_empty() && controller_listener.is_none() {
            return Err(p.invalid(
                "listeners",
                &format!("a controller needs a {controller_name}://host:port listener (controller.listener.names)"),
            ));
        }
        if !process_roles.controller && quorum_voters.iter().any(|v| v.id == node_id) {
            return Err(p.invalid(
                "process.roles",
                &format!("node.id={node_id} is in controller.quorum.voters, so it must have the controller role"),
            ));
        }
        // Only a combined node may be its own one-node quorum.
        if !(process_roles.broker && process_roles.controller) && quorum_voters.is_empty() {
            return Err(p.invalid(
                "controller.quorum.voters",
                &format!("process.roles={process_roles} needs the voters listed in controller.quorum.voters"),
            ));
        }
        let cfg = BrokerConfig {
            node_id,
            listener,
            advertised_host,
            advertised_port,
            log_dirs,
            num_partitions: p.get("num.partitions", 1)?,
            default_replication_factor: p.get("default.replication.factor", 1)?,
            min_insync_replicas: p.get("min.insync.replicas", 1)?,
            auto_create_topics_enable: p.get("auto.create.topics.enable", true)?,
            delete_topic_enable: p.get("delete.topic.enable", true)?,
            log_retention_ms,
            log_retention_bytes: p.get("log.retention.bytes", -1)?,
            log_retention_check_interval_ms: p.get("log.retention.check.interval.ms", 300_000)?,
            log_segment_bytes: p.get("log.segment.bytes", 1 << 30)?,
            log_roll_ms,
            log_index_interval_bytes: p.get("log.index.interval.bytes", 4096)?,
            log_flush_interval_messages: p.get("log.flush.interval.messages", u64::MAX)?,
            log_flush_interval_ms: p.get("log.flush.interval.ms", i64::MAX)?,
            log_flush_scheduler_interval_ms: p.get("log.flush.scheduler.interval.ms", 1000)?,
            log_message_timestamp_before_max_ms: p
                .get("log.message.timestamp.before.max.ms", i64::MAX)?,
            log_message_timestamp_after_max_ms: p
                .get("log.message.timestamp.after.max.ms", 3_600_000)?,
            log_cleanup_policy: p.get("log.cleanup.policy", "delete".to_string())?,
            log_cleaner_delete_retention_ms: p
                .get("log.cleaner.delete.retention.ms", 86_400_000)?,
            log_cleaner_min_cleanable_ratio: p.get("log.cleaner.min.cleanable.ratio", 0.5)?,
            log_cleaner_min_compaction_lag_ms: p.get("log.cleaner.min.compaction.lag.ms", 0)?,
            log_cleaner_backoff_ms: p.get("log.cleaner.backoff.ms", 15_000)?,
            message_max_bytes: p.get("message.max.bytes", 1_048_588)?,
            socket_request_max_bytes: p.get("socket.request.max.bytes", 104_857_600)?,
            max_connections: p.get("max.connections", 10_000)?,
            offsets_topic_num_partitions: p.get("offsets.topic.num.partitions", 50)?,
            offsets_retention_minutes: p.get("offsets.retention.minutes", 10_080)?,
            offsets_retention_check_interval_ms: p
                .get("offsets.retention.check.interval.ms", 600_000)?,
            offset_metadata_max_bytes: p.get("offset.metadata.max.bytes", 4096)?,
            group_initial_rebalance_delay_ms: p.get("group.initial.rebalance.delay.ms", 3000)?,
            group_min_session_timeout_ms: p.get("group.min.session.timeout.ms", 6000)?,
            group_max_session_timeout_ms: p.get("group.max.session.timeout.ms", 1_800_000)?,
            metrics_listener: p.get("metrics.listener", "0.0.0.0:9404".to_string())?,
            admin_listener: p.get("admin.listener", "127.0.0.1:9095".to_string())?,
            retry_redis_url: p.opt("retry.redis.url")?,
            retry_redis_key_prefix: p.get("retry.redis.key.prefix", "kairos".to_string())?,
            retry_redis_tls_ca_file: p
                .opt::<String>("retry.redis.tls.ca.file")?
                .map(PathBuf::from),
            kairos_delay_bucket_ms: p.get("kairos.delay.bucket.ms", 60_000)?,
            kairos_delay_window_ms: p.get("kairos.delay.window.ms", 120_000)?,
            cluster_id: p.opt("cluster.id")?,
            process_roles,
            quorum_voters,
            controller_listener,
            broker_rack: p.opt("broker.rack")?,
            broker_session_timeout_ms: p.get("broker.session.timeout.ms", 9000)?,
            broker_heartbeat_interval_ms: p.get("broker.heartbeat.interval.ms", 500)?,
            controller_quorum_election_timeout_ms: p
                .get("controller.quorum.election.timeout.ms", 1000)?,
            controller_quorum_startup_timeout_ms: p
                .get("controller.quorum.startup.timeout.ms", 60_000)?,
            auto_leader_rebalance_enable: p.get("auto.leader.rebalance.enable", true)?,
            leader_imbalance_check_interval_seconds: p
                .get("leader.imbalance.check.interval.seconds", 300)?,
            replica_lag_time_max_ms: p.get("replica.lag.time.max.ms", 30_000)?,
            unclean_leader_election_enable: p.get("unclean.leader.election.enable", false)?,
            replica_fetch_wait_max_ms: p.get("replica.fetch.wait.max.ms", 500)?,
            replica_fetch_min_bytes: p.get("replica.fetch.min.bytes", 1)?,
            replica_fetch_max_bytes: p.get("replica.fetch.max.bytes", 1_048_576)?,
            replica_fetch_response_max_bytes: p
                .get("replica.fetch.response.max.bytes", 10_485_760)?,
            replica_fetch_backoff_ms: p.get("replica.fetch.backoff.ms", 100)?,
            replica_socket_timeout_ms: p.get("replica.socket.timeout.ms", 30_000)?,
            replica_high_watermark_checkpoint_interval_ms: p
                .get("replica.high.watermark.checkpoint.interval.ms", 5000)?,
            offsets_topic_replication_factor: p.get("offsets.topic.replication.factor", 3)?,
            raw: p.0.clone(),
        };
        if cfg.broker_heartbeat_interval_ms == 0
            || cfg.broker_heartbeat_interval_ms >= cfg.broker_session_timeout_ms
        {
            return Err(p.invalid(
                "broker.heartbeat.interval.ms",
                "must be above 0 and below broker.session.timeout.ms",
            ));
        }
        // A day at most: the timers built from these must not overflow.
        const DAY_MS: u64 = 86_400_000;
        for (key, ms) in [
            ("broker.session.timeout.ms", cfg.broker_session_timeout_ms),
            (
                "controller.quorum.election.timeout.ms",
                cfg.controller_quorum_election_timeout_ms,
            ),
        ] {
            if ms > DAY_MS {
                return Err(p.invalid(key, &format!("must be at most {DAY_MS}")));
            }
        }
        if cfg.num_partitions < 1 {
            return Err(p.invalid("num.partitions", "must be at least 1"));
        }
        if cfg.offsets_topic_num_partitions < 1 {
            return Err(p.invalid("offsets.topic.num.partitions", "must be at least 1"));
        }
        if cfg.log_segment_bytes < 14 {
            return Err(p.invalid("log.segment.bytes", "must be at least 14"));
        }
        if cfg.kairos_delay_bucket_ms < 100 {
            return Err(p.invalid("kairos.delay.bucket.ms", "must be at least 100"));
        }
        if cfg.kairos_delay_window_ms < 0 {
            return Err(p.invalid("kairos.delay.window.ms", "must not be negative"));
        }
        if cfg.log_dirs.is_empty() {
            return Err(p.invalid("log.dirs", "must name a directory"));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = BrokerConfig::default();
        assert_eq!(c.listener.unwrap().to_string(), "127.0.0.1:9092");
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.offsets_topic_num_partitions, 50);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.log_dirs, vec![PathBuf::from("./data")]);
    }

    #[test]
    fn file_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "# comment\nnode.id=3\nlisteners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://:9093\nlog.retention.hours=1\nfoo.bar=1\n").unwrap();
        let c = BrokerConfig::load(Some(&path), &["log.segment.bytes=1024".into()]).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listener.unwrap().port(), 19092);
        assert_eq!(c.log_retention_ms, 3_600_000);
        assert_eq!(c.log_segment_bytes, 1024);
        assert_eq!(c.unknown_keys(), vec!["foo.bar"]);
        assert_eq!(c.controller_listener.unwrap().port(), 9093);
        let c = BrokerConfig::load(
            None,
            &[
                "listeners=PLAINTEXT://127.0.0.1:1,CTL://127.0.0.1:2".into(),
                "controller.listener.names=CTL".into(),
                "controller.quorum.voters=1@127.0.0.1:2,2@127.0.0.1:4".into(),
                "process.roles=broker,controller".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.quorum_voters.len(), 2);
        assert_eq!(c.controller_listener.unwrap().port(), 2);
        assert_eq!(c.listener.unwrap().port(), 1);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = BrokerConfig::load(None, &["num.partitions=zero".into()]).unwrap_err();
        assert!(e.to_string().contains("num.partitions"), "{e}");
        for key in [
            "controller.quorum.election.timeout.ms",
            "broker.session.timeout.ms",
        ] {
            let e = BrokerConfig::load(None, &[format!("{key}=86400001")]).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
            assert!(e.to_string().contains("at most 86400000"), "{e}");
        }
        let e = BrokerConfig::load(None, &["listeners=nonsense".into()]).unwrap_err();
        assert!(e.to_string().contains("listeners"), "{e}");
        for (voters, why) in [
            ("1@a:1,1@b:2", "appears twice"),
            ("1@a", "not id@host:port"),
            ("x@a:1", "not a number"),
        ] {
            let e = BrokerConfig::load(None, &[format!("controller.quorum.voters={voters}")])
                .unwrap_err();
            assert!(e.to_string().contains(why), "{voters}: {e}");
        }
        let e = BrokerConfig::load(None, &["controller.quorum.voters=1@127.0.0.1:9093".into()])
            .unwrap_err();
        assert!(e.to_string().contains("CONTROLLER://"), "{e}");
        let e = BrokerConfig::load(None, &["process.roles=broker".into()]).unwrap_err();
        assert!(e.to_string().contains("controller.quorum.voters"), "{e}");
        let e = BrokerConfig::load(
            None,
            &[
                "process.roles=controller".into(),
                "listeners=CONTROLLER://127.0.0.1:2".into(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("controller.quorum.voters"), "{e}");
    }

    #[test]
    fn controller_only_and_broker_only_nodes() {
        let voters =
            "controller.quorum.voters=1@127.0.0.1:2,2@127.0.0.1:4,3@127.0.0.1:6".to_string();
        let c = BrokerConfig::load(
            None,
            &[
                "node.id=1".into(),
                "process.roles=controller".into(),
                "listeners=CONTROLLER://127.0.0.1:2".into(),
                voters.clone(),
            ],
        )
        .unwrap();
        assert_eq!(c.listener, None);
        assert_eq!(c.controller_listener.unwrap().port(), 2);
        // Kafka's rule: a controller-only node has no client listener.
        let e = BrokerConfig::load(
            None,
            &[
                "node.id=1".into(),
                "process.roles=controller".into(),
                "listeners=PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2".into(),
                voters.clone(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("serves no Kafka clients"), "{e}");
        let c = BrokerConfig::load(
            None,
            &[
                "node.id=4".into(),
                "process.roles=broker".into(),
                "listeners=PLAINTEXT://127.0.0.1:1".into(),
                voters.clone(),
            ],
        )
        .unwrap();
        assert_eq!(c.listener.unwrap().port(), 1);
        assert_eq!(c.controller_listener, None);
        // A voter without the controller role.
        let e = BrokerConfig::load(
            None,
            &[
                "node.id=2".into(),
                "process.roles=broker".into(),
                "listeners=PLAINTEXT://127.0.0.1:1".into(),
                voters,
            ],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("must have the controller role"),
            "{e}"
        );
    }

    #[test]
    fn node_ids_are_not_negative_and_ipv6_voters_keep_their_brackets() {
        let e = BrokerConfig::load(None, &["node.id=-1".into()]).unwrap_err();
        assert!(e.to_string().contains("node.id"), "{e}");
        assert!(parse_voters("-1@127.0.0.1:9093").is_err());
        let v = parse_voters("1@[::1]:9093,2@127.0.0.1:9094").unwrap();
        assert_eq!(v[0].addr(), "[::1]:9093");
        assert_eq!(v[1].addr(), "127.0.0.1:9094");
        let e = parse_voters("1@[::1]:9093,2@::1:9093").unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}
