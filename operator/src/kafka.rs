//! The operator's Kafka admin calls against a cluster's brokers, over `kairos-client`.
//!
//! Addresses go through a [`Resolver`]: in a cluster it returns them unchanged; out of cluster
//! (`--resolve host:port=addr:port`, e.g. after `kubectl port-forward`) it maps the Service and
//! pod DNS names the operator derives to addresses it can reach.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    ListPartitionReassignmentsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kairos_client::Connection;

/// Maps `host:port` addresses the operator derives to ones it can reach (out-of-cluster mode);
/// a mapping may list several addresses, comma-separated, tried in order.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    map: HashMap<String, String>,
}

impl Resolver {
    /// From `host:port=addr:port` entries.
    pub fn parse(entries: &[String]) -> Result<Resolver, String> {
        let mut map = HashMap::new();
        for e in entries {
            let (from, to) = e
                .split_once('=')
                .filter(|(f, t)| f.contains(':') && t.contains(':'))
                .ok_or_else(|| format!("--resolve {e:?}: expected host:port=addr:port"))?;
            map.insert(from.to_string(), to.to_string());
        }
        Ok(Resolver { map })
    }

    pub fn resolve(&self, addr: &str) -> String {
        self.map
            .get(addr)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }
}

/// Why a call failed: the brokers could not be reached (may heal), or a broker refused it
/// (Kafka's error name and message: what to fix).
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot reach the brokers at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{name}: {message}")]
    Refused {
        code: i16,
        name: String,
        message: String,
    },
}

impl KafkaError {
    fn refused(code: i16, message: Option<&StrBytes>) -> KafkaError {
        let name = code
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|| format!("error {code}"));
        let message = message
            .map(|m| m.to_string())
            .filter(|m| !m.is_empty())
            .or_else(|| code.err().map(|e| e.to_string()))
            .unwrap_or_default();
        KafkaError::Refused {
            code,
            name,
            message,
        }
    }

    /// Err for a non-zero error code in a response.
    fn check(code: i16, message: Option<&StrBytes>) -> Result<(), KafkaError> {
        match code {
            0 => Ok(()),
            code => Err(KafkaError::refused(code, message)),
        }
    }

    /// True for errors a retry may clear (no broker, no leader, controller moving).
    pub fn transient(&self) -> bool {
        match self {
            KafkaError::Unreachable { .. } => true,
            KafkaError::Refused { code, .. } => code.err().is_some_and(|e| e.is_retriable()),
        }
    }
}

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicState {
    pub partitions: i32,
    pub replication_factor: i32,
    /// Configs set on the topic (not broker defaults).
    pub configs: BTreeMap<String, String>,
}

/// `DYNAMIC_TOPIC_CONFIG` in DescribeConfigs' `config_source`.
const SOURCE_TOPIC: i8 = 1;
/// `DYNAMIC_DEFAULT_BROKER_CONFIG` (wire value 3): the cluster-wide default of a dynamic broker
/// config.
const SOURCE_DEFAULT_BROKER: i8 = 3;
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a cluster's bootstrap address for a reconcile's admin calls: opened at the
/// first call (or by [`Admin::connect`]), and dropped when a call fails on it, so the next call
/// connects again.
pub struct Admin {
    /// The addresses the bootstrap address resolves to, tried in order.
    addrs: String,
    conn: Option<Connection>,
    /// The broker the connection reached, for error messages.
    addr: String,
}

impl Admin {
    /// An admin for `bootstrap` that connects at its first call (a comma list out of cluster, as
    /// a Service would pick a ready pod).
    pub fn lazy(bootstrap: &str, resolver: &Resolver) -> Admin {
        Admin {
            addrs: resolver.resolve(bootstrap),
            conn: None,
            addr: String::new(),
        }
    }

    /// Connects now to the first reachable address `bootstrap` resolves to.
    pub async fn connect(bootstrap: &str, resolver: &Resolver) -> Result<Admin, KafkaError> {
        let mut admin = Admin::lazy(bootstrap, resolver);
        admin.open().await?;
        Ok(admin)
    }

