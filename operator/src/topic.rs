//! The KafkaTopic controller: Kubernetes → cluster, one way. Creates the topic, grows its
//! partitions, sets its configs with IncrementalAlterConfigs, reports (and reverts) what was
//! changed in the cluster behind its back, and deletes the topic with the resource when
//! `deletionPolicy: Delete`.

use std::collections::BTreeMap;

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::child::{sync_failed, ClusterChild, Outcome};
use crate::cluster::desired;
use crate::context::Context;
use crate::crd::cluster::KafkaCluster;
use crate::crd::status::{Condition, Phase};
use crate::crd::topic::{DeletionPolicy, KafkaTopic, KafkaTopicStatus};
use crate::kafka::{Admin, KafkaError, TopicState, RESOURCE_TOPIC};

pub const FINALIZER: &str = "kairos.dev/topic";

/// A topic as a resource wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: i32,
    pub replicas: Option<i32>,
    pub configs: BTreeMap<String, String>,
}

/// What [`sync`] found and did.
#[derive(Debug, Default)]
pub struct Synced {
    pub created: bool,
    /// Changes made to an existing topic, one line each.
    pub changes: Vec<String>,
    /// The topic after the sync.
    pub state: Option<TopicState>,
}

/// Brings one topic to `want`. Partitions only grow (a topic with more partitions than wanted is
/// refused before anything changes); configs not in `want` are deleted (back to the default).
pub async fn sync(admin: &mut Admin, want: &DesiredTopic) -> Result<Synced, SyncError> {
    let have = admin.topic(&want.name).await?;
    tracing::debug!("topic {}: in the cluster {have:?}", want.name);
    let Some(have) = have else {
        admin
            .create_topic(&want.name, want.partitions, want.replicas, &want.configs)
            .await?;
        return Ok(Synced {
            created: true,
            changes: Vec::new(),
            state: admin.topic(&want.name).await?,
        });
    };
    if have.partitions > want.partitions {
        return Err(SyncError::Spec {
            reason: "PartitionsDecreased",
            message: format!(
                "spec.partitions: topic {} has {} partitions and Kafka cannot remove partitions; set partitions to at least {}",
                want.name, have.partitions, have.partitions
            ),
        });
    }
    let mut changes = Vec::new();
    let (set, delete) = config_diff(&have.configs, &want.configs);
    for (k, v) in &set {
        changes.push(match have.configs.get(k) {
            Some(old) => format!("config {k} was {old:?}, set to {v:?}"),
            None => format!("config {k} was unset, set to {v:?}"),
        });
    }
    for k in &delete {
        changes.push(format!(
            "config {k} was {:?} in the cluster only, removed",
            have.configs.get(k).cloned().unwrap_or_default()
        ));
    }
    if !set.is_empty() || !delete.is_empty() {
        admin
            .alter_configs(RESOURCE_TOPIC, &want.name, &set, &delete)
            .await?;
    }
    if have.partitions < want.partitions {
        admin.create_partitions(&want.name, want.partitions).await?;
        changes.push(format!(
            "partitions were {}, grown to {}",
            have.partitions, want.partitions
        ));
    }
    let state = if changes.is_empty() {
        Some(have)
    } else {
        admin.topic(&want.name).await?
    };
    Ok(Synced {
        created: false,
        changes,
        state,
    })
}

/// (configs to set, configs to delete) to turn `have` into `want`.
pub fn config_diff(
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let set = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    (set, delete)
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The spec asks for something the cluster cannot do.
    #[error("{message}")]
    Spec {
        reason: &'static str,
        message: String,
    },
}

/// The Kafka topic name: `spec.topicName`, else `metadata.name`.
pub fn topic_name(kt: &KafkaTopic) -> String {
    kt.spec.topic_name.clone().unwrap_or_else(|| kt.name_any())
}

/// The check the CRD's CEL rule makes on newer API servers: `topicName` never changes.
fn renamed(kt: &KafkaTopic) -> Option<Phase> {
    let was = kt.status.as_ref()?.topic_name.as_ref()?;
    let now = topic_name(kt);
    (*was != now).then(|| Phase::Stalled {
        reason: "TopicNameImmutable".into(),
        message: format!(
            "spec.topicName: this resource manages topic {was:?} and a topic cannot be renamed; set topicName back to {was:?}, or create another KafkaTopic for {now:?}"
        ),
    })
}

