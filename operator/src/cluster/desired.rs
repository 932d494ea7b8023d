//! The objects a `KafkaCluster` owns, as pure functions of the resource: no I/O, so each can be
//! unit-tested and compared with what the API server holds before anything is written.
//!
//! Layout (names for a cluster `c`):
//! - ConfigMap `c-config`: `server.properties` (shared) and `start.sh`, which derives each pod's
//!   `node.id` from its ordinal and gives the first [`voter_count`] pods the controller role.
//! - Service `c-brokers` (headless, publishes not-ready addresses so the quorum can form) and
//!   Service `c-bootstrap` (clients' first contact).
//! - StatefulSet `c-broker` (OnDelete: the operator restarts pods itself, one at a time), probes
//!   on `/healthz` and `/readyz`, a preStop hook that waits for the broker's controlled shutdown.
//! - PodDisruptionBudget `c-broker` (maxUnavailable 1).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, DownwardAPIVolumeFile, DownwardAPIVolumeSource, ObjectFieldSelector,
    PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::cluster::{KafkaCluster, StorageType};

/// The image when `spec.image` is unset: the broker of the operator's own version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/kairos-dev/kairos:", env!("CARGO_PKG_VERSION"));
/// Where the broker keeps its logs in the container.
pub const DATA_DIR: &str = "/var/lib/kairos";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/kairos";
/// The pod annotation that changes with the broker config, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "kairos.dev/config-hash";
/// The pod annotation with a hash of the whole pod template: a pod whose value differs from the
/// StatefulSet's is outdated and due for the rolling restart.
pub const TEMPLATE_HASH_ANNOTATION: &str = "kairos.dev/template-hash";
/// The pod annotation the operator sets to the value of the node's `spec.rack.topologyKey`
/// label; the broker reads it through a downward-API file as `broker.rack`.
pub const RACK_ANNOTATION: &str = "kairos.dev/rack";
/// Where the downward-API volume with the pod's rack is mounted.
pub const PODINFO_DIR: &str = "/etc/kairos-pod";
/// The broker image's non-root user and group.
pub const BROKER_UID: i64 = 10001;
/// KRaft's usual quorum size: more voters slow every metadata write and add no safety here.
pub const VOTERS_MAX: i32 = 3;

/// Broker config keys the operator sets itself; `spec.config` may not name them.
pub const OWNED_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "controller.listener.names",
    "controller.quorum.voters",
    "log.dirs",
    "log.dir",
    "metrics.listener",
    "admin.listener",
    "retry.redis.url",
    "broker.rack",
    "cluster.id",
];

/// Broker configs the brokers change while running (Kairos' dynamic broker configs): the
/// operator sets them as the cluster-wide default with IncrementalAlterConfigs, and leaves them
/// out of `server.properties`, so changing one restarts nothing. A unit test holds this list to
/// the broker's own.
pub const LIVE_BROKER_CONFIGS: &[&str] = &[
    "follower.replication.throttled.rate",
    "leader.replication.throttled.rate",
];

fn is_live_config(key: &str) -> bool {
    LIVE_BROKER_CONFIGS.contains(&key)
}

