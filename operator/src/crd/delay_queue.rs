//! `DelayQueue`: a delay topic forwarding to a target topic, with retries and a dead-letter
//! topic — "cancel the order if still unpaid after 30 minutes" as one resource.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::Condition;
use super::topic::DeletionPolicy;

/// Becomes up to four topics: `<name>.delay` (`kairos.delay.target`), the target, and with
/// `retry` set `<target>.retry` (`kairos.retry.target`) and the dead-letter topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kairos.dev",
    version = "v1alpha1",
    kind = "DelayQueue",
    namespaced,
    status = "DelayQueueStatus",
    shortname = "dq",
    category = "kairos",
    doc = "A delay topic that forwards each record to a target topic after a delay, with optional retries and a dead-letter topic",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(name = "Delay", type_ = "string", json_path = ".spec.delay"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetTopic"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DelayQueueSpec {
    /// Name of the `KafkaCluster` (same namespace).
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    /// How long records wait: a Go duration (`30m`, `1h30m`, `1500ms`).
    #[schemars(length(min = 1))]
    pub delay: String,
    /// Where due records go. Cannot change.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("targetTopic is immutable"))]
    pub target_topic: String,
    /// Partitions of the delay and target topics; may grow, never shrink.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions cannot be decreased"))]
    pub partitions: i32,
    /// Replication factor; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Retries of records a consumer of the target failed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Where records go after the last retry (`kairos.dlq.topic`); `<target>.dlq` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// What deleting this resource does to its topics.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn one() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Wait before each attempt, as Go durations (`10s`, `1m`, `10m`); the last repeats.
    #[schemars(length(min = 1))]
    pub backoff: Vec<String>,
    /// Attempts before a record goes to the dead-letter topic.
    #[schemars(range(min = 1))]
    pub max_attempts: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelayQueueStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Records waiting in the delay topic, as the brokers count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Records past their due time not yet forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue: Option<i64>,
}
