//! What KafkaTopic and DelayQueue share: both name a KafkaCluster in their namespace, keep
//! topics in it behind a finalizer, are re-reconciled when that cluster changes, and end each
//! reconcile in one status write. Each resource says only what is its own ([`ClusterChild`]).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::apply::apply_status;
use crate::cluster::desired;
use crate::context::{condition_event, key, now, Context, Error, Result};
use crate::crd::cluster::KafkaCluster;
use crate::crd::status::{conditions, Condition, Phase};
use crate::crd::topic::DeletionPolicy;
use crate::kafka::{Admin, KafkaError};
use crate::topic::SyncError;

/// A resource that keeps topics in the KafkaCluster it names.
pub trait ClusterChild:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    type Status: Serialize + PartialEq + Clone + Default + Send + Sync;
    const FINALIZER: &'static str;

    fn cluster_ref(&self) -> &str;
    fn deletion_policy(&self) -> DeletionPolicy;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(status: &Self::Status) -> &[Condition];
    /// Sets `observedGeneration` and the conditions.
    fn set_conditions(status: &mut Self::Status, generation: Option<i64>, c: Vec<Condition>);
    /// The status this reconcile starts from: what carries over from the last one.
    fn carried_status(&self) -> Self::Status;
    /// A spec the operator refuses before asking the cluster (rules the API server may drop).
    fn check(&self) -> Option<Phase>;
    /// Brings the cluster's topics in line with the spec, filling `status`.
    fn sync(
        &self,
        ctx: &Context,
        kc: &KafkaCluster,
        status: &mut Self::Status,
    ) -> impl Future<Output = Outcome> + Send;
    /// The topics deleting the resource deletes (with `deletionPolicy: Delete`).
    fn managed_topics(&self) -> Vec<String>;
}

/// What a reconcile ends in, before the status is written.
pub enum Outcome {
    Done(Phase),
    /// Brokers unreachable or busy: Reconciling, and retried with backoff.
    Retry(Phase, KafkaError),
}

/// [`Outcome`] of a failed topic sync; `what` names what failed (e.g. `topic orders`).
pub fn sync_failed(what: &str, e: SyncError) -> Outcome {
    match e {
        SyncError::Spec { reason, message } => Outcome::Done(Phase::Stalled {
            reason: reason.into(),
            message,
        }),
        SyncError::Kafka(e) if e.transient() => Outcome::Retry(
            Phase::Reconciling {
                reason: "BrokersUnavailable".into(),
                message: format!("{what}: {e}"),
            },
            e,
        ),
        SyncError::Kafka(e) => Outcome::Done(Phase::Stalled {
            reason: "RefusedByCluster".into(),
            message: format!("{what}: {e}"),
        }),
    }
}

/// The cluster `obj` names, if it exists and is not being deleted.
pub async fn cluster<K: ClusterChild>(ctx: &Context, obj: &K) -> Result<Option<KafkaCluster>> {
    let ns = obj.namespace().unwrap_or_default();
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(clusters
        .get_opt(obj.cluster_ref())
        .await?
        .filter(|c| c.metadata.deletion_timestamp.is_none()))
}

/// Runs the controller for `K` until shutdown. A change to a KafkaCluster re-reconciles the
/// resources that name it.
pub async fn run<K: ClusterChild>(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let scope = ctx.scope.clone();
    let controller = Controller::new(
        scope.api::<K>(&client),
        watcher::Config::default().any_semantic(),
    );
    let children = controller.store();
    controller
        .watches(
            scope.api::<KafkaCluster>(&client),
            watcher::Config::default(),
            move |kc: KafkaCluster| {
                let ns = kc.namespace();
                let name = kc.name_any();
                children
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == ns && c.cluster_ref() == name)
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("{} reconcile: {e}", K::kind(&()));
            }
        })
        .await;
}

async fn reconcile<K: ClusterChild>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(obj.name_any()))?;
    let result = if ctx.scope.includes(&ns) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, K::FINALIZER, obj.clone(), |event| async {
            match event {
                Finalizer::Apply(obj) => apply(&*obj, &ctx, &api).await,
                Finalizer::Cleanup(obj) => cleanup(&*obj, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    } else {
        Ok(Action::await_change())
    };
    ctx.observe(&K::kind(&()), &key(&*obj), started, &result);
    result
}

fn error_policy<K: ClusterChild>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(object = %obj.name_any(), "{} reconcile failed: {err}", K::kind(&()));
    ctx.backoff(&key(&*obj))
}

async fn apply<K: ClusterChild>(obj: &K, ctx: &Context, api: &Api<K>) -> Result<Action> {
    let mut status = obj.carried_status();
    let outcome = match obj.check() {
        Some(phase) => Outcome::Done(phase),
        None => match cluster(ctx, obj).await? {
            Some(kc) => obj.sync(ctx, &kc, &mut status).await,
            None => Outcome::Done(Phase::Stalled {
                reason: "ClusterNotFound".into(),
                message: format!(
                    "spec.clusterRef: KafkaCluster {:?} does not exist in namespace {}; create it or fix clusterRef",
                    obj.cluster_ref(),
                    obj.namespace().unwrap_or_default()
                ),
            }),
        },
    };
    let (phase, retry) = match outcome {
        Outcome::Done(p) => (p, None),
        Outcome::Retry(p, e) => (p, Some(e)),
    };
    let generation = obj.meta().generation;
    let old: &[Condition] = obj.status().map(K::conditions).unwrap_or_default();
    K::set_conditions(
        &mut status,
        generation,
        conditions(&phase, old, generation, &now()),
    );
    if apply_status(api, obj, &status, obj.status(), ctx).await? {
        condition_event(ctx, obj, old, K::conditions(&status), &phase).await;
    }
    match retry {
        Some(e) => Err(Error::Kafka(e)),
        None => Ok(Action::requeue(ctx.resync)),
    }
}

/// Deletes the managed topics when the policy says so and the cluster still exists; a missing
/// cluster releases the finalizer (there is nothing left to delete).
async fn cleanup<K: ClusterChild>(obj: &K, ctx: &Context) -> Result<Action> {
    if obj.deletion_policy() == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let Some(kc) = cluster(ctx, obj).await? else {
        return Ok(Action::await_change());
    };
    let names = obj.managed_topics();
    if names.is_empty() {
        return Ok(Action::await_change());
    }
    let mut admin = Admin::connect(&desired::bootstrap_servers(&kc), &ctx.resolver).await?;
    for name in &names {
        admin.delete_topic(name).await?;
    }
    let what = if names.len() == 1 { "topic" } else { "topics" };
    ctx.event(
        obj,
        EventType::Normal,
        "Deleted",
        format!("Deleted {what} {}", names.join(", ")),
    )
    .await;
    Ok(Action::await_change())
}