/// The live part of `spec.config` (see [`LIVE_BROKER_CONFIGS`]).
pub fn live_config(kc: &KafkaCluster) -> BTreeMap<String, String> {
    kc.spec
        .config
        .iter()
        .filter(|(k, _)| is_live_config(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A spec the operator cannot act on, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn spec_error(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The checks the CRD schema makes on a real API server, made again here (an API server without
/// them, like the v1.20 used in tests, lets anything through).
pub fn validate(kc: &KafkaCluster) -> Result<(), SpecError> {
    let spec = &kc.spec;
    if spec.replicas < 1 {
        return Err(spec_error(
            "spec.replicas",
            format!("must be at least 1, got {}", spec.replicas),
        ));
    }
    if let Some(key) = spec
        .config
        .keys()
        .find(|k| OWNED_KEYS.contains(&k.as_str()))
    {
        return Err(spec_error(
            "spec.config",
            format!("{key} is set by the operator; remove it"),
        ));
    }
    if spec.storage.type_ == StorageType::Persistent {
        match spec.storage.size.as_deref() {
            None | Some("") => {
                return Err(spec_error(
                    "spec.storage.size",
                    "persistent storage needs a size, e.g. 100Gi",
                ))
            }
            Some(size) if !is_quantity(size) => {
                return Err(spec_error(
                    "spec.storage.size",
                    format!("{size:?} is not a quantity like 100Gi"),
                ))
            }
            Some(_) => {}
        }
    }
    let l = &spec.listeners;
    let ports = [l.kafka, l.controller, l.metrics, l.admin];
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(p) {
            return Err(spec_error(
                "spec.listeners",
                format!("port {p} is not in 1-65535"),
            ));
        }
        if ports[..i].contains(p) {
            return Err(spec_error(
                "spec.listeners",
                format!("port {p} is used twice"),
            ));
        }
    }
    Ok(())
}

/// Kubernetes quantity syntax, loosely: digits (with a fraction) and an optional known suffix.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|v| v > 0.0)
        && [
            "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
        ]
        .contains(&suffix)
}

/// Object names of a cluster.
pub struct Names {
    pub config_map: String,
    pub headless: String,
    pub bootstrap: String,
    /// Also the PodDisruptionBudget's name.
    pub stateful_set: String,
}

pub fn names(kc: &KafkaCluster) -> Names {
    let n = kc.name_any();
    Names {
        config_map: format!("{n}-config"),
        headless: format!("{n}-brokers"),
        bootstrap: format!("{n}-bootstrap"),
        stateful_set: format!("{n}-broker"),
    }
}

/// The labels that select a cluster's broker pods.
pub fn selector_labels(kc: &KafkaCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kairos".to_string()),
        ("app.kubernetes.io/instance".to_string(), kc.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            "broker".to_string(),
        ),
    ])
}

/// Selector labels plus who manages the object.
pub fn labels(kc: &KafkaCluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(kc);
    l.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "kairos-operator".to_string(),
    );
    l
}

