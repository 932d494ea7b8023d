//! The gRPC admin API (`kairos.admin.v1`, tonic) on `admin.listener`.
pub mod v1 {
    tonic::include_proto!("kairos.admin.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/kairos_admin_v1_descriptor.bin"));
}

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use v1::cancel_request::Target;
use v1::cancel_response::Outcome;
use v1::delay_admin_client::DelayAdminClient;
use v1::delay_admin_server::{DelayAdmin, DelayAdminServer};

use crate::metadata::{DELAY_TARGET, NO_LEADER, RETRY_TARGET};
use crate::server::Broker;
use crate::time::delay::{CancelOutcome, DelayPartition};

/// Largest page ListPending returns.
const PAGE_SIZE_MAX: u32 = 1000;
const PAGE_SIZE_DEFAULT: u32 = 100;
/// Partitions answered by one broker: its admin address (None: this broker) and their numbers.
type Group = (Option<String>, Vec<i32>);

/// Connect and answer time of a request forwarded to another broker.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    /// The partition count of `topic`, a delay or retry topic, or a clear status.
    fn delay_partition_count(&self, topic: &str) -> Result<i32, Status> {
        let Some(info) = self.broker.topics.get(topic) else {
            return Err(Status::not_found(format!("topic {topic} does not exist")));
        };
        if !info.configs.contains_key(DELAY_TARGET) && !info.configs.contains_key(RETRY_TARGET) {
            return Err(Status::failed_precondition(format!(
                "topic {topic} is not a delay topic or retry topic (it has no {DELAY_TARGET} or {RETRY_TARGET})"
            )));
        }
        Ok(info.partitions)
    }

    /// The delay partitions `only` of `topic`, each hosted here.
    fn delay_partitions(
        &self,
        topic: &str,
        only: &[i32],
    ) -> Result<Vec<Arc<DelayPartition>>, Status> {
        let count = self.delay_partition_count(topic)?;
        let hosted = self.broker.delays.topic(topic);
        let mut parts = Vec::with_capacity(only.len());
        for p in only {
            if !(0..count).contains(p) {
                return Err(Status::invalid_argument(format!(
                    "topic {topic} has no partition {p} (it has {count})"
                )));
            }
            match hosted.iter().find(|d| d.partition == *p) {
                Some(d) => parts.push(d.clone()),
                None => {
                    return Err(Status::unavailable(format!(
                        "partition {topic}-{p} is not hosted on broker {} (or is still loading); ask its leader",
                        self.broker.config.node_id
                    )))
                }
            }
        }
        Ok(parts)
    }
}

/// Blocking engine work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("admin task failed: {e}")))
}

impl AdminService {
    /// Cancel on the partitions `req.partitions`, led here.
    async fn cancel_here(&self, req: v1::CancelRequest) -> Result<v1::CancelResponse, Status> {
        let parts = self.delay_partitions(&req.topic, &req.partitions)?;
        let broker = self.broker.clone();
        let topic = req.topic.clone();
        let outcome = match req.target {
            None => return Err(no_target()),
            Some(Target::Record(r)) => {
                let Some(part) = parts.into_iter().find(|p| p.partition == r.partition) else {
                    return Err(Status::not_found(format!(
                        "topic {topic} has no partition {}",
                        r.partition
                    )));
                };
                let Some(log) = broker.replicas.get(&topic, r.partition) else {
                    return Err(Status::unavailable("partition not loaded"));
                };
                blocking(move || part.cancel_offset(&log, r.offset)).await?
            }
            Some(Target::Key(key)) => {
                blocking(move || {
                    let mut total = 0usize;
                    for part in parts {
                        let Some(log) = broker.replicas.get(&topic, part.partition) else {
                            continue;
                        };
                        if let CancelOutcome::Cancelled(n) = part.cancel_key(&log, &key)? {
                            total += n;
                        }
                    }
                    Ok::<_, String>(if total > 0 {
                        CancelOutcome::Cancelled(total)
                    } else {
                        CancelOutcome::NotFound
                    })
                })
                .await?
            }
        }
        .map_err(|e| Status::internal(format!("cancel failed: {e}")))?;
        Ok(cancel_response(outcome))
    }

