//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_request};
use kafka_protocol::messages::{incremental_alter_configs_response, TopicName};
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::config::BrokerConfig;
use crate::metadata::{
    codes, dynamic_broker_config_names, kairos_topic_config_names, topic_config_names,
    ClusterImage, MetaError, TopicInfo, OFFSETS_TOPIC,
};
use crate::server::Broker;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

// DescribeConfigs config sources.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Whether DescribeConfigs asked for `name` (no key list: all of them).
fn asked(keys: &Option<Vec<StrBytes>>, name: &str) -> bool {
    keys.as_ref()
        .is_none_or(|k| k.iter().any(|k| k.as_str() == name))
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The broker-level value behind a topic config (its default when the topic sets none).
fn broker_value(cfg: &BrokerConfig, broker_key: &str) -> String {
    if let Some(v) = cfg.raw.get(broker_key) {
        return v.clone();
    }
    let long_max = i64::MAX.to_string();
    match broker_key {
        "log.cleanup.policy" => cfg.log_cleanup_policy.clone(),
        "compression.type" => "producer".into(),
        "log.cleaner.delete.retention.ms" => cfg.log_cleaner_delete_retention_ms.to_string(),
        "log.segment.delete.delay.ms" => "60000".into(),
        "log.flush.interval.messages" => cfg
            .log_flush_interval_messages
            .min(i64::MAX as u64)
            .to_string(),
        "log.flush.interval.ms" => cfg.log_flush_interval_ms.to_string(),
        "log.index.interval.bytes" => cfg.log_index_interval_bytes.to_string(),
        "log.cleaner.max.compaction.lag.ms" => long_max,
        "message.max.bytes" => cfg.message_max_bytes.to_string(),
        "log.message.timestamp.type" => "CreateTime".into(),
        "log.cleaner.min.cleanable.ratio" => cfg.log_cleaner_min_cleanable_ratio.to_string(),
        "log.cleaner.min.compaction.lag.ms" => cfg.log_cleaner_min_compaction_lag_ms.to_string(),
        "min.insync.replicas" => cfg.min_insync_replicas.to_string(),
        "log.preallocate" => "false".into(),
        "log.retention.bytes" => cfg.log_retention_bytes.to_string(),
        "log.retention.ms" => cfg.log_retention_ms.to_string(),
        "log.segment.bytes" => cfg.log_segment_bytes.to_string(),
        "log.index.size.max.bytes" => "10485760".into(),
        "log.roll.jitter.ms" => "0".into(),
        "log.roll.ms" => cfg.log_roll_ms.to_string(),
        "unclean.leader.election.enable" => "false".into(),
        "log.message.timestamp.before.max.ms" => {
            cfg.log_message_timestamp_before_max_ms.to_string()
        }
        "log.message.timestamp.after.max.ms" => cfg.log_message_timestamp_after_max_ms.to_string(),
        _ => String::new(),
    }
}

fn parse_configs<'a>(
    items: impl Iterator<Item = (&'a StrBytes, Option<&'a StrBytes>)>,
) -> Result<BTreeMap<String, String>, MetaError> {
    let mut out = BTreeMap::new();
    for (name, value) in items {
        let Some(value) = value else {
            return Err(MetaError::new(
                codes::INVALID_CONFIG,
                format!("Null value not supported for topic config {name}"),
            ));
        };
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

pub async fn create_topics(
    broker: &Broker,
    req: CreateTopicsRequest,
    _version: i16,
) -> CreateTopicsResponse {
    let cfg = &broker.config;
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let r = async {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            let fail = |e: MetaError| {
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(e.code)
                    .with_error_message(Some(s(e.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            };
            if duplicates.contains(&name) {
                return fail(MetaError::new(
                    codes::INVALID_REQUEST,
                    format!("Create topics request from client contains duplicate topic: {name}"),
                ));
            }
            let mut partitions = if t.num_partitions == -1 {
                cfg.num_partitions
            } else {
                t.num_partitions
            };
            let mut rf = if t.replication_factor == -1 {
                cfg.default_replication_factor
            } else {
                t.replication_factor
            };
            if !t.assignments.is_empty() {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return fail(MetaError::new(codes::INVALID_REQUEST, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."));
                }
                let in_order = t
                    .assignments
                    .iter()
                    .enumerate()
                    .all(|(i, a)| a.partition_index == i as i32);
                if !in_order {
                    return fail(MetaError::new(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        "Replica assignments must list partitions 0, 1, 2, ... in order",
                    ));
                }
                partitions = t.assignments.len() as i32;
                rf = t
                    .assignments
                    .first()
                    .map(|a| a.broker_ids.len() as i16)
                    .unwrap_or(0);
            }
            let assignment: Option<Vec<Vec<i32>>> = (!t.assignments.is_empty()).then(|| {
                t.assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            let configs = match parse_configs(t.configs.iter().map(|c| (&c.name, c.value.as_ref())))
            {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if req.validate_only {
                let image = broker.topics.image();
                let live = image.live_brokers().count();
                return match image.check_create_topic(&name, partitions, rf, &configs) {
                    Ok(()) if rf as usize > live => fail(MetaError::new(codes::INVALID_REPLICATION_FACTOR, format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered."))),
                    Ok(()) => result.with_num_partitions(partitions).with_replication_factor(rf),
                    Err(e) => fail(e),
                };
            }
            match broker
                .create_topic(&name, partitions, rf, configs, assignment)
                .await
            {
                Ok(info) => result
                    .with_topic_id(info.id)
                    .with_num_partitions(info.partitions)
                    .with_replication_factor(info.replication_factor),
                Err(e) => fail(e),
            }
        };
        topics.push(r.await);
    }
    CreateTopicsResponse::default().with_topics(topics)
}

pub async fn delete_topics(
    broker: &Broker,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let r = async {
            let info = match &name {
                Some(n) => broker.topics.get(n),
                None => broker.topics.get_by_id(id),
            };
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(s(n))))
                .with_topic_id(id);
            let Some(info) = info else {
                let code = if name.is_some() {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    100
                };
                return result.with_error_code(code);
            };
            let result = result
                .with_name(Some(TopicName(s(info.name.clone()))))
                .with_topic_id(info.id);
            if !broker.config.delete_topic_enable {
                return result.with_error_code(codes::TOPIC_DELETION_DISABLED);
            }
            if info.name == OFFSETS_TOPIC {
                return result
                    .with_error_code(codes::INVALID_REQUEST)
                    .with_error_message(Some(s(
                        "Internal topic __consumer_offsets cannot be deleted",
                    )));
            }
            match broker.delete_topic(&info.name).await {
                Ok(_) => result,
                Err(e) => result
                    .with_error_code(e.code)
                    .with_error_message(Some(s(e.message))),
            }
        };
        responses.push(r.await);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Broker,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let result = CreatePartitionsTopicResult::default().with_name(t.name);
        let assignment: Option<Vec<Vec<i32>>> = t.assignments.as_ref().map(|a| {
            a.iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        let outcome = if req.validate_only {
            broker
                .topics
                .image()
                .check_create_partitions(&name, t.count)
                .map(|_| ())
        } else {
            broker
                .create_partitions(&name, t.count, assignment)
                .await
                .map(|_| ())
        };
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => result
                .with_error_code(e.code)
                .with_error_message(Some(s(e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

fn config_type(name: &str) -> i8 {
    // DescribeConfigs v3+ types: 1 BOOLEAN, 2 STRING, 3 INT, 5 LONG, 6 DOUBLE, 7 LIST.
    match name {
        "cleanup.policy"
        | "leader.replication.throttled.replicas"
        | "follower.replication.throttled.replicas" => 7,
        "compression.type" | "message.timestamp.type" => 2,
        "min.cleanable.dirty.ratio" => 6,
        "preallocate" | "unclean.leader.election.enable" => 1,
        "index.interval.bytes"
        | "max.message.bytes"
        | "min.insync.replicas"
        | "segment.bytes"
        | "segment.index.bytes" => 3,
        _ => 5,
    }
}

fn describe_topic(
    broker: &Broker,
    info: &TopicInfo,
    keys: &Option<Vec<StrBytes>>,
    synonyms: bool,
) -> Vec<DescribeConfigsResourceResult> {
    let cfg = &broker.config;
    // Kairos' own configs have no broker default: listed when set on the topic.
    let kairos = kairos_topic_config_names()
        .filter(|name| asked(keys, name))
        .filter_map(|name| {
            let value = info.configs.get(name)?;
            Some(
                DescribeConfigsResourceResult::default()
                    .with_name(s(name))
                    .with_value(Some(s(value.clone())))
                    .with_config_source(SOURCE_DYNAMIC_TOPIC)
                    .with_config_type(if name.ends_with(".ms") { 5 } else { 2 }),
            )
        })
        .collect::<Vec<_>>();
    let mut out: Vec<DescribeConfigsResourceResult> = topic_config_names()
        .filter(|(name, _)| asked(keys, name))
        .map(|(name, broker_key)| {
            let default_value = broker_key.map(|k| broker_value(cfg, k)).unwrap_or_default();
            let broker_source = if broker_key.is_some_and(|k| cfg.raw.contains_key(k)) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            let (value, source) = match info.configs.get(name) {
                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                None => (default_value.clone(), broker_source),
            };
            let mut r = DescribeConfigsResourceResult::default()
                .with_name(s(name))
                .with_value(Some(s(value.clone())))
                .with_config_source(source)
                .with_config_type(config_type(name));
            if synonyms {
                let mut list = Vec::new();
                if source == SOURCE_DYNAMIC_TOPIC {
                    list.push(
                        DescribeConfigsSynonym::default()
                            .with_name(s(name))
                            .with_value(Some(s(value)))
                            .with_source(source),
                    );
                }
                // Kafka leaves out a broker synonym whose own default is null (the value then
                // comes from another key, as log.retention.ms from log.retention.hours).
                let null_default = matches!(
                    broker_key,
                    Some(
                        "log.retention.ms"
                            | "log.roll.ms"
                            | "log.roll.jitter.ms"
                            | "log.flush.interval.ms"
                    )
                );
                if let Some(broker_key) =
                    broker_key.filter(|_| broker_source != SOURCE_DEFAULT || !null_default)
                {
                    list.push(
                        DescribeConfigsSynonym::default()
                            .with_name(s(broker_key))
                            .with_value(Some(s(default_value)))
                            .with_source(broker_source),
                    );
                }
                r.synonyms = list;
            }
            r
        })
        .collect();
    out.extend(kairos);
    out
}

fn describe_broker(
    cfg: &BrokerConfig,
    image: &ClusterImage,
    keys: &Option<Vec<StrBytes>>,
    synonyms: bool,
) -> Vec<DescribeConfigsResourceResult> {
    let mut entries: BTreeMap<String, (String, i8, bool)> = BTreeMap::new();
    for broker_key in topic_config_names().filter_map(|(_, b)| b) {
        let source = if cfg.raw.contains_key(broker_key) {
            SOURCE_STATIC_BROKER
        } else {
            SOURCE_DEFAULT
        };
        entries.insert(
            broker_key.to_string(),
            (broker_value(cfg, broker_key), source, true),
        );
    }
    for (k, v) in [
        ("node.id", cfg.node_id.to_string()),
        ("num.partitions", cfg.num_partitions.to_string()),
        (
            "default.replication.factor",
            cfg.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            cfg.auto_create_topics_enable.to_string(),
        ),
        (
            "offsets.topic.num.partitions",
            cfg.offsets_topic_num_partitions.to_string(),
        ),
        (
            "log.dirs",
            cfg.log_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ] {
        let source = if cfg.raw.contains_key(k) {
            SOURCE_STATIC_BROKER
        } else {
            SOURCE_DEFAULT
        };
        entries.insert(k.to_string(), (v, source, true));
    }
    for (k, v) in &cfg.raw {
        entries.insert(k.clone(), (v.clone(), SOURCE_STATIC_BROKER, true));
    }
    // Dynamic configs: this broker's own value, else the cluster default, else static, else
    // Kafka's default (unlimited).
    let own = image.broker_configs.get(&cfg.node_id.to_string());
    let default = image.broker_configs.get("");
    for k in dynamic_broker_config_names() {
        let (value, source) = if let Some(v) = own.and_then(|c| c.get(k)) {
            (v.clone(), SOURCE_DYNAMIC_BROKER)
        } else if let Some(v) = default.and_then(|c| c.get(k)) {
            (v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER)
        } else if let Some(v) = cfg.raw.get(k) {
            (v.clone(), SOURCE_STATIC_BROKER)
        } else {
            (i64::MAX.to_string(), SOURCE_DEFAULT)
        };
        entries.insert(k.to_string(), (value, source, false));
    }
    entries
        .into_iter()
        .filter(|(name, _)| asked(keys, name))
        .map(|(name, (value, source, read_only))| {
            let mut r = DescribeConfigsResourceResult::default()
                .with_name(s(name.clone()))
                .with_value(Some(s(value.clone())))
                .with_config_source(source)
                .with_read_only(read_only);
            if synonyms {
                // Every level that sets the key, in precedence order (as Kafka lists them).
                let levels = [
                    (own.and_then(|c| c.get(&name)), SOURCE_DYNAMIC_BROKER),
                    (
                        default.and_then(|c| c.get(&name)),
                        SOURCE_DYNAMIC_DEFAULT_BROKER,
                    ),
                    (cfg.raw.get(&name), SOURCE_STATIC_BROKER),
                    ((source == SOURCE_DEFAULT).then_some(&value), SOURCE_DEFAULT),
                ];
                r.synonyms = levels
                    .into_iter()
                    .filter_map(|(v, level)| {
                        Some(
                            DescribeConfigsSynonym::default()
                                .with_name(s(name.clone()))
                                .with_value(Some(s(v?.clone())))
                                .with_source(level),
                        )
                    })
                    .collect();
            }
            r
        })
        .collect()
}

/// The cluster-wide default dynamic broker configs (resource name ""), all with source
/// DYNAMIC_DEFAULT_BROKER_CONFIG.
fn describe_broker_default(
    image: &ClusterImage,
    keys: &Option<Vec<StrBytes>>,
) -> Vec<DescribeConfigsResourceResult> {
    image
        .broker_configs
        .get("")
        .into_iter()
        .flatten()
        .filter(|(name, _)| asked(keys, name))
        .map(|(name, value)| {
            DescribeConfigsResourceResult::default()
                .with_name(s(name.clone()))
                .with_value(Some(s(value.clone())))
                .with_config_source(SOURCE_DYNAMIC_DEFAULT_BROKER)
                .with_read_only(false)
        })
        .collect()
}

pub fn describe_configs(
    broker: &Broker,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => match broker.topics.get(r.resource_name.as_str()) {
                    Some(info) => result.with_configs(describe_topic(
                        broker,
                        &info,
                        &r.configuration_keys,
                        req.include_synonyms,
                    )),
                    None => result
                        .with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_error_message(Some(s(format!(
                            "Topic {} does not exist",
                            r.resource_name
                        )))),
                },
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if name.is_empty() {
                        // The empty name is the cluster-wide default entity (as
                        // `kafka-configs --entity-default`): only its dynamic configs.
                        result.with_configs(describe_broker_default(
                            &broker.topics.image(),
                            &r.configuration_keys,
                        ))
                    } else if name == broker.config.node_id.to_string() {
                        result.with_configs(describe_broker(
                            &broker.config,
                            &broker.topics.image(),
                            &r.configuration_keys,
                            req.include_synonyms,
                        ))
                    } else {
                        result
                            .with_error_code(codes::INVALID_REQUEST)
                            .with_error_message(Some(s(format!(
                                "Unexpected broker id, expected {} but received {name}",
                                broker.config.node_id
                            ))))
                    }
                }
                other => result
                    .with_error_code(codes::INVALID_REQUEST)
                    .with_error_message(Some(s(format!("Unsupported resource type {other}")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies a complete new config map to a topic (validate, commit, reconfigure the logs).
async fn apply_topic_configs(
    broker: &Broker,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), MetaError> {
    if validate_only {
        return broker
            .topics
            .image()
            .check_set_configs(name, &configs)
            .map(|_| ());
    }
    broker.set_topic_configs(name, configs).await.map(|_| ())
}

/// One resource of AlterConfigs or IncrementalAlterConfigs: `new_configs`, given the resource's
/// current config set, gives its complete new one, which is then validated and committed (or
/// only checked).
async fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    new_configs: impl FnOnce(BTreeMap<String, String>) -> Result<BTreeMap<String, String>, MetaError>,
) -> Result<(), MetaError> {
    match resource_type {
        RESOURCE_TOPIC => {
            let Some(info) = broker.topics.get(name) else {
                return Err(MetaError::new(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("Topic {name} does not exist"),
                ));
            };
            let configs = new_configs(info.configs.clone())?;
            apply_topic_configs(broker, name, configs, validate_only).await
        }
        RESOURCE_BROKER => {
            let current = broker
                .topics
                .image()
                .broker_configs
                .get(name)
                .cloned()
                .unwrap_or_default();
            let configs = new_configs(current)?;
            if validate_only {
                broker.topics.image().check_broker_configs(name, &configs)
            } else {
                broker.set_broker_configs(name, configs).await
            }
        }
        other => Err(MetaError::new(
            codes::INVALID_REQUEST,
            format!("Unsupported resource type {other}"),
        )),
    }
}

fn error_fields(result: Result<(), MetaError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (codes::NONE, None),
        Err(e) => (e.code, Some(s(e.message))),
    }
}

pub async fn alter_configs(
    broker: &Broker,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let result = alter_resource(
            broker,
            r.resource_type,
            r.resource_name.as_str(),
            req.validate_only,
            |_| parse_configs(r.configs.iter().map(|c| (&c.name, c.value.as_ref()))),
        )
        .await;
        let (code, message) = error_fields(result);
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn incremental_alter_configs(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.as_str();
        let result = alter_resource(
            broker,
            r.resource_type,
            name,
            req.validate_only,
            |current| incremental(current, &r.configs),
        )
        .await;
        let (code, message) = error_fields(result);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Kafka's default of a list config (what APPEND and SUBTRACT start from when it is unset).
fn list_default(name: &str) -> &'static str {
    match name {
        "cleanup.policy" | "log.cleanup.policy" => "delete",
        _ => "",
    }
}

/// Kafka's operations: 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT (the last two for list configs).
fn incremental(
    mut configs: BTreeMap<String, String>,
    ops: &[incremental_alter_configs_request::AlterableConfig],
) -> Result<BTreeMap<String, String>, MetaError> {
    for op in ops {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        let need_value = || {
            value.clone().ok_or_else(|| {
                MetaError::new(
                    codes::INVALID_REQUEST,
                    format!("Null value not supported for : {name}"),
                )
            })
        };
        match op.config_operation {
            0 => {
                configs.insert(name.clone(), need_value()?);
            }
            1 => {
                configs.remove(&name);
            }
            2 | 3 => {
                if config_type(&name) != 7 {
                    return Err(MetaError::new(
                        codes::INVALID_CONFIG,
                        format!("Config value append is not allowed for config key: {name}"),
                    ));
                }
                // Kafka appends to (and subtracts from) the default when the key is unset.
                let current = configs
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| list_default(&name).to_string());
                let mut items: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for v in need_value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if op.config_operation == 2 {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                }
                configs.insert(name.clone(), items.join(","));
            }
            other => {
                return Err(MetaError::new(
                    codes::INVALID_REQUEST,
                    format!("Unknown config operation {other}"),
                ));
            }
        }
    }
    Ok(configs)
}