impl ClusterChild for KafkaTopic {
    type Status = KafkaTopicStatus;
    const FINALIZER: &'static str = FINALIZER;

    fn cluster_ref(&self) -> &str {
        &self.spec.cluster_ref
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    fn status(&self) -> Option<&KafkaTopicStatus> {
        self.status.as_ref()
    }

    fn conditions(status: &KafkaTopicStatus) -> &[Condition] {
        &status.conditions
    }

    fn set_conditions(status: &mut KafkaTopicStatus, generation: Option<i64>, c: Vec<Condition>) {
        status.observed_generation = generation;
        status.conditions = c;
    }

    fn carried_status(&self) -> KafkaTopicStatus {
        let old = self.status.clone().unwrap_or_default();
        KafkaTopicStatus {
            // Kept until the next drift or spec change, so a reader sees what was reverted.
            drift: if self.metadata.generation == old.observed_generation {
                old.drift
            } else {
                Vec::new()
            },
            ..old
        }
    }

    fn check(&self) -> Option<Phase> {
        renamed(self)
    }

    async fn sync(
        &self,
        ctx: &Context,
        kc: &KafkaCluster,
        status: &mut KafkaTopicStatus,
    ) -> Outcome {
        let name = topic_name(self);
        let want = DesiredTopic {
            name: name.clone(),
            partitions: self.spec.partitions,
            replicas: self.spec.replicas,
            configs: self.spec.config.clone(),
        };
        let spec_changed =
            self.metadata.generation != self.status.as_ref().and_then(|s| s.observed_generation);
        match connect_and_sync(ctx, kc, &want).await {
            Ok(synced) => {
                report(self, ctx, spec_changed, &synced, &want).await;
                if !synced.changes.is_empty() && !spec_changed {
                    status.drift = synced.changes.clone();
                }
                status.topic_name = Some(name);
                if let Some(state) = &synced.state {
                    status.partitions = Some(state.partitions);
                    status.config = state.configs.clone();
                }
                Outcome::Done(Phase::Ready)
            }
            Err(e) => sync_failed(&format!("topic {name}"), e),
        }
    }

    fn managed_topics(&self) -> Vec<String> {
        // The topic this resource manages (a refused rename left spec.topicName pointing
        // elsewhere).
        vec![self
            .status
            .as_ref()
            .and_then(|s| s.topic_name.clone())
            .unwrap_or_else(|| topic_name(self))]
    }
}

/// Connects to the cluster's bootstrap address and syncs one topic.
pub async fn connect_and_sync(
    ctx: &Context,
    kc: &KafkaCluster,
    want: &DesiredTopic,
) -> Result<Synced, SyncError> {
    let mut admin = Admin::connect(&desired::bootstrap_servers(kc), &ctx.resolver).await?;
    sync(&mut admin, want).await
}

/// Events for what a sync did: created, changed by a spec change, or drift reverted.
async fn report<K: Resource<DynamicType = ()>>(
    obj: &K,
    ctx: &Context,
    spec_changed: bool,
    synced: &Synced,
    want: &DesiredTopic,
) {
    if synced.created {
        ctx.event(
            obj,
            EventType::Normal,
            "Created",
            format!(
                "Created topic {} with {} partitions",
                want.name, want.partitions
            ),
        )
        .await;
    } else if !synced.changes.is_empty() {
        let (type_, reason) = if spec_changed {
            (EventType::Normal, "Updated")
        } else {
            (EventType::Warning, "DriftReverted")
        };
        ctx.event(
            obj,
            type_,
            reason,
            format!("Topic {}: {}", want.name, synced.changes.join("; ")),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_diff_sets_what_differs_and_deletes_what_the_spec_does_not_name() {
        // Proves drift in both directions is found: a changed value and a config added outside.
        let have = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.ms".to_string(), "60000".to_string()),
        ]);
        let want = BTreeMap::from([
            ("retention.ms".to_string(), "86400000".to_string()),
            ("segment.ms".to_string(), "60000".to_string()),
            ("max.message.bytes".to_string(), "2097152".to_string()),
        ]);
        let (set, delete) = config_diff(&have, &want);
        assert_eq!(
            set.keys().collect::<Vec<_>>(),
            ["max.message.bytes", "retention.ms"]
        );
        assert_eq!(delete, ["cleanup.policy"]);
        assert_eq!(config_diff(&want, &want), (BTreeMap::new(), vec![]));
    }
}