    /// ListPending on the partitions `req.partitions`, led here.
    async fn list_here(
        &self,
        req: v1::ListPendingRequest,
    ) -> Result<v1::ListPendingResponse, Status> {
        let parts = self.delay_partitions(&req.topic, &req.partitions)?;
        let page_size = page_size(req.page_size);
        // Page token: "due:partition:offset" of the last record returned.
        let after = if req.page_token.is_empty() {
            None
        } else {
            let mut it = req.page_token.split(':').map(str::parse::<i64>);
            match (it.next(), it.next(), it.next()) {
                (Some(Ok(d)), Some(Ok(p)), Some(Ok(o))) => Some((d, p as i32, o)),
                _ => return Err(Status::invalid_argument("malformed page_token")),
            }
        };
        let from = req.due_from_ms.unwrap_or(i64::MIN);
        let to = req.due_to_ms.unwrap_or(i64::MAX);
        if from > to {
            return Err(Status::invalid_argument("due_from_ms is after due_to_ms"));
        }
        let key = req.key.clone();
        let broker = self.broker.clone();
        let topic = req.topic.clone();
        // Each partition contributes its first entries from the token's due time on; merged,
        // the page is exact unless more than `per_partition` records share one due time.
        let per_partition = page_size * 2 + 100;
        let from_due = after.map(|(d, _, _)| from.max(d)).unwrap_or(from);
        let listed = blocking(move || {
            let mut all: Vec<(i64, i32, i64)> = Vec::new();
            for p in &parts {
                let Some(log) = broker.replicas.get(&topic, p.partition) else {
                    continue;
                };
                for (offset, due, _) in p.list(&log, key.as_deref(), from_due, to, per_partition)? {
                    all.push((due, p.partition, offset));
                }
            }
            all.sort_unstable();
            let start = match after {
                None => 0,
                Some(t) => all.partition_point(|r| *r <= t),
            };
            let more = all.len() > start + page_size;
            let page: Vec<(i64, i32, i64)> = all[start..].iter().take(page_size).copied().collect();
            // Keys come from the log (the index keeps only their hashes).
            let mut with_keys = Vec::with_capacity(page.len());
            for p in &parts {
                let mut offsets: Vec<i64> = page
                    .iter()
                    .filter(|r| r.1 == p.partition)
                    .map(|r| r.2)
                    .collect();
                if offsets.is_empty() {
                    continue;
                }
                offsets.sort_unstable();
                let Some(log) = broker.replicas.get(&topic, p.partition) else {
                    continue;
                };
                let keys = DelayPartition::keys(&log, &offsets)?;
                for r in page.iter().filter(|r| r.1 == p.partition) {
                    let k = keys.get(&r.2).cloned().flatten();
                    // The index matched by key hash: drop the (astronomically rare) collisions.
                    if key
                        .as_deref()
                        .is_some_and(|want| k.as_deref() != Some(want))
                    {
                        continue;
                    }
                    with_keys.push((r.0, r.1, r.2, k));
                }
            }
            with_keys.sort_unstable_by_key(|r| (r.0, r.1, r.2));
            Ok::<_, String>((with_keys, more))
        })
        .await?
        .map_err(|e| Status::internal(format!("listing failed: {e}")))?;
        let (page, more) = listed;
        let next_page_token = match (page.last(), more) {
            (Some((d, p, o, _)), true) => format!("{d}:{p}:{o}"),
            _ => String::new(),
        };
        let records = page
            .into_iter()
            .map(|(due, partition, offset, key)| v1::PendingRecord {
                partition,
                offset,
                due_ms: due,
                key: key.map(|k| k.to_vec()),
            })
            .collect();
        Ok(v1::ListPendingResponse {
            records,
            next_page_token,
        })
    }

    /// Stats of the partitions `req.partitions`, led here.
    async fn stats_here(&self, req: v1::StatsRequest) -> Result<v1::StatsResponse, Status> {
        let parts = self.delay_partitions(&req.topic, &req.partitions)?;
        let now = crate::partition::now_ms();
        let mut resp = v1::StatsResponse {
            topic: req.topic.clone(),
            ..Default::default()
        };
        let mut blocked = Vec::new();
        for p in parts {
            if let Some(partition) = self.broker.replicas.get(&p.topic, p.partition) {
                let dp = p.clone();
                blocking(move || dp.recount_far(&partition))
                    .await?
                    .map_err(Status::internal)?;
            }
            let s = p.stats(now);
            resp.pending += s.pending;
            resp.overdue += s.overdue;
            resp.oldest_overdue_ms = resp.oldest_overdue_ms.max(s.oldest_overdue_ms);
            resp.due_within_1m += s.within_1m;
            resp.due_within_1h += s.within_1h;
            resp.due_within_1d += s.within_1d;
            resp.due_later += s.later;
            resp.forwarded += p.forwarded.load(std::sync::atomic::Ordering::Relaxed);
            resp.cancelled += p.cancelled.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(b) = p.blocked.lock().clone() {
                blocked.push(format!("partition {}: {b}", p.partition));
            }
            let r = p.retry.lock();
            resp.retry |= r.is_retry;
            resp.dead_lettered += r.dead_lettered;
        }
        resp.blocked_reason = blocked.join("; ");
        Ok(resp)
    }

