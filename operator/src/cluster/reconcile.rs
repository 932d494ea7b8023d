//! The KafkaCluster controller: applies the owned objects from [`super::desired`] and reports
//! what it sees in the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};

use super::desired;
use super::restart::{self, PartitionState, PodState, Step};
use super::scale;
use crate::apply::{apply, apply_status, contains, get_and_apply, Applied};
use crate::context::{condition_event, key, now, Context, Error, Result, SERVICE_MONITOR_CRD};
use crate::crd::cluster::{
    BrokerStatus, KafkaCluster, KafkaClusterStatus, Rebalance, RestartPlan, ScaleStatus,
};
use crate::crd::status::{conditions, Condition, Phase};
use crate::kafka::{Admin, KafkaError, RESOURCE_BROKER};
use kafka_protocol::messages::MetadataResponse;

/// How often a healthy cluster is looked at again without any watch event.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a rolling restart in progress is looked at again (besides StatefulSet events).
const RESTART_RECHECK: Duration = Duration::from_secs(2);
/// How long API discovery may lag a ServiceMonitor CRD change (tries x retry).
const DISCOVERY_TRIES: u32 = 40;
const DISCOVERY_RETRY: Duration = Duration::from_millis(250);
/// How often a cluster waiting on something outside its spec (a Secret) is looked at again.
const RECHECK: Duration = Duration::from_secs(10);

