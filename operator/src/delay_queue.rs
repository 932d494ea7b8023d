//! The DelayQueue controller: one resource becomes the delay topic (`<name>.delay`, forwarding to
//! the target after `spec.delay`), the target topic, and with `retry` the retry topic
//! (`<target>.retry`) and the dead-letter topic, each with its `kairos.*` configs. The status
//! carries the topic names and the pending/overdue counts the brokers' admin API reports.

use std::collections::BTreeMap;

use kube::runtime::events::EventType;
use kube::ResourceExt;

use crate::child::{sync_failed, ClusterChild, Outcome};
use crate::cluster::desired::{self, SpecError};
use crate::context::Context;
use crate::crd::cluster::KafkaCluster;
use crate::crd::delay_queue::{DelayQueue, DelayQueueStatus};
use crate::crd::status::{Condition, Phase};
use crate::crd::topic::DeletionPolicy;
use crate::kafka::Admin;
use crate::topic::{sync, DesiredTopic};

pub const FINALIZER: &str = "kairos.dev/delayqueue";

/// The broker's gRPC admin API (client side).
pub mod admin_api {
    tonic::include_proto!("kairos.admin.v1");
}

/// A Go duration (`30m`, `1h30m`, `1.5h`, `1500ms`, `10s`) in whole milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 30m, 1h30m, 10s or 1500ms");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(0);
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_ns += value * scale;
        rest = &rest[unit_len..];
    }
    let ms = (total_ns / 1e6).round();
    if !ms.is_finite() || ms > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(ms as u64)
}

/// The topics of a DelayQueue, as (role, topic): `delay`, `target`, then with retries `retry`
/// and `deadLetter`.
pub fn topics(dq: &DelayQueue) -> Result<Vec<(&'static str, DesiredTopic)>, SpecError> {
    let spec = &dq.spec;
    let delay_ms = parse_duration(&spec.delay).map_err(|message| SpecError {
        field: "spec.delay".into(),
        message,
    })?;
    let topic = |name: String, configs: BTreeMap<String, String>| DesiredTopic {
        name,
        partitions: spec.partitions,
        replicas: spec.replicas,
        configs,
    };
    let target = spec.target_topic.clone();
    let dlq = spec
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{target}.dlq"));
    let mut out = vec![
        (
            "delay",
            topic(
                format!("{}.delay", dq.name_any()),
                BTreeMap::from([
                    ("kairos.delay.target".to_string(), target.clone()),
                    ("kairos.delay.ms".to_string(), delay_ms.to_string()),
                ]),
            ),
        ),
        ("target", topic(target.clone(), BTreeMap::new())),
    ];
    if let Some(retry) = &spec.retry {
        let mut backoff = Vec::new();
        for (i, b) in retry.backoff.iter().enumerate() {
            backoff.push(
                parse_duration(b)
                    .map_err(|message| SpecError {
                        field: format!("spec.retry.backoff[{i}]"),
                        message,
                    })?
                    .to_string(),
            );
        }
        if backoff.is_empty() {
            return Err(SpecError {
                field: "spec.retry.backoff".into(),
                message: "needs at least one wait, e.g. [\"10s\", \"1m\"]".into(),
            });
        }
        if retry.max_attempts < 1 {
            return Err(SpecError {
                field: "spec.retry.maxAttempts".into(),
                message: format!("must be at least 1, got {}", retry.max_attempts),
            });
        }
        out.push((
            "retry",
            topic(
                format!("{target}.retry"),
                BTreeMap::from([
                    ("kairos.retry.target".to_string(), target.clone()),
                    ("kairos.retry.backoff.ms".to_string(), backoff.join(",")),
                    (
                        "kairos.retry.max.attempts".to_string(),
                        retry.max_attempts.to_string(),
                    ),
                    ("kairos.dlq.topic".to_string(), dlq.clone()),
                ]),
            ),
        ));
    }
    if spec.retry.is_some() || spec.dead_letter_topic.is_some() {
        out.push(("deadLetter", topic(dlq, BTreeMap::new())));
    }
    if spec.partitions < 1 {
        return Err(SpecError {
            field: "spec.partitions".into(),
            message: format!("must be at least 1, got {}", spec.partitions),
        });
    }
    Ok(out)
}