    /// Who answers for `partitions` of `topic` (all when None): each group of partitions with
    /// the admin address of the broker leading them (None: this broker).
    fn fan_out(&self, topic: &str, partitions: Option<Vec<i32>>) -> Result<Vec<Group>, Status> {
        let count = self.delay_partition_count(topic)?;
        let wanted = partitions.unwrap_or_else(|| (0..count).collect());
        if let Some(p) = wanted.iter().find(|p| !(0..count).contains(*p)) {
            return Err(Status::not_found(format!(
                "topic {topic} has no partition {p}"
            )));
        }
        let hosted: Vec<i32> = self
            .broker
            .delays
            .topic(topic)
            .iter()
            .map(|d| d.partition)
            .collect();
        let image = self.broker.topics.image();
        let me = self.broker.node_id();
        let mut groups: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
        for p in wanted {
            if hosted.contains(&p) {
                groups.entry(None).or_default().push(p);
                continue;
            }
            let leader = image
                .topics
                .get(topic)
                .and_then(|t| t.assignment.get(p as usize))
                .map_or(NO_LEADER, |a| a.leader);
            if leader == me {
                return Err(Status::unavailable(format!(
                    "delay partition {topic}-{p} is still loading; retry shortly"
                )));
            }
            let Some(b) = image.brokers.get(&leader).filter(|b| !b.fenced) else {
                return Err(Status::unavailable(format!(
                    "partition {topic}-{p} has no leader now; retry shortly"
                )));
            };
            let Some(port) = b.admin_port else {
                return Err(Status::unavailable(format!(
                    "broker {leader} leads {topic}-{p} but did not register its admin.listener port; ask it directly"
                )));
            };
            let addr = format!("http://{}", crate::config::host_port(&b.host, port));
            groups.entry(Some(addr)).or_default().push(p);
        }
        Ok(groups.into_iter().collect())
    }

    /// The answers to `req` for every group of partitions: asked here (`here`) or of the
    /// group's leader (`there`), each with the group's partition list, so a forwarded request is
    /// never forwarded again.
    async fn gather<R, A, HF, PF>(
        &self,
        groups: Vec<Group>,
        req: &R,
        with_partitions: impl Fn(&R, Vec<i32>) -> R,
        here: impl Fn(R) -> HF,
        there: impl Fn(DelayAdminClient<tonic::transport::Channel>, R) -> PF,
    ) -> Result<Vec<A>, Status>
    where
        HF: std::future::Future<Output = Result<A, Status>>,
        PF: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        let mut answers = Vec::with_capacity(groups.len());
        for (addr, partitions) in groups {
            let sub = with_partitions(req, partitions);
            answers.push(match addr {
                None => here(sub).await?,
                Some(addr) => there(peer(&addr).await?, sub).await?.into_inner(),
            });
        }
        Ok(answers)
    }
}

/// A client of the admin API at `addr` (another broker's), for forwarded requests.
async fn peer(addr: &str) -> Result<DelayAdminClient<tonic::transport::Channel>, Status> {
    let unreachable = |e: tonic::transport::Error| {
        Status::unavailable(format!(
            "forwarding to the partition leader's admin API at {addr}: {e}"
        ))
    };
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .map_err(unreachable)?
        .connect_timeout(FORWARD_TIMEOUT)
        .timeout(FORWARD_TIMEOUT)
        .connect()
        .await
        .map_err(unreachable)?;
    Ok(DelayAdminClient::new(channel))
}

fn no_target() -> Status {
    Status::invalid_argument("give a key or a record (partition, offset) to cancel")
}

fn page_size(asked: u32) -> usize {
    let n = match asked {
        0 => PAGE_SIZE_DEFAULT,
        n => n.min(PAGE_SIZE_MAX),
    };
    n as usize
}

