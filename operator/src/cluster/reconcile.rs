//! The KafkaCluster controller: applies the owned objects from [`super::desired`] and reports
//! what it sees in the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};

use super::desired;
use super::restart::{self, PartitionState, PodState, Step};
use crate::apply::{apply, apply_status, contains, get_and_apply, Applied};
use crate::context::{condition_event, key, now, Context, Error, Result};
use crate::crd::cluster::{BrokerStatus, KafkaCluster, KafkaClusterStatus, RestartPlan};
use crate::crd::status::{conditions, Condition, Phase};
use crate::kafka::{Admin, KafkaError};

/// How often a healthy cluster is looked at again without any watch event.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a rolling restart in progress is looked at again (besides StatefulSet events).
const RESTART_RECHECK: Duration = Duration::from_secs(2);
/// How often a cluster waiting on something outside its spec (a Secret) is looked at again.
const RECHECK: Duration = Duration::from_secs(10);

/// Runs the controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let scope = ctx.scope.clone();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=kairos-operator");
    Controller::new(
        scope.api::<KafkaCluster>(&client),
        watcher::Config::default().any_semantic(),
    )
    .owns(scope.api::<StatefulSet>(&client), owned.clone())
    .owns(scope.api::<ConfigMap>(&client), owned.clone())
    .owns(scope.api::<Service>(&client), owned)
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!("KafkaCluster reconcile: {e}");
        }
    })
    .await;
}

pub async fn reconcile(kc: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&kc, &ctx).await;
    ctx.observe("KafkaCluster", &key(&*kc), started, &result);
    result
}

pub fn error_policy(kc: Arc<KafkaCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %kc.name_any(), "reconcile failed: {err}");
    ctx.backoff(&key(&*kc))
}

async fn reconcile_inner(kc: &KafkaCluster, ctx: &Context) -> Result<Action> {
    let ns = kc
        .namespace()
        .ok_or_else(|| Error::NoNamespace(kc.name_any()))?;
    if !ctx.scope.includes(&ns) || kc.metadata.deletion_timestamp.is_some() {
        // Owner references hand the owned objects to the garbage collector.
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let clusters: Api<KafkaCluster> = Api::namespaced(client.clone(), &ns);
    // What is not found out below carries over (brokers, the restart plan).
    let mut status = kc.status.clone().unwrap_or_default();

    if let Some(stalled) = check(kc, ctx, &ns).await? {
        let requeue = stalled.requeue;
        status.ready_replicas = 0;
        set_status(kc, ctx, &clusters, status, stalled.phase).await?;
        return Ok(requeue.map_or_else(Action::await_change, Action::requeue));
    }

    let n = desired::names(kc);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let current_set = sets.get_opt(&n.stateful_set).await?;
    let current_replicas = current_set
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    // The voter set is fixed when the cluster is created (the quorum's membership is static).
    let voters = if status.voters.is_empty() {
        desired::voter_count(kc.spec.replicas)
    } else {
        status.voters.len() as i32
    };
    status.voters = (0..voters).collect();

    if let Some(phase) = scale_down_block(kc, current_replicas, voters) {
        status.ready_replicas = ready(current_set.as_ref());
        set_status(kc, ctx, &clusters, status, phase).await?;
        return Ok(Action::requeue(RESYNC));
    }

    let mut written = Vec::new();
    let mut note = |what: Applied, kind: &str, name: &str| {
        if what != Applied::Unchanged {
            written.push(format!("{kind} {name}"));
        }
    };
    let cm = desired::config_map(kc, voters);
    let hash = desired::config_hash(cm.data.as_ref().unwrap_or(&Default::default()));
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    note(
        get_and_apply(&configs, cm, ctx).await?,
        "ConfigMap",
        &n.config_map,
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for svc in [
        desired::headless_service(kc),
        desired::bootstrap_service(kc),
    ] {
        let name = svc.name_any();
        note(get_and_apply(&services, svc, ctx).await?, "Service", &name);
    }
    let mut set = desired::stateful_set(kc, &hash);
    if let Some(current) = &current_set {
        let claims = |s: &StatefulSet| {
            s.spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.clone())
        };
        let (have, want) = (claims(current), claims(&set));
        if !contains(&serde_json::to_value(&have)?, &serde_json::to_value(&want)?) {
            // volumeClaimTemplates cannot change on a StatefulSet: keep what it was created with.
            ctx.event(
                kc,
                EventType::Warning,
                "StorageUnchanged",
                "spec.storage differs from the volumes the brokers were created with; a StatefulSet cannot change its volumeClaimTemplates, so the brokers keep their volumes".into(),
            )
            .await;
            if let Some(spec) = set.spec.as_mut() {
                spec.volume_claim_templates = have;
            }
        }
    }
    let (applied, set) = apply(&sets, set, current_set, ctx).await?;
    note(applied, "StatefulSet", &n.stateful_set);
    let pdbs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ctx.pdb);
    let mut pdb = serde_json::to_value(desired::pod_disruption_budget(kc))?;
    pdb["apiVersion"] = ctx.pdb.api_version.clone().into();
    let pdb: DynamicObject = serde_json::from_value(pdb)?;
    note(
        get_and_apply(&pdbs, pdb, ctx).await?,
        "PodDisruptionBudget",
        &n.stateful_set,
    );
    if !written.is_empty() {
        ctx.event(
            kc,
            EventType::Normal,
            "Applied",
            format!("Applied {}", written.join(", ")),
        )
        .await;
    }

    let ready = ready(Some(&set));
    let phase = if ready >= kc.spec.replicas {
        Phase::Ready
    } else {
        Phase::Reconciling {
            reason: "BrokersStarting".into(),
            message: format!("{ready} of {} brokers ready", kc.spec.replicas),
        }
    };
    status.ready_replicas = ready;
    if ready > 0 {
        if let Some(brokers) = registered_brokers(kc, ctx).await {
            status.brokers = brokers;
        }
    }
    status.restart = rolling_restart(kc, ctx, &ns, &set).await?;
    let (phase, requeue) = match &status.restart {
        Some(plan) => (
            Phase::Reconciling {
                reason: "RollingRestart".into(),
                message: match &plan.blocked_by {
                    Some(why) => format!("rolling restart waits: {why}"),
                    None => format!("rolling restart: {} pod(s) left", plan.pods.len()),
                },
            },
            RESTART_RECHECK,
        ),
        None => (phase, RESYNC),
    };
    set_status(kc, ctx, &clusters, status, phase).await?;
    Ok(Action::requeue(requeue))
}

