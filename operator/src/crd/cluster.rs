//! `KafkaCluster`: a Kairos broker StatefulSet and what it needs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::Condition;

/// A Kairos cluster: `replicas` brokers in a StatefulSet; the first three (fewer when there are
/// fewer brokers) also form the Raft metadata quorum.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kairos.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    namespaced,
    status = "KafkaClusterStatus",
    shortname = "kc",
    category = "kairos",
    doc = "A Kafka-compatible Kairos cluster: brokers in a StatefulSet, with its Services, ConfigMap and PodDisruptionBudget",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        json_path = ".status.bootstrapServers"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.readyReplicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// Number of brokers.
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Broker image; the operator's own version of `ghcr.io/kairos-dev/kairos` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where brokers keep their logs.
    #[serde(default)]
    pub storage: Storage,
    /// CPU and memory for each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Broker configuration (`server.properties` keys, e.g. `num.partitions`,
    /// `default.replication.factor`). Keys the operator owns (listeners, node ids, quorum voters,
    /// directories) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Container ports of the listeners.
    #[serde(default)]
    pub listeners: Listeners,
    /// Rack awareness: brokers take `broker.rack` from this node label (e.g.
    /// `topology.kubernetes.io/zone`), so replicas spread across zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<Rack>,
    /// Redis for retry topics (`retry.redis.url`), read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisRef>,
    /// Prometheus metrics (`/metrics` on the metrics port; a ServiceMonitor when that CRD exists).
    #[serde(default)]
    pub metrics: Metrics,
    /// What happens to existing partitions when brokers are added: `Never` (the default: new
    /// brokers take replicas of new topics and of reassignments started by hand) or `OnScaleUp`
    /// (once the added brokers run, the operator reassigns existing partitions until every
    /// broker holds as many replicas as the others, give or take one; progress in
    /// `status.rebalance`).
    #[serde(default)]
    pub rebalance: Rebalance,
    /// Scheduling and metadata for the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// Broker storage: `ephemeral` (an `emptyDir`, lost with the pod: tests and demos) or
/// `persistent` (a PersistentVolumeClaim per broker through `volumeClaimTemplates`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    #[serde(rename = "type", default)]
    pub type_: StorageType,
    /// Requested size of each broker's volume, e.g. `100Gi` (persistent only; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// StorageClass of the volumes; the cluster's default when unset (persistent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum StorageType {
    #[default]
    Ephemeral,
    Persistent,
}

/// Container ports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listeners {
    /// Kafka clients (PLAINTEXT).
    #[serde(default = "default_kafka_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub kafka: i32,
    /// The Raft metadata quorum (CONTROLLER).
    #[serde(default = "default_controller_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub controller: i32,
    /// `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics: i32,
    /// The gRPC admin API (delay cancel/list, DLQ redrive).
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin: i32,
}

fn default_kafka_port() -> i32 {
    9092
}
fn default_controller_port() -> i32 {
    9093
}
fn default_metrics_port() -> i32 {
    9404
}
fn default_admin_port() -> i32 {
    9095
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            kafka: default_kafka_port(),
            controller: default_controller_port(),
            metrics: default_metrics_port(),
            admin: default_admin_port(),
        }
    }
}

/// See `KafkaClusterSpec::rebalance`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Rebalance {
    #[default]
    Never,
    OnScaleUp,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rack {
    /// The node label whose value becomes `broker.rack`.
    pub topology_key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisRef {
    /// A Secret in the cluster's namespace.
    pub secret_name: String,
    /// The Secret key holding the URL (`redis://[:password@]host:port/db`, or `rediss://`).
    #[serde(default = "default_url_key")]
    pub url_key: String,
}

fn default_url_key() -> String {
    "url".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Serve `/metrics` and annotate pods for scraping.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { enabled: true }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra pod labels (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready_replicas: i32,
    /// The pods' label selector (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `host:port` of the bootstrap Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Node ids of the Raft voters, fixed when the cluster was created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<i32>,
    /// The brokers as the cluster reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,
    /// The rolling restart in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPlan>,
    /// The scale-down in progress, if any: partitions move off the brokers being removed before
    /// the StatefulSet shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleStatus>,
    /// The rebalance after a scale-up in progress, if any (`spec.rebalance: OnScaleUp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<ScaleStatus>,
    /// Broker configs from `spec.config` that the brokers change while running, as last applied
    /// to the cluster-wide default with IncrementalAlterConfigs (no restart).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub live_config: BTreeMap<String, String>,
}

/// Partitions moving because of a scale: a scale-down from `from` to `to` brokers (the
/// StatefulSet keeps `from` pods until no partition has a replica on the brokers being removed),
/// or the rebalance after a scale-up (until the brokers' replica counts differ by at most one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    pub from: i32,
    pub to: i32,
    /// Node ids of the brokers being removed (scale-down) or added (rebalance).
    pub brokers: Vec<i32>,
    /// Partitions last found to need moving.
    pub partitions_to_move: i32,
    /// Partitions whose reassignment the brokers report in progress.
    pub reassigning: i32,
    /// What holds the moves back (brokers not running or unreachable, a reassignment refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub id: i32,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// Pods to restart one at a time (the active controller last).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartPlan {
    /// Pods still to restart, in order.
    pub pods: Vec<String>,
    /// Why (e.g. the pod template changed).
    pub reason: String,
    /// The pod being restarted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// What holds the next restart back (a pod not Ready, a partition at min.insync.replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
}