/// Runs the controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let scope = ctx.scope.clone();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=kairos-operator");
    // Installing (or removing) the Prometheus Operator's CRD reconciles every cluster, so their
    // ServiceMonitors appear without an operator restart.
    let crds: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client.clone());
    let named = watcher::Config::default().fields(&format!("metadata.name={SERVICE_MONITOR_CRD}"));
    let crd_ctx = ctx.clone();
    let monitors_changed = watcher(crds, named)
        .default_backoff()
        .filter_map(move |event| {
            let ctx = crd_ctx.clone();
            async move {
                let served = match event {
                    Ok(watcher::Event::Apply(_) | watcher::Event::InitApply(_)) => true,
                    Ok(watcher::Event::Delete(_)) => false,
                    Ok(_) => return None,
                    Err(e) => {
                        tracing::debug!("watching the ServiceMonitor CRD: {e}");
                        return None;
                    }
                };
                // API discovery follows a CRD change a moment later: ask until it agrees.
                let mut changed = false;
                for _ in 0..DISCOVERY_TRIES {
                    match ctx.rediscover_service_monitor().await {
                        Ok(c) => changed |= c,
                        Err(e) => tracing::warn!("discovering monitoring.coreos.com/v1: {e}"),
                    }
                    if ctx.service_monitor().is_some() == served {
                        break;
                    }
                    tokio::time::sleep(DISCOVERY_RETRY).await;
                }
                changed.then_some(())
            }
        });
    Controller::new(
        scope.api::<KafkaCluster>(&client),
        watcher::Config::default().any_semantic(),
    )
    .owns(scope.api::<StatefulSet>(&client), owned.clone())
    .owns(scope.api::<ConfigMap>(&client), owned.clone())
    .owns(scope.api::<Service>(&client), owned)
    .reconcile_all_on(monitors_changed)
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

    if let Some(phase) = below_quorum(kc, voters) {
        status.ready_replicas = ready(current_set.as_ref());
        set_status(kc, ctx, &clusters, status, phase).await?;
        return Ok(Action::requeue(RESYNC));
    }
    // One connection to the brokers for the whole reconcile, opened when first needed.
    let mut admin = Admin::lazy(&desired::bootstrap_servers(kc), &ctx.resolver);
    // A scale-down keeps the StatefulSet at its size until no partition is left on the brokers
    // being removed.
    let mut replicas = kc.spec.replicas;
    let mut scaling = None;
    status.scale_down = None;
    if let Some(from) = current_replicas.filter(|cur| *cur > kc.spec.replicas) {
        if let ScaleDown::InProgress(sd, phase) = scale_down(kc, ctx, &mut admin, from).await {
            replicas = from;
            status.scale_down = Some(sd);
            scaling = Some(phase);
        }
    }
    // A scale-up with `rebalance: OnScaleUp` stays in the status until the replicas are spread
    // (so it outlives an operator restart); turning the option off or scaling down drops it.
    let to = kc.spec.replicas;
    status.rebalance = match (kc.spec.rebalance, current_replicas, status.rebalance.take()) {
        (Rebalance::Never, _, _) => None,
        (_, Some(cur), _) if cur > to => None,
        (_, _, Some(rb)) if rb.to == to => Some(rb),
        (Rebalance::OnScaleUp, Some(cur), earlier) if cur < to => {
            let from = earlier.map_or(cur, |rb| rb.from.min(cur));
            Some(ScaleStatus {
                from,
                to,
                brokers: (from..to).collect(),
                partitions_to_move: 0,
                reassigning: 0,
                blocked_by: None,
            })
        }
        (_, _, earlier) => earlier,
    };

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
    if let Some(spec) = set.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
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
    if let Some(sm) = ctx.service_monitor() {
        let monitors: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &sm);
        if kc.spec.metrics.enabled {
            let monitor: DynamicObject = serde_json::from_value(desired::service_monitor(kc))?;
            note(
                get_and_apply(&monitors, monitor, ctx).await?,
                "ServiceMonitor",
                &n.stateful_set,
            );
        } else if delete_owned(kc, &monitors, &n.stateful_set).await? {
            ctx.metrics
                .writes
                .with_label_values(&["ServiceMonitor"])
                .inc();
            ctx.event(
                kc,
                EventType::Normal,
                "Deleted",
                format!(
                    "Deleted ServiceMonitor {}: spec.metrics.enabled is false",
                    n.stateful_set
                ),
            )
            .await;
        }
    }
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
    let mut live = None;
    if ready > 0 {
        if let Some(brokers) = registered_brokers(kc, &mut admin).await {
            status.brokers = brokers;
        }
        live = live_config(kc, ctx, &mut admin, &mut status).await;
    }
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&desired::selector_string(kc)))
        .await?
        .items;
    let racks = match &kc.spec.rack {
        Some(r) => label_racks(ctx, &pods_api, &pods, &r.topology_key).await?,
        None => Racks::default(),
    };
    status.restart = rolling_restart(kc, ctx, &mut admin, &pods_api, &pods, &set).await?;
    // A rebalance starts once every broker runs, and never during a restart or a scale-down.
    let rebalancing = match status.rebalance.take() {
        Some(rb) if status.restart.is_none() && scaling.is_none() && ready >= kc.spec.replicas => {
            let step = rebalance(kc, ctx, &mut admin, rb).await;
            status.rebalance = step.as_ref().map(|(rb, _)| rb.clone());
            step.map(|(_, phase)| phase)
        }
        waiting => {
            status.rebalance = waiting;
            None
        }
    };
    let (phase, requeue) = match (&status.restart, scaling, rebalancing, live) {
        (_, Some(stalled @ Phase::Stalled { .. }), _, _) => (stalled, RECHECK),
        (Some(plan), _, _, _) => (
            Phase::Reconciling {
                reason: "RollingRestart".into(),
                message: match &plan.blocked_by {
                    Some(why) => format!("rolling restart waits: {why}"),
                    None => format!("rolling restart: {} pod(s) left", plan.pods.len()),
                },
            },
            RESTART_RECHECK,
        ),
        (None, Some(scaling), _, _) => (scaling, RESTART_RECHECK),
        (None, None, Some(rebalancing), _) => (rebalancing, RESTART_RECHECK),
        (None, None, None, Some(live)) => (live, RECHECK),
        (None, None, None, None) => match racks.missing {
            Some(missing) => (missing, RECHECK),
            None => (phase, RESYNC),
        },
    };
    // A pod still waiting for its rack is looked at again soon (its broker waits for it).
    let requeue = if racks.waiting {
        requeue.min(RESTART_RECHECK)
    } else {
        requeue
    };
    set_status(kc, ctx, &clusters, status, phase).await?;
    Ok(Action::requeue(requeue))
}