fn cancel_response(outcome: CancelOutcome) -> v1::CancelResponse {
    match outcome {
        CancelOutcome::Cancelled(n) => v1::CancelResponse {
            outcome: Outcome::Cancelled as i32,
            cancelled: n as u32,
            message: format!("cancelled {n} pending record(s)"),
        },
        CancelOutcome::AlreadyDelivered => v1::CancelResponse {
            outcome: Outcome::AlreadyDelivered as i32,
            cancelled: 0,
            message: "already delivered: the record was forwarded to the target".into(),
        },
        CancelOutcome::NotFound => v1::CancelResponse {
            outcome: Outcome::NotFound as i32,
            cancelled: 0,
            message:
                "nothing pending matched (never produced, already cancelled, or already delivered)"
                    .into(),
        },
    }
}

/// The answer of the brokers asked, as one: cancelled counts add up.
fn merge_cancel(answers: Vec<v1::CancelResponse>) -> v1::CancelResponse {
    let n: u32 = answers.iter().map(|a| a.cancelled).sum();
    let outcome = if n > 0 {
        CancelOutcome::Cancelled(n as usize)
    } else if answers
        .iter()
        .any(|a| a.outcome == Outcome::AlreadyDelivered as i32)
    {
        CancelOutcome::AlreadyDelivered
    } else {
        CancelOutcome::NotFound
    };
    cancel_response(outcome)
}

/// The first `page_size` records of all answers in due order; each answer holds the first
/// records of its partitions after the same token, so the merged page is exact.
fn merge_pending(
    answers: Vec<v1::ListPendingResponse>,
    page_size: usize,
) -> v1::ListPendingResponse {
    let mut more = answers.iter().any(|a| !a.next_page_token.is_empty());
    let mut records: Vec<v1::PendingRecord> = answers.into_iter().flat_map(|a| a.records).collect();
    records.sort_by_key(|r| (r.due_ms, r.partition, r.offset));
    more |= records.len() > page_size;
    records.truncate(page_size);
    let next_page_token = match (records.last(), more) {
        (Some(r), true) => format!("{}:{}:{}", r.due_ms, r.partition, r.offset),
        _ => String::new(),
    };
    v1::ListPendingResponse {
        records,
        next_page_token,
    }
}

fn merge_stats(topic: String, answers: Vec<v1::StatsResponse>) -> v1::StatsResponse {
    let mut total = v1::StatsResponse {
        topic,
        ..Default::default()
    };
    let mut blocked = Vec::new();
    for a in answers {
        total.pending += a.pending;
        total.overdue += a.overdue;
        total.oldest_overdue_ms = total.oldest_overdue_ms.max(a.oldest_overdue_ms);
        total.due_within_1m += a.due_within_1m;
        total.due_within_1h += a.due_within_1h;
        total.due_within_1d += a.due_within_1d;
        total.due_later += a.due_later;
        total.forwarded += a.forwarded;
        total.cancelled += a.cancelled;
        total.retry |= a.retry;
        total.dead_lettered += a.dead_lettered;
        if !a.blocked_reason.is_empty() {
            blocked.push(a.blocked_reason);
        }
    }
    total.blocked_reason = blocked.join("; ");
    total
}

/// Requests without a partition list are answered for the whole topic: the partitions led here
/// locally, the others by their leaders' admin APIs ([`AdminService::gather`]).
#[tonic::async_trait]
impl DelayAdmin for AdminService {
    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::CancelResponse>, Status> {
        let req = request.into_inner();
        if !req.partitions.is_empty() {
            return Ok(Response::new(self.cancel_here(req).await?));
        }
        let only = match &req.target {
            None => return Err(no_target()),
            Some(Target::Record(r)) => Some(vec![r.partition]),
            Some(Target::Key(_)) => None,
        };
        let groups = self.fan_out(&req.topic, only)?;
        let answers = self
            .gather(
                groups,
                &req,
                |r, partitions| v1::CancelRequest {
                    partitions,
                    ..r.clone()
                },
                |sub| self.cancel_here(sub),
                |mut c, sub| async move { c.cancel(sub).await },
            )
            .await?;
        Ok(Response::new(merge_cancel(answers)))
    }

    async fn list_pending(
        &self,
        request: Request<v1::ListPendingRequest>,
    ) -> Result<Response<v1::ListPendingResponse>, Status> {
        let req = request.into_inner();
        if !req.partitions.is_empty() {
            return Ok(Response::new(self.list_here(req).await?));
        }
        let groups = self.fan_out(&req.topic, None)?;
        let answers = self
            .gather(
                groups,
                &req,
                |r, partitions| v1::ListPendingRequest {
                    partitions,
                    ..r.clone()
                },
                |sub| self.list_here(sub),
                |mut c, sub| async move { c.list_pending(sub).await },
            )
            .await?;
        Ok(Response::new(merge_pending(
            answers,
            page_size(req.page_size),
        )))
    }