/// `a=b,c=d` for the scale subresource's selector.
pub fn selector_string(kc: &KafkaCluster) -> String {
    selector_labels(kc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Voters for a new cluster: the first `min(3, replicas)` pods. Fixed afterwards (the quorum's
/// voter set is static), and kept in the status.
pub fn voter_count(replicas: i32) -> i32 {
    replicas.clamp(1, VOTERS_MAX)
}

fn namespace(kc: &KafkaCluster) -> String {
    kc.namespace().unwrap_or_else(|| "default".to_string())
}

/// The stable DNS name of broker `ordinal` (through the headless Service).
pub fn pod_host(kc: &KafkaCluster, ordinal: i32) -> String {
    let n = names(kc);
    format!(
        "{}-{ordinal}.{}.{}.svc",
        n.stateful_set,
        n.headless,
        namespace(kc)
    )
}

/// `host:port` of the bootstrap Service.
pub fn bootstrap_servers(kc: &KafkaCluster) -> String {
    format!(
        "{}.{}.svc:{}",
        names(kc).bootstrap,
        namespace(kc),
        kc.spec.listeners.kafka
    )
}

/// `host:port` of broker `ordinal`'s gRPC admin API (through the headless Service).
pub fn pod_admin_address(kc: &KafkaCluster, ordinal: i32) -> String {
    format!("{}:{}", pod_host(kc, ordinal), kc.spec.listeners.admin)
}

/// `controller.quorum.voters` for `voters` voters: `0@<pod-0 host>:<controller port>,...`.
pub fn quorum_voters(kc: &KafkaCluster, voters: i32) -> String {
    (0..voters)
        .map(|i| format!("{i}@{}:{}", pod_host(kc, i), kc.spec.listeners.controller))
        .collect::<Vec<_>>()
        .join(",")
}

/// The shared `server.properties`: the operator's keys, then `spec.config` (validated not to
/// name an owned key) but for its live keys, which are applied to the running brokers instead. Replication defaults follow the cluster size (3 replicas, 2 in sync, as
/// production Kafka clusters are set up, fewer on smaller clusters).
pub fn server_properties(kc: &KafkaCluster, voters: i32) -> String {
    let spec = &kc.spec;
    let rf = spec.replicas.clamp(1, 3);
    let mut props: BTreeMap<String, String> = BTreeMap::from([
        ("controller.listener.names".into(), "CONTROLLER".into()),
        ("controller.quorum.voters".into(), quorum_voters(kc, voters)),
        ("log.dirs".into(), format!("{DATA_DIR}/data")),
        (
            "metrics.listener".into(),
            format!("0.0.0.0:{}", spec.listeners.metrics),
        ),
        (
            "admin.listener".into(),
            format!("0.0.0.0:{}", spec.listeners.admin),
        ),
        ("default.replication.factor".into(), rf.to_string()),
        ("offsets.topic.replication.factor".into(), rf.to_string()),
        ("min.insync.replicas".into(), (rf - 1).max(1).to_string()),
    ]);
    if let Some(uid) = kc.uid() {
        // A data directory from another cluster (another KafkaCluster's volume) fails fast.
        props.insert("cluster.id".into(), uid.replace('-', ""));
    }
    for (k, v) in &spec.config {
        if !is_live_config(k) {
            props.insert(k.clone(), v.clone());
        }
    }
    let mut out = String::from(
        "# Generated by kairos-operator from the KafkaCluster; edits are overwritten.\n",
    );
    for (k, v) in props {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// The container's entry point: per-pod settings from the pod's ordinal.
pub fn start_script(kc: &KafkaCluster, voters: i32) -> String {
    let l = &kc.spec.listeners;
    let n = names(kc);
    let domain = format!("{}.{}.svc", n.headless, namespace(kc));
    format!(
        r#"#!/bin/sh
# Generated by kairos-operator. Node id = pod ordinal; the first {voters} pod(s) also run the
# Raft metadata quorum (process.roles=broker,controller), the others only serve clients.
set -eu
ordinal="${{HOSTNAME##*-}}"
roles=broker
listeners="PLAINTEXT://0.0.0.0:{kafka}"
if [ "$ordinal" -lt {voters} ]; then
  roles=broker,controller
  listeners="$listeners,CONTROLLER://0.0.0.0:{controller}"
fi
set -- --config {CONFIG_DIR}/server.properties \
  --override "node.id=$ordinal" \
  --override "process.roles=$roles" \
  --override "listeners=$listeners" \
  --override "advertised.listeners=PLAINTEXT://$HOSTNAME.{domain}:{kafka}"
if [ -n "${{KAIROS_RETRY_REDIS_URL:-}}" ]; then
  set -- "$@" --override "retry.redis.url=$KAIROS_RETRY_REDIS_URL"
fi
{rack}exec kairos serve "$@"
"#,
        kafka = l.kafka,
        controller = l.controller,
        rack = match &kc.spec.rack {
            None => String::new(),
            Some(r) => format!(
                r#"# broker.rack: the operator copies the node's {key} label into the pod annotation
# {RACK_ANNOTATION}, which the kubelet mirrors into {PODINFO_DIR}/rack.
waited=0
until [ -s {PODINFO_DIR}/rack ]; do
  if [ "$waited" -ge 600 ]; then
    echo "no {RACK_ANNOTATION} annotation after 300 s: does the node have the {key} label?" >&2
    exit 1
  fi
  waited=$((waited + 1))
  sleep 0.5
done
set -- "$@" --override "broker.rack=$(cat {PODINFO_DIR}/rack)"
"#,
                key = r.topology_key
            ),
        },
    )
}

/// FNV-1a of `bytes`, as 16 hex digits: stable across builds and platforms (the hash is stored
/// in annotations and compared by later operator versions).
fn fnv1a(bytes: impl Iterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A stable hash of the rendered config, for [`CONFIG_HASH_ANNOTATION`].
pub fn config_hash(data: &BTreeMap<String, String>) -> String {
    fnv1a(
        data.iter()
            .flat_map(|(k, v)| k.bytes().chain([0]).chain(v.bytes()).chain([0])),
    )
}

/// A stable hash of a text (a serialized object). The text is framed like a [`config_hash`]
/// entry with an empty key, so the values match what this operator has written before.
pub fn text_hash(text: &str) -> String {
    fnv1a([0].into_iter().chain(text.bytes()).chain([0]))
}

fn meta(kc: &KafkaCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: kc.namespace(),
        labels: Some(labels(kc)),
        owner_references: kc.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

pub fn config_map(kc: &KafkaCluster, voters: i32) -> ConfigMap {
    ConfigMap {
        metadata: meta(kc, names(kc).config_map),
        data: Some(BTreeMap::from([
            (
                "server.properties".to_string(),
                server_properties(kc, voters),
            ),
            ("start.sh".to_string(), start_script(kc, voters)),
        ])),
        ..Default::default()
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::Int(port)),
        // Spelled out: server-side apply on API servers before v1.20's defaulting fix needs the
        // list key (port, protocol) in every element.
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// Per-pod DNS for the quorum and for clients following Metadata answers. Not-ready pods are
/// published: a broker becomes ready only once the quorum it needs has formed.
pub fn headless_service(kc: &KafkaCluster) -> Service {
    let l = &kc.spec.listeners;
    Service {
        metadata: meta(kc, names(kc).headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(kc)),
            ports: Some(vec![
                port("kafka", l.kafka),
                port("controller", l.controller),
                port("metrics", l.metrics),
                port("admin", l.admin),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Clients' bootstrap address (ready brokers only).
pub fn bootstrap_service(kc: &KafkaCluster) -> Service {
    let l = &kc.spec.listeners;
    Service {
        metadata: meta(kc, names(kc).bootstrap),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(kc)),
            ports: Some(vec![port("kafka", l.kafka), port("admin", l.admin)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32, period_s: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(period_s),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The broker StatefulSet. `config_hash` is [`config_hash`] of the ConfigMap's data: it lands in
/// a pod annotation, so a config change is a pod template change (and a rolling restart).
pub fn stateful_set(kc: &KafkaCluster, config_hash: &str) -> StatefulSet {
    let spec = &kc.spec;
    let l = &spec.listeners;
    let n = names(kc);
    let template = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = template.labels.clone();
    pod_labels.extend(labels(kc));
    let mut annotations = template.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string());
    if spec.metrics.enabled {
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/port".into(), l.metrics.to_string());
        annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    let env = spec.redis.as_ref().map(|r| {
        vec![EnvVar {
            name: "KAIROS_RETRY_REDIS_URL".to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.secret_name.clone(),
                    key: r.url_key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let container_port = |name: &str, p: i32| ContainerPort {
        name: Some(name.to_string()),
        container_port: p,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    };
    let container = Container {
        name: "broker".to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
        ),
        command: Some(vec!["/bin/sh".into(), format!("{CONFIG_DIR}/start.sh")]),
        env,
        ports: Some(vec![
            container_port("kafka", l.kafka),
            container_port("controller", l.controller),
            container_port("metrics", l.metrics),
            container_port("admin", l.admin),
        ]),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        liveness_probe: Some(http_probe("/healthz", l.metrics, 10, 6)),
        readiness_probe: Some(http_probe("/readyz", l.metrics, 2, 3)),
        // The hook starts the controlled shutdown itself (SIGTERM to the broker, PID 1 once
        // start.sh has exec'd it) and returns only when the broker has exited, i.e. after its
        // leadership has moved away.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "kill -TERM 1; while kill -0 1 2>/dev/null; do sleep 1; done".into(),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: n.config_map.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut container = container;
    if spec.rack.is_some() {
        // The rack annotation as a file the kubelet keeps current (start.sh waits for it).
        volumes.push(Volume {
            name: "podinfo".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "rack".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{RACK_ANNOTATION}']"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: "podinfo".into(),
                mount_path: PODINFO_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
    }
    let claims = match spec.storage.type_ {
        StorageType::Ephemeral => {
            volumes.push(Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            None
        }
        StorageType::Persistent => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(selector_labels(kc)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: spec.storage.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(spec.storage.size.clone().unwrap_or_default()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    };
    let mut pod = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            affinity: template.affinity.clone(),
            tolerations: (!template.tolerations.is_empty()).then(|| template.tolerations.clone()),
            node_selector: (!template.node_selector.is_empty())
                .then(|| template.node_selector.clone()),
            // Room for a controlled shutdown (the broker allows itself 30 s).
            termination_grace_period_seconds: Some(60),
            // The image's user (docker/kairos.Dockerfile); fsGroup makes the volume writable.
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(BROKER_UID),
                run_as_group: Some(BROKER_UID),
                fs_group: Some(BROKER_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    // Hash of everything else in the pod template (config hash included).
    let hash = text_hash(&serde_json::to_string(&pod).unwrap_or_default());
    if let Some(meta) = pod.metadata.as_mut() {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(TEMPLATE_HASH_ANNOTATION.to_string(), hash);
    }
    StatefulSet {
        metadata: meta(kc, n.stateful_set),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(n.headless),
            // All pods at once: the quorum needs a majority of voters before any becomes ready.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(kc)),
                ..Default::default()
            },
            template: pod,
            volume_claim_templates: claims,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Prometheus Operator ServiceMonitor `<name>-broker` that scrapes every broker's `/metrics`
/// through the headless Service's `metrics` port (JSON: the CRD has no Rust type here).
pub fn service_monitor(kc: &KafkaCluster) -> serde_json::Value {
    let n = names(kc);
    serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(kc, n.stateful_set),
        "spec": {
            "selector": {"matchLabels": labels(kc)},
            "namespaceSelector": {"matchNames": [namespace(kc)]},
            // Only the headless Service has a `metrics` port, so the bootstrap one adds nothing.
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        }
    })
}

/// At most one broker down for voluntary disruptions (drains), as for the operator's restarts.
pub fn pod_disruption_budget(kc: &KafkaCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(kc, names(kc).stateful_set),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(kc)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::cluster::{KafkaClusterSpec, RedisRef, Storage};

    fn cluster(replicas: i32) -> KafkaCluster {
        let mut kc = KafkaCluster::new(
            "orders",
            KafkaClusterSpec {
                replicas,
                image: None,
                storage: Storage::default(),
                resources: None,
                config: BTreeMap::from([("num.partitions".into(), "6".into())]),
                listeners: Default::default(),
                rack: None,
                redis: None,
                metrics: Default::default(),
                rebalance: Default::default(),
                pod_template: None,
            },
        );
        kc.metadata.namespace = Some("shop".into());
        kc.metadata.uid = Some("0b5e1c7a-1d2e-4f00-9a4b-6c1e2f3a4b5c".into());
        kc
    }

    #[test]
    fn a_rack_key_gives_the_pod_its_rack_annotation_as_a_file_the_broker_waits_for() {
        // Proves rack awareness is wired: downward-API volume, mount, and start.sh's override.
        let mut kc = cluster(3);
        assert!(!start_script(&kc, 3).contains("broker.rack"));
        kc.spec.rack = Some(crate::crd::cluster::Rack {
            topology_key: "topology.kubernetes.io/zone".into(),
        });
        let sts = stateful_set(&kc, "h");
        let pod = sts.spec.expect("spec").template.spec.expect("pod");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "podinfo")
            .expect("podinfo volume");
        let file = &volume
            .downward_api
            .as_ref()
            .expect("downwardAPI")
            .items
            .as_ref()
            .expect("items")[0];
        assert_eq!(file.path, "rack");
        assert_eq!(
            file.field_ref.as_ref().expect("fieldRef").field_path,
            "metadata.annotations['kairos.dev/rack']"
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
        assert!(mounts
            .iter()
            .any(|m| m.name == "podinfo" && m.mount_path == PODINFO_DIR));
        let script = start_script(&kc, 3);
        assert!(
            script.contains("until [ -s /etc/kairos-pod/rack ]"),
            "{script}"
        );
        assert!(
            script.contains(r#"--override "broker.rack=$(cat /etc/kairos-pod/rack)""#),
            "{script}"
        );
        assert!(script.find("broker.rack").unwrap_or(0) < script.find("exec kairos").unwrap_or(0));
    }

    #[test]
    fn live_configs_stay_out_of_the_config_hash() {
        // Proves a throttle-rate change leaves server.properties (and so the pods) alone, and is
        // handed to the live path instead.
        let kc = cluster(3);
        let mut throttled = kc.clone();
        throttled
            .spec
            .config
            .insert("leader.replication.throttled.rate".into(), "1048576".into());
        assert_eq!(server_properties(&kc, 3), server_properties(&throttled, 3));
        assert_eq!(
            live_config(&throttled),
            BTreeMap::from([(
                "leader.replication.throttled.rate".to_string(),
                "1048576".to_string()
            )])
        );
        assert!(live_config(&kc).is_empty());
    }

    #[test]
    fn the_live_keys_are_the_brokers_dynamic_configs() {
        // Proves the operator's list is exactly what the broker changes while running.
        let broker: Vec<&str> = kairos_broker::metadata::dynamic_broker_config_names().collect();
        let mut broker = broker;
        broker.sort_unstable();
        assert_eq!(LIVE_BROKER_CONFIGS, broker.as_slice());
    }

    #[test]
    fn names_labels_and_owner_references_follow_the_cluster() {
        // Proves every owned object is named after the cluster, labelled, and owned by it.
        let kc = cluster(3);
        let sts = stateful_set(&kc, "h");
        assert_eq!(sts.metadata.name.as_deref(), Some("orders-broker"));
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("KafkaCluster", "orders", Some(true))
        );
        assert_eq!(
            sts.spec.as_ref().unwrap().service_name.as_deref(),
            Some("orders-brokers")
        );
        assert_eq!(
            headless_service(&kc).metadata.name.as_deref(),
            Some("orders-brokers")
        );
        assert_eq!(
            bootstrap_service(&kc).metadata.name.as_deref(),
            Some("orders-bootstrap")
        );
        assert_eq!(bootstrap_servers(&kc), "orders-bootstrap.shop.svc:9092");
        assert_eq!(
            selector_string(&kc),
            "app.kubernetes.io/component=broker,app.kubernetes.io/instance=orders,app.kubernetes.io/name=kairos"
        );
        let pdb = pod_disruption_budget(&kc);
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn broker_config_names_the_quorum_by_stable_pod_dns() {
        // Proves the voters are the first pods by their headless-Service names, the user's
        // config is kept, and replication defaults follow the cluster size.
        let kc = cluster(5);
        let props = server_properties(&kc, voter_count(5));
        assert!(props.contains(
            "controller.quorum.voters=0@orders-broker-0.orders-brokers.shop.svc:9093,1@orders-broker-1.orders-brokers.shop.svc:9093,2@orders-broker-2.orders-brokers.shop.svc:9093\n"
        ), "{props}");
        assert!(props.contains("num.partitions=6\n"));
        assert!(props.contains("default.replication.factor=3\n"));
        assert!(props.contains("min.insync.replicas=2\n"));
        assert!(props.contains("cluster.id=0b5e1c7a1d2e4f009a4b6c1e2f3a4b5c\n"));
        let one = server_properties(&cluster(1), voter_count(1));
        assert!(one.contains("default.replication.factor=1\n"));
        assert!(one.contains("min.insync.replicas=1\n"));
        let script = start_script(&kc, 3);
        assert!(script.contains(r#"if [ "$ordinal" -lt 3 ]; then"#));
        assert!(script
            .contains("advertised.listeners=PLAINTEXT://$HOSTNAME.orders-brokers.shop.svc:9092"));
    }

    #[test]
    fn the_pod_template_carries_probes_shutdown_hook_storage_and_config_hash() {
        // Proves the broker pod is probed on /healthz and /readyz, stops through a controlled
        // shutdown, restarts on a config change (hash annotation), and gets its storage.
        let mut kc = cluster(3);
        let data = config_map(&kc, 3).data.unwrap();
        let hash = config_hash(&data);
        let sts = stateful_set(&kc, &hash);
        let spec = sts.spec.unwrap();
        assert_eq!(
            spec.update_strategy.unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        let pod = spec.template.metadata.unwrap();
        assert_eq!(pod.annotations.unwrap()[CONFIG_HASH_ANNOTATION], hash);
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert!(c.lifecycle.as_ref().unwrap().pre_stop.is_some());
        assert!(spec.volume_claim_templates.is_none(), "ephemeral: emptyDir");

        kc.spec
            .config
            .insert("log.retention.hours".into(), "1".into());
        assert_ne!(config_hash(&config_map(&kc, 3).data.unwrap()), hash);

        kc.spec.storage = Storage {
            type_: StorageType::Persistent,
            size: Some("20Gi".into()),
            storage_class: Some("fast".into()),
        };
        kc.spec.redis = Some(RedisRef {
            secret_name: "redis".into(),
            url_key: "url".into(),
        });
        let spec = stateful_set(&kc, &hash).spec.unwrap();
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("20Gi".into())
        );
        let env = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let secret = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("redis", "url")
        );
    }

    #[test]
    fn invalid_specs_say_what_to_fix() {
        // Proves each invalid spec is refused with the field and the fix, before anything is built.
        let mut kc = cluster(0);
        assert_eq!(validate(&kc).unwrap_err().field, "spec.replicas");
        kc.spec.replicas = 3;
        assert_eq!(validate(&kc), Ok(()));
        kc.spec.config.insert("node.id".into(), "7".into());
        let e = validate(&kc).unwrap_err();
        assert!(
            e.to_string().contains("node.id is set by the operator"),
            "{e}"
        );
        kc.spec.config.remove("node.id");
        kc.spec.storage.type_ = StorageType::Persistent;
        assert_eq!(validate(&kc).unwrap_err().field, "spec.storage.size");
        kc.spec.storage.size = Some("lots".into());
        assert!(validate(&kc)
            .unwrap_err()
            .message
            .contains("not a quantity"));
        kc.spec.storage.size = Some("1.5Ti".into());
        assert_eq!(validate(&kc), Ok(()));
        kc.spec.listeners.admin = kc.spec.listeners.kafka;
        assert!(validate(&kc).unwrap_err().message.contains("used twice"));
    }

    #[test]
    fn text_hash_equals_the_config_hash_of_one_unnamed_entry() {
        // Proves hashes stored in annotations keep their values (no rewrite, no restart).
        let text = r#"{"kind":"StatefulSet"}"#;
        assert_eq!(
            text_hash(text),
            config_hash(&BTreeMap::from([(String::new(), text.to_string())]))
        );
    }

    #[test]
    fn the_quorum_is_at_most_three_voters() {
        // Proves small clusters use every broker as a voter and larger ones three.
        assert_eq!([1, 2, 3, 4, 9].map(voter_count), [1, 2, 3, 3, 3]);
    }
}