/// The rolling restart's next move: deletes the next outdated pod when it is safe, and returns
/// the plan (None when every pod runs the StatefulSet's current revision).
async fn rolling_restart(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &mut Admin,
    pods_api: &Api<Pod>,
    listed: &[Pod],
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
    let pods: Vec<PodState> = listed.iter().filter_map(pod_state).collect();
    tracing::debug!(cluster = %kc.name_any(), "update revision {update}, pods {pods:?}");
    let outdated = restart::order(&pods, &update, None);
    if outdated.is_empty() {
        return Ok(None);
    }
    let previous = kc.status.as_ref().and_then(|s| s.restart.clone());
    let mut plan = RestartPlan {
        pods: Vec::new(),
        reason: "the pod template changed (broker config or spec)".into(),
        current: previous.and_then(|p| p.current),
        blocked_by: None,
    };
    let md = match admin.metadata(None).await {
        Ok(md) => md,
        Err(e) => {
            plan.pods = names(&outdated);
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
            let partitions = partition_states(&md);
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
                    let related = listed
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

/// Every partition the metadata lists, with its replicas and in-sync replicas.
fn partition_states(md: &MetadataResponse) -> Vec<PartitionState> {
    md.topics
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
        .collect()
}

enum ScaleDown {
    /// No partition is left on the brokers being removed: the StatefulSet may shrink.
    Done,
    /// Partitions are moving (or cannot): the StatefulSet keeps its size.
    InProgress(ScaleStatus, Phase),
}

/// One step of a scale-down from `from` brokers to `spec.replicas`: reads where the partitions
/// are, submits the moves off the brokers being removed that are not already under way, and
/// says whether the StatefulSet may shrink.
async fn scale_down(kc: &KafkaCluster, ctx: &Context, admin: &mut Admin, from: i32) -> ScaleDown {
    let to = kc.spec.replicas;
    let removing: Vec<i32> = (to..from).collect();
    let mut sd = ScaleStatus {
        from,
        to,
        brokers: removing.clone(),
        partitions_to_move: 0,
        reassigning: 0,
        blocked_by: None,
    };
    let in_progress = |sd: ScaleStatus| {
        let message = match &sd.blocked_by {
            Some(why) => format!("scale-down from {from} to {to} waits: {why}"),
            None => format!(
                "scaling down from {from} to {to}: {} partition(s) still on broker(s) {}, {} being reassigned",
                sd.partitions_to_move,
                scale::list(&sd.brokers),
                sd.reassigning
            ),
        };
        ScaleDown::InProgress(
            sd,
            Phase::Reconciling {
                reason: "ScalingDown".into(),
                message,
            },
        )
    };
    let (md, ongoing) = match placement(admin).await {
        Ok(asked) => asked,
        Err(e) => {
            sd.blocked_by = Some(e.to_string());
            return in_progress(sd);
        }
    };
    let partitions = partition_states(&md);
    let moving =
        |topic: &str, partition: i32| ongoing.iter().any(|(t, i)| t == topic && *i == partition);
    let left: Vec<&PartitionState> = scale::on_removed(&partitions, &removing).collect();
    if left.is_empty() {
        return ScaleDown::Done;
    }
    sd.partitions_to_move = left.len() as i32;
    sd.reassigning = left
        .iter()
        .filter(|p| moving(&p.topic, p.partition))
        .count() as i32;
    let remaining = match registered(&md, to) {
        Ok(ids) => ids,
        Err(missing) => {
            sd.blocked_by = Some(format!(
                "broker(s) {} that would remain are not registered (not running?)",
                scale::list(&missing)
            ));
            return in_progress(sd);
        }
    };
    let moves = match scale::plan(&partitions, &remaining, &removing) {
        Ok(moves) => moves,
        Err(why) => {
            sd.blocked_by = Some(why.clone());
            return ScaleDown::InProgress(
                sd,
                Phase::Stalled {
                    reason: "ScaleDownBlocked".into(),
                    message: format!(
                        "spec.replicas: cannot scale down from {from} to {to}: {why}; the StatefulSet stays at {from}"
                    ),
                },
            );
        }
    };
    let moves: Vec<(String, i32, Vec<i32>)> = moves
        .into_iter()
        .filter(|m| !moving(&m.topic, m.partition))
        .map(|m| (m.topic, m.partition, m.replicas))
        .collect();
    if !moves.is_empty() {
        match admin.reassign(&moves).await {
            Ok(()) => {
                sd.reassigning += moves.len() as i32;
                ctx.event(
                    kc,
                    EventType::Normal,
                    "ReassigningPartitions",
                    format!(
                        "Moving {} partition(s) off broker(s) {} before scaling down from {from} to {to}: {}",
                        moves.len(),
                        scale::list(&removing),
                        describe(&moves)
                    ),
                )
                .await;
            }
            Err(e) => sd.blocked_by = Some(format!("reassigning partitions: {e}")),
        }
    }
    in_progress(sd)
}

/// Deletes `name` if this cluster owns it (never an object someone else made); true when it did.
async fn delete_owned(kc: &KafkaCluster, api: &Api<DynamicObject>, name: &str) -> Result<bool> {
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let ours = obj
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == kc.metadata.uid.as_ref());
    if !ours {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Brokers `0..count` as the metadata lists them, sorted; Err: the ids it does not list.
fn registered(md: &MetadataResponse, count: i32) -> Result<Vec<i32>, Vec<i32>> {
    let mut ids: Vec<i32> = md
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .filter(|id| (0..count).contains(id))
        .collect();
    ids.sort_unstable();
    let missing: Vec<i32> = (0..count).filter(|id| !ids.contains(id)).collect();
    if missing.is_empty() {
        Ok(ids)
    } else {
        Err(missing)
    }
}

/// Where the partitions are (Metadata) and which are being reassigned.
async fn placement(
    admin: &mut Admin,
) -> Result<(MetadataResponse, Vec<(String, i32)>), KafkaError> {
    let md = admin.metadata(None).await?;
    let ongoing = admin.reassignments().await?;
    Ok((md, ongoing))
}

/// `t-0 -> [1, 3], ...` for an event (the first ten moves).
fn describe(moves: &[(String, i32, Vec<i32>)]) -> String {
    let shown: Vec<String> = moves
        .iter()
        .take(10)
        .map(|(t, p, r)| format!("{t}-{p} -> [{}]", scale::list(r)))
        .collect();
    let more = if moves.len() > shown.len() {
        ", ..."
    } else {
        ""
    };
    format!("{}{more}", shown.join(", "))
}

/// One step of the rebalance after a scale-up: waits for reassignments under way, then submits
/// the moves that even out the brokers' replica counts ([`scale::balance`]). None when they are
/// even: the rebalance is over.
async fn rebalance(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &mut Admin,
    mut rb: ScaleStatus,
) -> Option<(ScaleStatus, Phase)> {
    let (from, to) = (rb.from, rb.to);
    rb.blocked_by = None;
    let in_progress = |rb: ScaleStatus| {
        let message = match &rb.blocked_by {
            Some(why) => format!("rebalance after scaling up from {from} to {to} waits: {why}"),
            None => format!(
                "rebalancing after scaling up from {from} to {to}: {} partition(s) to move, {} being reassigned",
                rb.partitions_to_move, rb.reassigning
            ),
        };
        let phase = Phase::Reconciling {
            reason: "Rebalancing".into(),
            message,
        };
        Some((rb, phase))
    };
    let (md, ongoing) = match placement(admin).await {
        Ok(asked) => asked,
        Err(e) => {
            rb.blocked_by = Some(e.to_string());
            return in_progress(rb);
        }
    };
    let brokers = match registered(&md, to) {
        Ok(ids) => ids,
        Err(missing) => {
            rb.blocked_by = Some(format!(
                "broker(s) {} not registered yet",
                scale::list(&missing)
            ));
            return in_progress(rb);
        }
    };
    // Replica lists are in flux while partitions move: plan again once the moves are done.
    rb.reassigning = ongoing.len() as i32;
    if !ongoing.is_empty() {
        return in_progress(rb);
    }
    let moves: Vec<(String, i32, Vec<i32>)> = scale::balance(&partition_states(&md), &brokers)
        .into_iter()
        .map(|m| (m.topic, m.partition, m.replicas))
        .collect();
    rb.partitions_to_move = moves.len() as i32;
    if moves.is_empty() {
        ctx.event(
            kc,
            EventType::Normal,
            "Rebalanced",
            format!(
                "Replicas are spread evenly over brokers {} after scaling up from {from} to {to}",
                scale::list(&brokers)
            ),
        )
        .await;
        return None;
    }
    match admin.reassign(&moves).await {
        Ok(()) => {
            rb.reassigning = moves.len() as i32;
            ctx.event(
                kc,
                EventType::Normal,
                "Rebalancing",
                format!(
                    "Moving {} partition(s) to spread replicas over brokers {} after scaling up from {from} to {to}: {}",
                    moves.len(),
                    scale::list(&brokers),
                    describe(&moves)
                ),
            )
            .await;
        }
        Err(e) => rb.blocked_by = Some(format!("reassigning partitions: {e}")),
    }
    in_progress(rb)
}

#[derive(Default)]
struct Racks {
    /// A pod is not scheduled yet, or its node lacks the label.
    waiting: bool,
    /// The phase for a node without the label.
    missing: Option<Phase>,
}

/// Sets each scheduled broker pod's rack annotation to its node's `key` label (start.sh waits for
/// it and passes it as `broker.rack`).
async fn label_racks(ctx: &Context, pods_api: &Api<Pod>, pods: &[Pod], key: &str) -> Result<Racks> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut racks = Racks::default();
    let mut zones: BTreeMap<String, Option<String>> = BTreeMap::new();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            racks.waiting = true;
            continue;
        };
        let zone = match zones.get(&node) {
            Some(zone) => zone.clone(),
            None => {
                let zone = nodes
                    .get_opt(&node)
                    .await?
                    .and_then(|n| n.metadata.labels.and_then(|l| l.get(key).cloned()));
                zones.insert(node.clone(), zone.clone());
                zone
            }
        };
        let name = pod.name_any();
        let Some(zone) = zone else {
            racks.missing = Some(Phase::Reconciling {
                reason: "RackLabelMissing".into(),
                message: format!(
                    "spec.rack.topologyKey: node {node} of pod {name} has no label {key}; its broker waits for the label"
                ),
            });
            continue;
        };
        if pod.annotations().get(desired::RACK_ANNOTATION) != Some(&zone) {
            let patch = serde_json::json!({
                "metadata": {"annotations": {desired::RACK_ANNOTATION: zone}}
            });
            pods_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            ctx.metrics.writes.with_label_values(&["Pod"]).inc();
        }
    }
    Ok(racks)
}

/// Applies the live part of `spec.config` to the cluster-wide broker default when the brokers
/// hold something else, and removes the keys it set before that the spec no longer names. A
/// phase when that cannot be done now (brokers unreachable) or at all (a value refused).
async fn live_config(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &mut Admin,
    status: &mut KafkaClusterStatus,
) -> Option<Phase> {
    let want = desired::live_config(kc);
    if want.is_empty() && status.live_config.is_empty() {
        return None;
    }
    let applied = async {
        let have = admin.broker_defaults().await?;
        // Of what the brokers hold and the spec no longer names, only the keys set here before.
        let (set, delete) = crate::topic::config_diff(&have, &want);
        let delete: Vec<String> = delete
            .into_iter()
            .filter(|k| status.live_config.contains_key(k))
            .collect();
        if !set.is_empty() || !delete.is_empty() {
            admin
                .alter_configs(RESOURCE_BROKER, "", &set, &delete)
                .await?;
        }
        Ok::<_, KafkaError>((set, delete))
    }
    .await;
    match applied {
        Ok((set, delete)) => {
            status.live_config = want;
            if !set.is_empty() || !delete.is_empty() {
                let mut what: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
                what.extend(delete.iter().map(|k| format!("{k} removed")));
                ctx.event(
                    kc,
                    EventType::Normal,
                    "LiveConfigApplied",
                    format!(
                        "Applied to the running brokers without a restart: {}",
                        what.join(", ")
                    ),
                )
                .await;
            }
            None
        }
        Err(e) if e.transient() => Some(Phase::Reconciling {
            reason: "LiveConfigPending".into(),
            message: format!("applying live broker config: {e}"),
        }),
        Err(e) => Some(Phase::Stalled {
            reason: "InvalidConfig".into(),
            message: format!("spec.config: the brokers refused the live config: {e}"),
        }),
    }
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
async fn registered_brokers(kc: &KafkaCluster, admin: &mut Admin) -> Option<Vec<BrokerStatus>> {
    match admin.metadata(Some(&[])).await {
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

/// Replicas below the voter count would remove Raft voters (the voter set is static).
fn below_quorum(kc: &KafkaCluster, voters: i32) -> Option<Phase> {
    let want = kc.spec.replicas;
    (want < voters).then(|| Phase::Stalled {
        reason: "BelowQuorum".into(),
        message: format!(
            "spec.replicas: {want} would remove Raft voters; the cluster was created with {voters} voters (pods 0-{}), so replicas must stay at least {voters}",
            voters - 1
        ),
    })
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