    async fn stats(
        &self,
        request: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsResponse>, Status> {
        let req = request.into_inner();
        if !req.partitions.is_empty() {
            return Ok(Response::new(self.stats_here(req).await?));
        }
        let groups = self.fan_out(&req.topic, None)?;
        let answers = self
            .gather(
                groups,
                &req,
                |r, partitions| v1::StatsRequest {
                    partitions,
                    ..r.clone()
                },
                |sub| self.stats_here(sub),
                |mut c, sub| async move { c.stats(sub).await },
            )
            .await?;
        Ok(Response::new(merge_stats(req.topic, answers)))
    }
}

#[tonic::async_trait]
impl v1::dlq_admin_server::DlqAdmin for AdminService {
    async fn redrive(
        &self,
        request: Request<v1::RedriveRequest>,
    ) -> Result<Response<v1::RedriveResponse>, Status> {
        let req = request.into_inner();
        if req.dlq_topic.is_empty() {
            return Err(Status::invalid_argument("dlq_topic is required"));
        }
        let r = crate::time::dlq::RedriveRequest {
            dlq_topic: req.dlq_topic,
            key: req.key,
            from_ms: req.from_ms.unwrap_or(i64::MIN),
            to_ms: req.to_ms.unwrap_or(i64::MAX),
            to_topic: (!req.to_topic.is_empty()).then_some(req.to_topic),
            dry_run: req.dry_run,
        };
        let report = crate::time::dlq::redrive(&self.broker, &r)
            .await
            .map_err(|e| {
                if e.contains("does not exist") {
                    Status::not_found(e)
                } else {
                    Status::internal(e)
                }
            })?;
        Ok(Response::new(v1::RedriveResponse {
            matched: report.matched,
            redriven: report.redriven,
            skipped: report.skipped,
            problems: report.problems,
        }))
    }
}

/// Serves the admin API with gRPC health and reflection until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<DelayAdminServer<AdminService>>()
        .await;
    reporter
        .set_serving::<v1::dlq_admin_server::DlqAdminServer<AdminService>>()
        .await;
    let reflection = match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("gRPC reflection unavailable: {e}");
            return;
        }
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(DelayAdminServer::new(AdminService {
            broker: broker.clone(),
        }))
        .add_service(v1::dlq_admin_server::DlqAdminServer::new(AdminService {
            broker,
        }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        tracing::warn!("admin listener stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(due_ms: i64, partition: i32, offset: i64) -> v1::PendingRecord {
        v1::PendingRecord {
            partition,
            offset,
            due_ms,
            key: None,
        }
    }

    #[test]
    fn forwarded_pages_merge_in_due_order_with_a_token_when_more_remain() {
        // Two leaders answer the same page (size 3) for their partitions.
        let a = v1::ListPendingResponse {
            records: vec![rec(10, 0, 5), rec(30, 0, 6), rec(50, 0, 7)],
            next_page_token: "50:0:7".into(),
        };
        let b = v1::ListPendingResponse {
            records: vec![rec(20, 1, 1), rec(30, 1, 0)],
            next_page_token: String::new(),
        };
        let page = merge_pending(vec![a, b], 3);
        let got: Vec<(i64, i32, i64)> = page
            .records
            .iter()
            .map(|r| (r.due_ms, r.partition, r.offset))
            .collect();
        assert_eq!(got, [(10, 0, 5), (20, 1, 1), (30, 0, 6)]);
        assert_eq!(page.next_page_token, "30:0:6");
        // Everything fits and nobody has more: no token.
        let c = v1::ListPendingResponse {
            records: vec![rec(1, 2, 0)],
            next_page_token: String::new(),
        };
        assert_eq!(merge_pending(vec![c], 3).next_page_token, "");
    }

    #[test]
    fn forwarded_cancels_add_up() {
        let not_found = cancel_response(CancelOutcome::NotFound);
        let two = cancel_response(CancelOutcome::Cancelled(2));
        let merged = merge_cancel(vec![
            not_found.clone(),
            two,
            cancel_response(CancelOutcome::Cancelled(1)),
        ]);
        assert_eq!(merged.outcome, Outcome::Cancelled as i32);
        assert_eq!(merged.cancelled, 3);
        let late = merge_cancel(vec![
            not_found.clone(),
            cancel_response(CancelOutcome::AlreadyDelivered),
        ]);
        assert_eq!(late.outcome, Outcome::AlreadyDelivered as i32);
        assert_eq!(
            merge_cancel(vec![not_found]).outcome,
            Outcome::NotFound as i32
        );
    }
}
