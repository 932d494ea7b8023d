//! Fetch: reads whole batches as file regions; waits (the fetch purgatory) until `min_bytes`
//! are available or `max_wait_ms` passed, waking on every append to a fetched partition.
//!
//! Fetch sessions (KIP-227): this broker answers every request as a full fetch with session id 0,
//! which tells Java clients that sessions are not in use; incremental requests for a session id
//! that was never handed out get FETCH_SESSION_ID_NOT_FOUND.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::FetchRequest;

use super::fetch_encode::{encode, FetchResponseData, PartitionData, TopicData};
use super::{Reply, RequestContext};
use crate::partition::{codes, FetchIsolation, Partition};
use crate::replication::quota::Quota;
use crate::server::Broker;

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const UNKNOWN_TOPIC_ID: i16 = 100;
/// Upper bound on how long a fetch may wait, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    topic_index: usize,
    partition: Option<Arc<Partition>>,
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    error: i16,
    /// A follower outside the ISR fetching a partition this leader throttles (reassignment).
    throttled: bool,
}

pub async fn fetch(
    broker: &Broker,
    ctx: &RequestContext<'_>,
    req: FetchRequest,
    version: i16,
) -> Reply {
    if req.session_id != 0 {
        let resp = FetchResponseData {
            throttle_time_ms: 0,
            error_code: FETCH_SESSION_ID_NOT_FOUND,
            session_id: 0,
            topics: vec![],
        };
        return Reply::Chunks(encode(&resp, version));
    }
    let read_committed = req.isolation_level == 1;
    // A follower's fetch (replica id >= 0): reads go to the log end, and the fetch offset tells
    // the leader how far the follower's log reaches.
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let follower = replica_id >= 0;
    let now_ms = crate::partition::now_ms();
    let mut isr_candidates = false;
    let mut topics: Vec<TopicData> = Vec::with_capacity(req.topics.len());
    let mut wanted: Vec<Wanted> = Vec::new();
    for t in &req.topics {
        let info = if version >= 13 {
            broker.topics.get_by_id(t.topic_id)
        } else {
            broker.topics.get(t.topic.0.as_str())
        };
        let (name, id) = match &info {
            Some(i) => (i.name.clone(), i.id),
            None => (t.topic.0.to_string(), t.topic_id),
        };
        topics.push(TopicData {
            name: name.clone(),
            topic_id: id,
            partitions: Vec::with_capacity(t.partitions.len()),
        });
        for p in &t.partitions {
            let partition = match &info {
                Some(_) => broker.leader_replica(&name, p.partition),
                None => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
            };
            let mut error = match (&info, &partition) {
                (None, _) if version >= 13 => UNKNOWN_TOPIC_ID,
                (_, Err(code)) => *code,
                (_, Ok(part)) => part.check_current_epoch(p.current_leader_epoch),
            };
            if let (true, 0, Ok(part)) = (follower, error, &partition) {
                match part.record_follower_fetch(replica_id, p.fetch_offset, now_ms) {
                    Some(joins) => isr_candidates |= joins,
                    // Not a replica of this partition: no read past the HW for it (Kafka's
                    // answer to a fetch from a broker outside the replica set).
                    None => error = codes::NOT_LEADER_OR_FOLLOWER,
                }
            }
            let throttled = match &partition {
                Ok(part) if follower && error == 0 => {
                    broker
                        .replicas
                        .throttles
                        .leader_throttled(&name, p.partition)
                        && !part.in_isr(replica_id)
                }
                _ => false,
            };
            wanted.push(Wanted {
                throttled,
                topic_index: topics.len() - 1,
                partition: partition.ok(),
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                error,
            });
        }
    }
    if isr_candidates {
        broker.isr_wanted.notify_one();
    }
    let max_bytes = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let min_bytes = req.min_bytes.max(0) as u64;
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let started = Instant::now();
    let deadline = started + wait;
    loop {
        // Register for wake-ups before reading, so an append between the read and the wait is
        // not missed.
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = wanted
            .iter()
            .filter(|w| w.error == 0)
            .filter_map(|w| w.partition.as_ref())
            .map(|p| {
                let notify = if follower { p.appended() } else { p.hw_moved() };
                Box::pin(notify.notified())
            })
            .collect();
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        let quota = &broker.replicas.throttles.leader;
        let (results, total, any_error) =
            read_all(&wanted, max_bytes, read_committed, follower, quota);
        let now = Instant::now();
        if total >= min_bytes || any_error || now >= deadline || waits.is_empty() {
            ctx.remote_us.store(
                now.saturating_duration_since(started).as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let request_metrics = broker
                .metrics
                .request(kafka_protocol::messages::ApiKey::Fetch);
            let mut topics = std::mem::take(&mut topics);
            for (w, data) in wanted.iter().zip(results) {
                if let Some(m) = request_metrics {
                    m.error(data.error_code);
                }
                if let Some(p) = &w.partition {
                    let bytes: u64 = data.records.iter().map(|r| r.len).sum();
                    p.metrics().fetched(bytes, data.error_code != 0);
                    // Charged when sent: a long poll reads again after each wake-up.
                    if w.throttled {
                        broker.replicas.throttles.leader.record(bytes);
                    }
                }
                topics[w.topic_index].partitions.push(data);
            }
            let resp = FetchResponseData {
                throttle_time_ms: 0,
                error_code: 0,
                session_id: 0,
                topics,
            };
            return Reply::Chunks(encode(&resp, version));
        }
        drop(results);
        let _ = tokio::time::timeout(deadline - now, futures::future::select_all(waits)).await;
    }
}

fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
    follower: bool,
    leader_quota: &Quota,
) -> (Vec<PartitionData>, u64, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut total: u64 = 0;
    let mut any_error = false;
    // Kafka: while the leader quota is in debt, throttled partitions are answered without data.
    let hold_throttled = wanted.iter().any(|w| w.throttled) && leader_quota.exceeded();
    for w in wanted {
        let mut data = PartitionData {
            partition_index: w.index,
            error_code: w.error,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: read_committed.then_some(()),
            records: Vec::new(),
        };
        if let (0, Some(p)) = (w.error, &w.partition) {
            let budget = max_bytes.saturating_sub(total as usize).min(w.max_bytes);
            data.high_watermark = p.high_watermark();
            data.last_stable_offset = data.high_watermark;
            data.log_start_offset = p.log_start_offset();
            // KIP-74: partitions are filled in request order up to the response's max_bytes.
            // Until some partition has returned data, its first batch comes whole even when it
            // alone exceeds the budget (so a consumer always progresses); after that, a batch
            // that does not fit is left for a later fetch. A client sizes its receive buffer
            // from max_bytes (librdkafka drops the connection on a larger response).
            let min_one_batch = total == 0;
            if (budget > 0 || min_one_batch) && !(w.throttled && hold_throttled) {
                let isolation = if follower {
                    FetchIsolation::LogEnd
                } else {
                    FetchIsolation::HighWatermark
                };
                let read = p.fetch_records(w.fetch_offset, budget, isolation, min_one_batch);
                match read {
                    Ok(r) => {
                        total += r.bytes;
                        data.high_watermark = r.high_watermark;
                        data.last_stable_offset = r.high_watermark;
                        data.log_start_offset = r.log_start_offset;
                        data.records = r.regions;
                    }
                    Err(e) => {
                        // Kafka answers a failed partition read without offsets.
                        data.error_code = e.code;
                        data.high_watermark = -1;
                        data.last_stable_offset = -1;
                        data.log_start_offset = -1;
                    }
                }
            }
        }
        any_error |= data.error_code != 0;
        out.push(data);
    }
    (out, total, any_error)
}