/// The CEL rule newer API servers enforce: the target topic never changes.
fn retargeted(dq: &DelayQueue) -> Option<Phase> {
    let was = dq.status.as_ref()?.target_topic.as_ref()?;
    let now = &dq.spec.target_topic;
    (was != now).then(|| Phase::Stalled {
        reason: "TargetTopicImmutable".into(),
        message: format!(
            "spec.targetTopic: this queue forwards to {was:?} and its target cannot change; set targetTopic back to {was:?}, or create another DelayQueue for {now:?}"
        ),
    })
}

fn invalid(e: SpecError) -> Phase {
    Phase::Stalled {
        reason: "InvalidSpec".into(),
        message: e.to_string(),
    }
}

impl ClusterChild for DelayQueue {
    type Status = DelayQueueStatus;
    const FINALIZER: &'static str = FINALIZER;

    fn cluster_ref(&self) -> &str {
        &self.spec.cluster_ref
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    fn status(&self) -> Option<&DelayQueueStatus> {
        self.status.as_ref()
    }

    fn conditions(status: &DelayQueueStatus) -> &[Condition] {
        &status.conditions
    }

    fn set_conditions(status: &mut DelayQueueStatus, generation: Option<i64>, c: Vec<Condition>) {
        status.observed_generation = generation;
        status.conditions = c;
    }

    fn carried_status(&self) -> DelayQueueStatus {
        self.status.clone().unwrap_or_default()
    }

    fn check(&self) -> Option<Phase> {
        retargeted(self).or_else(|| topics(self).err().map(invalid))
    }

    async fn sync(
        &self,
        ctx: &Context,
        kc: &KafkaCluster,
        status: &mut DelayQueueStatus,
    ) -> Outcome {
        match topics(self) {
            Ok(wanted) => sync_all(self, ctx, kc, &wanted, status).await,
            // check() refused it already.
            Err(e) => Outcome::Done(invalid(e)),
        }
    }

    fn managed_topics(&self) -> Vec<String> {
        let s = self.status.clone().unwrap_or_default();
        [
            s.delay_topic,
            s.retry_topic,
            s.dead_letter_topic,
            s.target_topic,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Syncs every topic of the queue, then reads its pending counts.
async fn sync_all(
    dq: &DelayQueue,
    ctx: &Context,
    kc: &KafkaCluster,
    wanted: &[(&'static str, DesiredTopic)],
    status: &mut DelayQueueStatus,
) -> Outcome {
    let mut admin = match Admin::connect(&desired::bootstrap_servers(kc), &ctx.resolver).await {
        Ok(a) => a,
        Err(e) => return sync_failed("the queue's cluster", e.into()),
    };
    let mut changes = Vec::new();
    for (role, want) in wanted {
        match sync(&mut admin, want).await {
            Ok(synced) => {
                if synced.created {
                    changes.push(format!("created {role} topic {}", want.name));
                }
                changes.extend(synced.changes.iter().map(|c| format!("{}: {c}", want.name)));
            }
            Err(e) => return sync_failed(&format!("topic {}", want.name), e),
        }
        let name = Some(want.name.clone());
        match *role {
            "delay" => status.delay_topic = name,
            "target" => status.target_topic = name,
            "retry" => status.retry_topic = name,
            _ => status.dead_letter_topic = name,
        }
    }
    if !changes.is_empty() {
        ctx.event(dq, EventType::Normal, "Applied", changes.join("; "))
            .await;
    }
    let Some(delay_topic) = wanted.first().map(|(_, t)| t.name.clone()) else {
        return Outcome::Done(Phase::Ready);
    };
    match pending(kc, ctx, &mut admin, &delay_topic).await {
        Ok(s) => {
            status.pending = Some(s.pending as i64);
            status.overdue = Some(s.overdue as i64);
            if s.blocked.is_empty() {
                Outcome::Done(Phase::Ready)
            } else {
                Outcome::Done(Phase::Reconciling {
                    reason: "DeliveryBlocked".into(),
                    message: s.blocked.join("; "),
                })
            }
        }
        // The topics are in place; only the counts are missing.
        Err(message) => Outcome::Done(Phase::Reconciling {
            reason: "StatsUnavailable".into(),
            message: format!("pending counts from the brokers' admin API: {message}"),
        }),
    }
}

/// Pending and overdue records of a delay topic, summed over its partitions.
#[derive(Debug, Default)]
struct Pending {
    pending: u64,
    overdue: u64,
    blocked: Vec<String>,
}

/// Asks each partition's leader (its pod's admin API) for the partitions it leads, and sums.
async fn pending(
    kc: &KafkaCluster,
    ctx: &Context,
    admin: &mut Admin,
    topic: &str,
) -> Result<Pending, String> {
    let md = admin
        .metadata(Some(&[topic]))
        .await
        .map_err(|e| e.to_string())?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for t in md.topics.iter().filter(|t| t.error_code == 0) {
        for p in &t.partitions {
            if p.leader_id.0 < 0 {
                return Err(format!(
                    "partition {topic}-{} has no leader",
                    p.partition_index
                ));
            }
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
    }
    if by_leader.is_empty() {
        return Err(format!("the brokers list no partitions of {topic}"));
    }
    let mut sum = Pending::default();
    for (leader, partitions) in by_leader {
        let resolved = ctx
            .resolver
            .resolve(&desired::pod_admin_address(kc, leader));
        let addr = resolved.split(',').next().unwrap_or_default().to_string();
        let s = stats(&addr, topic, partitions)
            .await
            .map_err(|e| format!("broker {leader} at {addr}: {e}"))?;
        sum.pending += s.pending;
        sum.overdue += s.overdue;
        if !s.blocked_reason.is_empty() {
            sum.blocked.push(s.blocked_reason);
        }
    }
    Ok(sum)
}

async fn stats(
    addr: &str,
    topic: &str,
    partitions: Vec<i32>,
) -> Result<admin_api::StatsResponse, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = admin_api::delay_admin_client::DelayAdminClient::new(channel);
    client
        .stats(admin_api::StatsRequest {
            topic: topic.to_string(),
            partitions,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::delay_queue::{DelayQueueSpec, Retry};

    #[test]
    fn go_durations_parse_to_milliseconds_and_nonsense_is_refused() {
        // Proves the duration strings users write map to the broker's millisecond configs.
        for (s, ms) in [
            ("30m", 1_800_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("1500ms", 1500),
            ("10s", 10_000),
            ("0", 0),
            ("2h45m30s", 9_930_000),
        ] {
            assert_eq!(parse_duration(s), Ok(ms), "{s}");
        }
        for s in ["", "soon", "30", "5 minutes", "-1s", "1d", "m"] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("is not a duration"), "{s}: {e}");
        }
    }

    #[test]
    fn a_queue_becomes_delay_target_retry_and_dead_letter_topics() {
        // Proves each topic's name and kairos.* configs, as the broker reads them.
        let mut dq = DelayQueue::new(
            "order-cancel",
            DelayQueueSpec {
                cluster_ref: "kairos".into(),
                delay: "30m".into(),
                target_topic: "orders.cancel".into(),
                partitions: 3,
                replicas: Some(3),
                retry: Some(Retry {
                    backoff: vec!["10s".into(), "1m".into(), "10m".into()],
                    max_attempts: 5,
                }),
                dead_letter_topic: None,
                deletion_policy: DeletionPolicy::Retain,
            },
        );
        let t = topics(&dq).expect("valid");
        let names: Vec<_> = t.iter().map(|(r, t)| (*r, t.name.as_str())).collect();
        assert_eq!(
            names,
            [
                ("delay", "order-cancel.delay"),
                ("target", "orders.cancel"),
                ("retry", "orders.cancel.retry"),
                ("deadLetter", "orders.cancel.dlq"),
            ]
        );
        assert_eq!(t[0].1.configs["kairos.delay.ms"], "1800000");
        assert_eq!(t[0].1.configs["kairos.delay.target"], "orders.cancel");
        assert_eq!(
            t[2].1.configs["kairos.retry.backoff.ms"],
            "10000,60000,600000"
        );
        assert_eq!(t[2].1.configs["kairos.retry.max.attempts"], "5");
        assert_eq!(t[2].1.configs["kairos.dlq.topic"], "orders.cancel.dlq");
        assert!(t
            .iter()
            .all(|(_, t)| t.partitions == 3 && t.replicas == Some(3)));

        dq.spec.retry = None;
        assert_eq!(
            topics(&dq).expect("valid").len(),
            2,
            "no retry: no retry or DLQ topic"
        );
        dq.spec.delay = "soon".into();
        let e = topics(&dq).unwrap_err();
        assert_eq!(e.field, "spec.delay");
    }
}
