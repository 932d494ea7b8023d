//! What every reconcile shares: the client, the event recorder, metrics, the discovered API
//! versions, the namespaces in scope, and per-object failure counts for exponential backoff.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use kube::api::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::crd::status::{Condition, Phase};
use crate::kafka::Resolver;
use crate::metrics::Metrics;

/// Why a reconcile failed. Each is retried with backoff; an invalid spec is not an error (it
/// becomes the `Stalled` condition and waits for a spec change).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding an object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("{0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The `reason` label of `kairos_operator_reconcile_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "api_unreachable",
            Error::Json(_) => "encoding",
            Error::NoNamespace(_) => "no_namespace",
            Error::Kafka(_) => "kafka",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "finalizer",
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The namespaces the operator watches: all, one, or a list (then it watches all and skips the
/// others, so RBAC must allow the cluster-wide watch).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespaces: Vec<String>,
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned,
        K::DynamicType: Default,
    {
        match self.namespaces.as_slice() {
            [one] => Api::namespaced(client.clone(), one),
            _ => Api::all(client.clone()),
        }
    }

    pub fn includes(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// `policy/v1` PodDisruptionBudgets, or `policy/v1beta1` on API servers older than v1.21.
    pub pdb: ApiResource,
    /// `monitoring.coreos.com/v1` ServiceMonitors, when the API server serves them (the
    /// Prometheus Operator is installed): looked up at start and again whenever that CRD changes.
    service_monitor: RwLock<Option<ApiResource>>,
    pub scope: Scope,
    /// Out-of-cluster address mapping for the brokers.
    pub resolver: Resolver,
    /// How often resources are re-checked against the cluster (drift made outside Kubernetes
    /// raises no watch event).
    pub resync: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

/// What [`Context`] is built from besides the client and recorder.
pub struct Settings {
    pub pdb: ApiResource,
    pub service_monitor: Option<ApiResource>,
    pub scope: Scope,
    pub resolver: Resolver,
    pub resync: Duration,
}

/// First retry after a failure, doubled per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Metrics, s: Settings) -> Context {
        Context {
            client,
            recorder,
            metrics,
            pdb: s.pdb,
            service_monitor: RwLock::new(s.service_monitor),
            scope: s.scope,
            resolver: s.resolver,
            resync: s.resync,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The ServiceMonitor resource, when the API server serves it.
    pub fn service_monitor(&self) -> Option<ApiResource> {
        match self.service_monitor.read() {
            Ok(sm) => sm.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks the API server again whether it serves ServiceMonitors; true when the answer
    /// changed.
    pub async fn rediscover_service_monitor(&self) -> kube::Result<bool> {
        let found = service_monitor_resource(&self.client).await?;
        let mut sm = match self.service_monitor.write() {
            Ok(sm) => sm,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = sm.is_some() != found.is_some();
        *sm = found;
        Ok(changed)
    }

    /// Counts and times one reconcile of `kind`; a success forgets the object's failures.
    pub fn observe<T>(&self, kind: &str, key: &str, started: Instant, result: &Result<T>) {
        let m = &self.metrics;
        m.duration
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        m.reconciles.with_label_values(&[kind, outcome]).inc();
        match result {
            Err(e) => m.failures.with_label_values(&[kind, e.reason()]).inc(),
            Ok(_) => self.succeeded(key),
        }
    }

    /// Publishes an event about `obj`; a failure to publish is logged, not fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.event_related(obj, type_, reason, note, None).await
    }

    /// An event about `obj` that also names `related` (events with the same reason but another
    /// related object are kept apart instead of counted as one series).
    pub async fn event_related<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(object = %obj.name_any(), "publishing event {reason}: {e}");
        }
    }

    /// The delay before retrying `key` after one more failure: 0.5 s, 1 s, 2 s, ... 5 min.
    pub fn backoff(&self, key: &str) -> Action {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Action::requeue(backoff_delay(*n))
    }

    /// Forgets `key`'s failures after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// After a status write: an Event for the condition that became true (Warning when Stalled).
pub async fn condition_event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    old: &[Condition],
    new: &[Condition],
    phase: &Phase,
) {
    let changed = |c: &Condition| {
        !old.iter()
            .any(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason)
    };
    if let Some(c) = new.iter().find(|c| c.status == "True" && changed(c)) {
        let type_ = match phase {
            Phase::Stalled { .. } => EventType::Warning,
            _ => EventType::Normal,
        };
        let note = if c.message.is_empty() {
            c.reason.clone()
        } else {
            c.message.clone()
        };
        ctx.event(obj, type_, &c.reason, note).await;
    }
}

/// The delay after `failures` consecutive failures.
pub fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

/// `kind/namespace/name`, the backoff key of an object.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Now, as Kubernetes writes times (RFC 3339, seconds).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The name of the Prometheus Operator's ServiceMonitor CRD.
pub const SERVICE_MONITOR_CRD: &str = "servicemonitors.monitoring.coreos.com";

/// ServiceMonitors, when the API server serves `monitoring.coreos.com/v1` `servicemonitors`.
pub async fn service_monitor_resource(client: &Client) -> kube::Result<Option<ApiResource>> {
    let served = serves(client, "monitoring.coreos.com/v1", "servicemonitors").await?;
    Ok(served.then(|| {
        ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
        ))
    }))
}

/// Whether the API server serves `plural` in group/version `gv` (404: the group is unknown).
pub async fn serves(client: &Client, gv: &str, plural: &str) -> kube::Result<bool> {
    match client.list_api_group_resources(gv).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        // Proves consecutive failures double the wait and cap it.
        let waits: Vec<u64> = [1, 2, 3, 4, 10, 11, 1000]
            .map(|n| backoff_delay(n).as_millis() as u64)
            .to_vec();
        assert_eq!(waits, [500, 1000, 2000, 4000, 256_000, 300_000, 300_000]);
    }
}