/// The rolling restart's next move: deletes the next outdated pod when it is safe, and returns
/// the plan (None when every pod runs the StatefulSet's current revision).
async fn rolling_restart(
    kc: &KafkaCluster,
    ctx: &Context,
    ns: &str,
    set: &StatefulSet,
) -> Result<Option<RestartPlan>> {
    let Some(update) = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(desired::TEMPLATE_HASH_ANNOTATION).cloned())
    else {
        return Ok(None);
    };
    // Pods made before the StatefulSet controller saw the new template would come back old.
    let seen = set.status.as_ref().and_then(|s| s.observed_generation) >= set.metadata.generation;
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods_api
        .list(&ListParams::default().labels(&desired::selector_string(kc)))
        .await?;
    let pods: Vec<PodState> = list.items.iter().filter_map(pod_state).collect();
    tracing::debug!(cluster = %kc.name_any(), "update revision {update}, pods {pods:?}");
    if restart::order(&pods, &update, None).is_empty() {
        return Ok(None);
    }
    let previous = kc.status.as_ref().and_then(|s| s.restart.clone());
    let mut plan = RestartPlan {
        pods: Vec::new(),
        reason: "the pod template changed (broker config or spec)".into(),
        current: previous.and_then(|p| p.current),
        blocked_by: None,
    };
    let asked = async {
        let mut admin = Admin::connect(&desired::bootstrap_servers(kc), &ctx.resolver).await?;
        let md = admin.metadata(None).await?;
        Ok::<_, KafkaError>((admin, md))
    };
    let (mut admin, md) = match asked.await {
        Ok(asked) => asked,
        Err(e) => {
            plan.pods = names(&restart::order(&pods, &update, None));
            plan.blocked_by = Some(e.to_string());
            return Ok(Some(plan));
        }
    };
    let controller = Some(md.controller_id.0).filter(|id| *id >= 0);
    plan.pods = names(&restart::order(&pods, &update, controller));
    let step = if seen {
        restart::next(&pods, replicas, &update, controller)
    } else {
        Step::Wait(
            "the StatefulSet controller has not yet seen the new pod template".into(),
            None,
        )
    };
    match step {
        Step::Done => return Ok(None),
        Step::Wait(why, current) => {
            plan.blocked_by = Some(why);
            plan.current = current.or(plan.current);
        }
        Step::Restart(pod) => {
            let partitions: Vec<PartitionState> = md
                .topics
                .iter()
                .flat_map(|t| {
                    let topic = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    t.partitions.iter().map(move |p| PartitionState {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    })
                })
                .collect();
            let mut topics: Vec<String> = partitions.iter().map(|p| p.topic.clone()).collect();
            topics.dedup();
            let blocker = match admin.min_insync(&topics).await {
                Ok(min) => restart::isr_blocker(&partitions, &min, pod.ordinal),
                Err(e) => Some(format!("reading min.insync.replicas: {e}")),
            };
            match blocker {
                Some(why) => plan.blocked_by = Some(why),
                None => {
                    pods_api.delete(&pod.name, &DeleteParams::default()).await?;
                    ctx.metrics.writes.with_label_values(&["Pod"]).inc();
                    plan.pods.retain(|p| *p != pod.name);
                    let related = list
                        .items
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(pod.name.as_str()))
                        .map(|p| p.object_ref(&()));
                    ctx.event_related(
                        kc,
                        EventType::Normal,
                        "RestartingPod",
                        format!(
                            "Restarting pod {} (broker {}) for the new pod template; {} left after it",
                            pod.name,
                            pod.ordinal,
                            plan.pods.len()
                        ),
                        related,
                    )
                    .await;
                    plan.current = Some(pod.name);
                }
            }
        }
    }
    Ok(Some(plan))
}

