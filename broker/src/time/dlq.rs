//! Dead-letter topics: redrive records back to where they failed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record;

use super::delay::{decode_from, read_from, LogRecord};
use super::deliver::{Deliverer, Stamper};
use super::headers;
use super::murmur2::partition_for;
use crate::partition::codes::OFFSET_OUT_OF_RANGE;
use crate::partition::now_ms;
use crate::replication::client::{Connection, FETCH_VERSION};
use crate::server::Broker;

/// Records per append to a destination partition.
const REDRIVE_BATCH_RECORDS_MAX: usize = 1_000;
/// Sends of one batch before its destination is reported as a problem.
const REDRIVE_ATTEMPTS: usize = 3;
const FETCH_BYTES_MAX: i32 = 4 * 1024 * 1024;

/// Which dead-letter records to redrive, and where.
pub struct RedriveRequest {
    pub dlq_topic: String,
    pub key: Option<Vec<u8>>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Instead of each record's `kairos.dlq.source.topic`.
    pub to_topic: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Default, PartialEq)]
pub struct RedriveReport {
    pub matched: u64,
    pub redriven: u64,
    pub skipped: u64,
    pub problems: Vec<String>,
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a [u8]> {
    r.headers.get(name.as_bytes()).and_then(|v| v.as_deref())
}

/// The record as it goes back: dead-letter and retry bookkeeping headers removed (the attempt
/// count starts again), the first failure's coordinates kept.
fn reset(mut r: Record) -> Record {
    r.headers.retain(|k, _| {
        let k = k.as_str();
        !(k.starts_with("kairos.dlq.") || k == headers::RETRY_ATTEMPT || k == headers::RETRY_REASON)
    });
    r
}

/// Redrives what `req` selects, from any broker: dead-letter partitions hosted here are read in
/// place, the others from their leaders (Fetch); records go back to their destinations'
/// leaders wherever they are, as idempotent batches with acks=all (`deliver::Deliverer`), so a
/// batch retried after a timeout is not appended twice.
pub async fn redrive(broker: &Arc<Broker>, req: &RedriveRequest) -> Result<RedriveReport, String> {
    let Some(info) = broker.topics.get(&req.dlq_topic) else {
        return Err(format!("topic {} does not exist", req.dlq_topic));
    };
    let mut report = RedriveReport::default();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    // destination topic → partition → records
    let mut out: BTreeMap<String, BTreeMap<i32, Vec<Record>>> = BTreeMap::new();
    for p in 0..info.partitions {
        // Selected and routed as read: only what goes back is held.
        let mut select = |r: Record| {
            if req
                .key
                .as_deref()
                .is_some_and(|k| r.key.as_deref() != Some(k))
            {
                return;
            }
            if r.timestamp < req.from_ms || r.timestamp >= req.to_ms {
                return;
            }
            report.matched += 1;
            let dest = match &req.to_topic {
                Some(t) => Some(t.clone()),
                None => header(&r, headers::DLQ_SOURCE_TOPIC)
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            };
            let Some(dest) = dest else {
                report.skipped += 1;
                missing.insert(format!(
                    "{}-{p} offset {}: no {} header and no destination given",
                    req.dlq_topic,
                    r.offset,
                    headers::DLQ_SOURCE_TOPIC
                ));
                return;
            };
            let Some(dest_info) = broker.topics.get(&dest) else {
                report.skipped += 1;
                missing.insert(format!(
                    "topic {dest} no longer exists: its records stay in {}",
                    req.dlq_topic
                ));
                return;
            };
            let partition = partition_for(r.key.as_deref(), p, dest_info.partitions);
            out.entry(dest)
                .or_default()
                .entry(partition)
                .or_default()
                .push(reset(r));
        };
        if let Err(e) = read_partition(broker, &req.dlq_topic, p, &mut select).await {
            missing.insert(format!("{}-{p} was not read: {e}", req.dlq_topic));
        }
    }
    report.problems = missing.into_iter().collect();
    let mut deliverer = Deliverer::new(broker.clone());
    let mut stamper = Stamper::default();
    for (dest, partitions) in out {
        for (partition, records) in partitions {
            let n = records.len() as u64;
            if req.dry_run {
                report.redriven += n;
                continue;
            }
            let mut sent = 0u64;
            for chunk in records.chunks(REDRIVE_BATCH_RECORDS_MAX) {
                let (producer_id, epoch) = stamper.producer(broker).await?;
                let sequence = stamper.take(&dest, partition, chunk.len());
                let batch = crate::records::encode_batch_as(
                    chunk.to_vec(),
                    now_ms(),
                    Some((producer_id, epoch, sequence)),
                )?;
                let mut result = Ok(());
                // The same stamped batch again after a failure: the leader drops a duplicate.
                for _ in 0..REDRIVE_ATTEMPTS {
                    result = deliverer.deliver(&dest, partition, batch.clone()).await;
                    if result.is_ok() {
                        break;
                    }
                }
                if let Err(e) = result {
                    // Its fate is unknown: later batches use a new producer id.
                    stamper.reset();
                    report.problems.push(format!(
                        "{} records to {dest}-{partition} not redriven: {e}",
                        n - sent
                    ));
                    break;
                }
                sent += chunk.len() as u64;
            }
            report.redriven += sent;
            report.skipped += n - sent;
        }
    }
    Ok(report)
}

/// The records of `topic`-`partition` below its high watermark: read in place when this broker
/// hosts a replica, else fetched from the leader.
async fn read_partition(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    keep: &mut impl FnMut(Record),
) -> Result<(), String> {
    // The records of whole batches read from `offset`, those below `end` kept.
    let mut take = |records: Vec<LogRecord>, end: i64| {
        for r in records {
            if r.offset < end {
                keep(r.record);
            }
        }
    };
    if let Some(part) = broker.replicas.get(topic, partition) {
        // Disk reads: off the async workers.
        return tokio::task::block_in_place(|| {
            let end = part.high_watermark();
            let mut offset = part.log_start_offset();
            while offset < end {
                let Some((records, next)) = read_from(&part, offset)? else {
                    break;
                };
                take(records, end);
                offset = next;
            }
            Ok(())
        });
    }
    let (leader, addr) = broker.leader_addr(topic, partition)?;
    let mut conn = Connection::connect(
        &addr,
        format!("kairos-redrive-{}", broker.node_id()),
        Duration::from_millis(broker.config.replica_socket_timeout_ms.max(1000)),
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    let mut offset = 0i64;
    loop {
        // A consumer's fetch (the codec's defaults: replica -1, no wait, read uncommitted).
        let req = FetchRequest::default()
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(FETCH_BYTES_MAX)])]);
        let resp = conn
            .call(FETCH_VERSION, &req)
            .await
            .map_err(|e| format!("fetching from broker {leader}: {e:#}"))?;
        let Some(p) = resp
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
        else {
            return Err(format!("broker {leader} did not answer for the partition"));
        };
        match p.error_code {
            0 => {}
            OFFSET_OUT_OF_RANGE if offset < p.log_start_offset => {
                offset = p.log_start_offset;
                continue;
            }
            code => return Err(format!("broker {leader} answered fetch with error {code}")),
        }
        let hw = p.high_watermark;
        if offset < p.log_start_offset {
            offset = p.log_start_offset;
        }
        if offset >= hw {
            return Ok(());
        }
        let bytes = p.records.clone().unwrap_or_default();
        let (records, next) = decode_from(bytes, offset)?;
        if next <= offset {
            return Err(format!("no progress reading at offset {offset}"));
        }
        take(records, hw);
        offset = next;
    }
}
