//! The KafkaTopic controller: Kubernetes → cluster, one way. Creates the topic, grows its
//! partitions, sets its configs with IncrementalAlterConfigs, reports (and reverts) what was
//! changed in the cluster behind its back, and deletes the topic with the resource when
//! `deletionPolicy: Delete`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};

use crate::apply::apply_status;
use crate::cluster::desired;
use crate::context::{key, now, Context, Error, Result};
use crate::crd::cluster::KafkaCluster;
use crate::crd::status::{conditions, Phase};
use crate::crd::topic::{DeletionPolicy, KafkaTopic, KafkaTopicStatus};
use crate::kafka::{Admin, KafkaError, TopicState};

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
        admin.alter_configs(&want.name, &set, &delete).await?;
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

/// Runs the controller until shutdown. A change to a KafkaCluster re-reconciles its topics.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let scope = ctx.scope.clone();
    let controller = Controller::new(
        scope.api::<KafkaTopic>(&client),
        watcher::Config::default().any_semantic(),
    );
    let topics = controller.store();
    controller
        .watches(
            scope.api::<KafkaCluster>(&client),
            watcher::Config::default(),
            move |kc: KafkaCluster| {
                let ns = kc.namespace();
                let name = kc.name_any();
                topics
                    .state()
                    .into_iter()
                    .filter(|t| t.namespace() == ns && t.spec.cluster_ref == name)
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("KafkaTopic reconcile: {e}");
            }
        })
        .await;
}

pub async fn reconcile(kt: Arc<KafkaTopic>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = kt
        .namespace()
        .ok_or_else(|| Error::NoNamespace(kt.name_any()))?;
    let result = if ctx.scope.includes(&ns) {
        let api: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, FINALIZER, kt.clone(), |event| async {
            match event {
                Finalizer::Apply(kt) => apply(&kt, &ctx, &api).await,
                Finalizer::Cleanup(kt) => cleanup(&kt, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    } else {
        Ok(Action::await_change())
    };
    ctx.observe("KafkaTopic", &key(&*kt), started, &result);
    result
}

pub fn error_policy(kt: Arc<KafkaTopic>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(topic = %kt.name_any(), "reconcile failed: {err}");
    ctx.backoff(&key(&*kt))
}

/// The Kafka topic name: `spec.topicName`, else `metadata.name`.
pub fn topic_name(kt: &KafkaTopic) -> String {
    kt.spec.topic_name.clone().unwrap_or_else(|| kt.name_any())
}

/// The cluster a resource names, if it exists and is not being deleted.
pub async fn cluster<K: Resource>(
    ctx: &Context,
    obj: &K,
    cluster_ref: &str,
) -> Result<Option<KafkaCluster>> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(clusters
        .get_opt(cluster_ref)
        .await?
        .filter(|c| c.metadata.deletion_timestamp.is_none()))
}

/// What a reconcile ends in, before the status is written.
pub enum Outcome {
    Done(Phase),
    /// Brokers unreachable or busy: Reconciling, and retried with backoff.
    Retry(Phase, KafkaError),
}

/// [`Outcome`] of a failed [`sync`].
pub fn sync_failed(name: &str, e: SyncError) -> Outcome {
    match e {
        SyncError::Spec { reason, message } => Outcome::Done(Phase::Stalled {
            reason: reason.into(),
            message,
        }),
        SyncError::Kafka(e) if e.transient() => Outcome::Retry(
            Phase::Reconciling {
                reason: "BrokersUnavailable".into(),
                message: format!("topic {name}: {e}"),
            },
            e,
        ),
        SyncError::Kafka(e) => Outcome::Done(Phase::Stalled {
            reason: "RefusedByCluster".into(),
            message: format!("topic {name}: {e}"),
        }),
    }
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

async fn apply(kt: &KafkaTopic, ctx: &Context, api: &Api<KafkaTopic>) -> Result<Action> {
    let old = kt.status.clone().unwrap_or_default();
    let name = topic_name(kt);
    let mut status = KafkaTopicStatus {
        topic_name: old.topic_name.clone(),
        partitions: old.partitions,
        config: old.config.clone(),
        // Kept until the next drift or spec change, so a reader sees what was reverted.
        drift: if kt.metadata.generation == old.observed_generation {
            old.drift.clone()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let outcome = if let Some(phase) = renamed(kt) {
        Outcome::Done(phase)
    } else if let Some(kc) = cluster(ctx, kt, &kt.spec.cluster_ref).await? {
        let want = DesiredTopic {
            name: name.clone(),
            partitions: kt.spec.partitions,
            replicas: kt.spec.replicas,
            configs: kt.spec.config.clone(),
        };
        match connect_and_sync(ctx, &kc, &want).await {
            Ok(synced) => {
                report(kt, ctx, &old, &synced, &want).await;
                let spec_changed = kt.metadata.generation != old.observed_generation;
                if !synced.changes.is_empty() && !spec_changed {
                    status.drift = synced.changes.clone();
                }
                status.topic_name = Some(name.clone());
                if let Some(state) = &synced.state {
                    status.partitions = Some(state.partitions);
                    status.config = state.configs.clone();
                }
                Outcome::Done(Phase::Ready)
            }
            Err(e) => sync_failed(&name, e),
        }
    } else {
        Outcome::Done(Phase::Stalled {
            reason: "ClusterNotFound".into(),
            message: format!(
                "spec.clusterRef: KafkaCluster {:?} does not exist in namespace {}; create it or fix clusterRef",
                kt.spec.cluster_ref,
                kt.namespace().unwrap_or_default()
            ),
        })
    };
    let (phase, retry) = match outcome {
        Outcome::Done(p) => (p, None),
        Outcome::Retry(p, e) => (p, Some(e)),
    };
    status.observed_generation = kt.metadata.generation;
    status.conditions = conditions(&phase, &old.conditions, kt.metadata.generation, &now());
    if apply_status(api, kt, &status, kt.status.as_ref(), ctx).await? {
        crate::context::condition_event(ctx, kt, &old.conditions, &status.conditions, &phase).await;
    }
    match retry {
        Some(e) => Err(Error::Kafka(e)),
        None => Ok(Action::requeue(ctx.resync)),
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
    old: &KafkaTopicStatus,
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
        let spec_changed = obj.meta().generation != old.observed_generation;
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

/// Deletes the topic when the policy says so and the cluster still exists; a missing cluster
/// releases the finalizer (there is nothing left to delete).
async fn cleanup(kt: &KafkaTopic, ctx: &Context) -> Result<Action> {
    if kt.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let Some(kc) = cluster(ctx, kt, &kt.spec.cluster_ref).await? else {
        return Ok(Action::await_change());
    };
    // The topic this resource manages (a refused rename left spec.topicName pointing elsewhere).
    let name = kt
        .status
        .as_ref()
        .and_then(|s| s.topic_name.clone())
        .unwrap_or_else(|| topic_name(kt));
    let mut admin = Admin::connect(&desired::bootstrap_servers(&kc), &ctx.resolver).await?;
    admin.delete_topic(&name).await?;
    ctx.event(
        kt,
        EventType::Normal,
        "Deleted",
        format!("Deleted topic {name}"),
    )
    .await;
    Ok(Action::await_change())
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