fn names(pods: &[PodState]) -> Vec<String> {
    pods.iter().map(|p| p.name.clone()).collect()
}

/// A broker pod's restart-relevant state (None for pods without an ordinal name).
fn pod_state(pod: &Pod) -> Option<PodState> {
    let name = pod.metadata.name.clone()?;
    let ordinal = name.rsplit('-').next()?.parse().ok()?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(PodState {
        revision: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(desired::TEMPLATE_HASH_ANNOTATION).cloned()),
        name,
        ordinal,
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// The brokers the cluster's metadata lists (None when the brokers cannot be asked now).
async fn registered_brokers(kc: &KafkaCluster, ctx: &Context) -> Option<Vec<BrokerStatus>> {
    let bootstrap = desired::bootstrap_servers(kc);
    let result = async {
        let mut admin = Admin::connect(&bootstrap, &ctx.resolver).await?;
        admin.metadata(Some(&[])).await
    }
    .await;
    match result {
        Ok(md) => {
            let mut brokers: Vec<BrokerStatus> = md
                .brokers
                .iter()
                .map(|b| BrokerStatus {
                    id: b.node_id.0,
                    address: format!("{}:{}", b.host, b.port),
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect();
            brokers.sort_by_key(|b| b.id);
            Some(brokers)
        }
        Err(e) => {
            tracing::debug!(cluster = %kc.name_any(), "listing brokers: {e}");
            None
        }
    }
}

/// Ready pods of the StatefulSet (0 when it does not exist yet).
fn ready(set: Option<&StatefulSet>) -> i32 {
    set.and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

struct Blocked {
    phase: Phase,
    /// When to look again (a missing Secret may appear); `None`: wait for a spec change.
    requeue: Option<Duration>,
}

/// The spec checks the CRD schema makes on newer API servers, and the references it names.
async fn check(kc: &KafkaCluster, ctx: &Context, ns: &str) -> Result<Option<Blocked>> {
    if let Err(e) = desired::validate(kc) {
        return Ok(Some(Blocked {
            phase: Phase::Stalled {
                reason: "InvalidSpec".into(),
                message: e.to_string(),
            },
            requeue: None,
        }));
    }
    if let Some(redis) = &kc.spec.redis {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let message = match secrets.get_opt(&redis.secret_name).await? {
            None => Some(format!(
                "spec.redis.secretName: Secret {ns}/{} does not exist; create it with the Redis URL under key {:?}",
                redis.secret_name, redis.url_key
            )),
            Some(s) => {
                // (stringData is write-only: the API server folds it into data.)
                let has_key = s.data.as_ref().is_some_and(|d| d.contains_key(&redis.url_key));
                (!has_key).then(|| {
                    format!(
                        "spec.redis.urlKey: Secret {ns}/{} has no key {:?}; add it or set urlKey to the key holding the Redis URL",
                        redis.secret_name, redis.url_key
                    )
                })
            }
        };
        if let Some(message) = message {
            return Ok(Some(Blocked {
                phase: Phase::Stalled {
                    reason: "RedisSecretMissing".into(),
                    message,
                },
                requeue: Some(RECHECK),
            }));
        }
    }
    Ok(None)
}

/// Scale-down needs the partitions moved off the brokers first, and may never remove a voter.
fn scale_down_block(kc: &KafkaCluster, current: Option<i32>, voters: i32) -> Option<Phase> {
    let want = kc.spec.replicas;
    if want < voters {
        return Some(Phase::Stalled {
            reason: "BelowQuorum".into(),
            message: format!(
                "spec.replicas: {want} would remove Raft voters; the cluster was created with {voters} voters (pods 0-{}), so replicas must stay at least {voters}",
                voters - 1
            ),
        });
    }
    match current {
        Some(cur) if want < cur => Some(Phase::Stalled {
            reason: "ScaleDownNotSupported".into(),
            message: format!(
                "spec.replicas: scaling down from {cur} to {want} needs partition reassignment off brokers {want}-{}, which this operator version does not do yet; the StatefulSet stays at {cur}",
                cur - 1
            ),
        }),
        _ => None,
    }
}

/// Completes `status` (generation, conditions for `phase`, the derived selector and bootstrap
/// address) and writes it when it differs, with an event when the phase changes.
async fn set_status(
    kc: &KafkaCluster,
    ctx: &Context,
    api: &Api<KafkaCluster>,
    mut status: KafkaClusterStatus,
    phase: Phase,
) -> Result<()> {
    let generation = kc.metadata.generation;
    let old: &[Condition] = kc.status.as_ref().map_or(&[], |s| &s.conditions);
    status.observed_generation = generation;
    status.conditions = conditions(&phase, old, generation, &now());
    status.selector = Some(desired::selector_string(kc));
    status.bootstrap_servers = Some(desired::bootstrap_servers(kc));
    if apply_status(api, kc, &status, kc.status.as_ref(), ctx).await? {
        condition_event(ctx, kc, old, &status.conditions, &phase).await;
    }
    Ok(())
}