    async fn open(&mut self) -> Result<&mut Connection, KafkaError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let (conn, addr) = connect_first(&self.addrs).await?;
                self.addr = addr;
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    async fn call<R: kafka_protocol::protocol::Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, KafkaError> {
        let result = self.open().await?.call(version, req).await;
        result.map_err(|e| {
            // A failed call may leave a response unread: the next call starts afresh.
            self.conn = None;
            KafkaError::Unreachable {
                addr: self.addr.clone(),
                reason: format!("{e:#}"),
            }
        })
    }

    pub async fn metadata(
        &mut self,
        topics: Option<&[&str]>,
    ) -> Result<MetadataResponse, KafkaError> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.call(12, &req).await
    }

    /// The topic, or None when the cluster does not have it.
    pub async fn topic(&mut self, name: &str) -> Result<Option<TopicState>, KafkaError> {
        let md = self.metadata(Some(&[name])).await?;
        let Some(t) = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
        else {
            return Ok(None);
        };
        match t.error_code {
            0 => {}
            UNKNOWN_TOPIC_OR_PARTITION => return Ok(None),
            code => return Err(KafkaError::refused(code, None)),
        }
        let replication_factor = t
            .partitions
            .iter()
            .map(|p| p.replica_nodes.len() as i32)
            .max()
            .unwrap_or(0);
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                // All configs (the codec's default is an empty key list: none).
                .with_configuration_keys(None),
        ]);
        let res = self.call(4, &req).await?;
        let mut configs = BTreeMap::new();
        for r in &res.results {
            KafkaError::check(r.error_code, r.error_message.as_ref())?;
            for c in r.configs.iter().filter(|c| c.config_source == SOURCE_TOPIC) {
                if let Some(v) = &c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
        }
        Ok(Some(TopicState {
            partitions: t.partitions.len() as i32,
            replication_factor,
            configs,
        }))
    }

    /// `min.insync.replicas` of each of `topics` (topic override or broker default) that the
    /// broker reported.
    pub async fn min_insync(
        &mut self,
        topics: &[String],
    ) -> Result<HashMap<String, i32>, KafkaError> {
        let key = StrBytes::from_static_str("min.insync.replicas");
        let req = DescribeConfigsRequest::default().with_resources(
            topics
                .iter()
                .map(|t| {
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_string(t.clone()))
                        .with_configuration_keys(Some(vec![key.clone()]))
                })
                .collect(),
        );
        let res = self.call(4, &req).await?;
        let mut out = HashMap::new();
        for r in &res.results {
            KafkaError::check(r.error_code, r.error_message.as_ref())?;
            // A topic whose value is missing or unreadable is left out: the caller treats it as
            // unknown, not as some default.
            let value = r
                .configs
                .iter()
                .find(|c| c.name == key)
                .and_then(|c| c.value.as_ref())
                .and_then(|v| v.parse().ok());
            if let Some(value) = value {
                out.insert(r.resource_name.to_string(), value);
            }
        }
        Ok(out)
    }

    /// CreateTopics; `replication_factor` None takes the cluster's default.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: Option<i32>,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), KafkaError> {
        let rf = match replication_factor {
            None => -1,
            Some(rf) => i16::try_from(rf).map_err(|_| {
                KafkaError::refused(
                    ResponseError::InvalidReplicationFactor.code(),
                    Some(&StrBytes::from_string(format!(
                        "replication factor {rf} is out of range"
                    ))),
                )
            })?,
        };
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(TIMEOUT.as_millis() as i32);
        let res = self.call(7, &req).await?;
        for t in &res.topics {
            KafkaError::check(t.error_code, t.error_message.as_ref())?;
        }
        Ok(())
    }

    pub async fn create_partitions(&mut self, name: &str, count: i32) -> Result<(), KafkaError> {
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(count)
                // The broker places the new partitions (the codec's default is an empty list).
                .with_assignments(None)])
            .with_timeout_ms(TIMEOUT.as_millis() as i32);
        let res = self.call(3, &req).await?;
        for t in &res.results {
            KafkaError::check(t.error_code, t.error_message.as_ref())?;
        }
        Ok(())
    }

    /// The cluster-wide defaults of the dynamic broker configs (DescribeConfigs on the broker
    /// resource, the values whose source is the cluster default).
    pub async fn broker_defaults(&mut self) -> Result<BTreeMap<String, String>, KafkaError> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(StrBytes::default())
                .with_configuration_keys(None),
        ]);
        let res = self.call(4, &req).await?;
        let mut out = BTreeMap::new();
        for r in &res.results {
            KafkaError::check(r.error_code, r.error_message.as_ref())?;
            for c in &r.configs {
                if let (SOURCE_DEFAULT_BROKER, Some(v)) = (c.config_source, &c.value) {
                    out.insert(c.name.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    /// AlterPartitionReassignments: each `(topic, partition, replicas)` gets that replica list.
    pub async fn reassign(&mut self, moves: &[(String, i32, Vec<i32>)]) -> Result<(), KafkaError> {
        let mut topics: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for (topic, partition, replicas) in moves {
            topics.entry(topic).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(*partition)
                    .with_replicas(Some(replicas.iter().map(|b| BrokerId(*b)).collect())),
            );
        }
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(TIMEOUT.as_millis() as i32)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        ReassignableTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let res = self.call(0, &req).await?;
        KafkaError::check(res.error_code, res.error_message.as_ref())?;
        for t in &res.responses {
            for p in &t.partitions {
                KafkaError::check(p.error_code, p.error_message.as_ref()).map_err(|e| {
                    KafkaError::Refused {
                        code: p.error_code,
                        name: format!("{}-{}", t.name.0, p.partition_index),
                        message: e.to_string(),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// The partitions whose reassignment is in progress, as `(topic, partition)`.
    pub async fn reassignments(&mut self) -> Result<Vec<(String, i32)>, KafkaError> {
        let req = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(TIMEOUT.as_millis() as i32)
            // All topics (the codec's default is an empty list: none).
            .with_topics(None);
        let res = self.call(0, &req).await?;
        KafkaError::check(res.error_code, res.error_message.as_ref())?;
        Ok(res
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index))
            })
            .collect())
    }

    /// IncrementalAlterConfigs on one resource (a topic, or a broker; the broker named `""` is
    /// the cluster-wide default): sets `set`, deletes `delete` (back to the default).
    pub async fn alter_configs(
        &mut self,
        resource_type: i8,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), KafkaError> {
        let op = |k: &str, op: i8, v: Option<&String>| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_config_operation(op)
                .with_value(v.map(|v| StrBytes::from_string(v.clone())))
        };
        let mut configs: Vec<_> = set.iter().map(|(k, v)| op(k, 0, Some(v))).collect();
        configs.extend(delete.iter().map(|k| op(k, 1, None)));
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(configs),
        ]);
        let res = self.call(1, &req).await?;
        for r in &res.responses {
            KafkaError::check(r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// DeleteTopics; a topic already gone is not an error.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), KafkaError> {
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name(name)])
            .with_timeout_ms(TIMEOUT.as_millis() as i32);
        let res = self.call(5, &req).await?;
        for r in &res.responses {
            if r.error_code != UNKNOWN_TOPIC_OR_PARTITION {
                KafkaError::check(r.error_code, r.error_message.as_ref())?;
            }
        }
        Ok(())
    }
}

/// A connection to the first reachable address of the comma list `addrs`, and that address.
async fn connect_first(addrs: &str) -> Result<(Connection, String), KafkaError> {
    let mut reason = String::from("no address");
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match Connection::connect(addr, "kairos-operator".into(), TIMEOUT).await {
            Ok(conn) => return Ok((conn, addr.to_string())),
            Err(e) => reason = format!("{e:#}"),
        }
    }
    Err(KafkaError::Unreachable {
        addr: addrs.to_string(),
        reason,
    })
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
