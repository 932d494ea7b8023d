//! Dead-letter topics: redrive records back to where they failed.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::records::Record;

use super::delay::read_from;
use super::headers;
use super::murmur2::partition_for;
use crate::partition::now_ms;
use crate::server::Broker;

/// Records per append to a destination partition.
const REDRIVE_BATCH_RECORDS_MAX: usize = 1_000;

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

pub fn redrive(broker: &Broker, req: &RedriveRequest) -> Result<RedriveReport, String> {
    let Some(info) = broker.topics.get(&req.dlq_topic) else {
        return Err(format!("topic {} does not exist", req.dlq_topic));
    };
    let mut report = RedriveReport::default();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    // destination topic → partition → records
    let mut out: BTreeMap<String, BTreeMap<i32, Vec<Record>>> = BTreeMap::new();
    for p in 0..info.partitions {
        let Some(part) = broker.replicas.get(&req.dlq_topic, p) else {
            continue;
        };
        let end = part.high_watermark();
        let mut offset = part.log_start_offset();
        while offset < end {
            let Some((records, next)) =
                read_from(&part, offset).map_err(|e| format!("{}-{p}: {e}", req.dlq_topic))?
            else {
                break;
            };
            for r in records.into_iter().map(|r| r.record) {
                if r.offset >= end {
                    continue;
                }
                if req
                    .key
                    .as_deref()
                    .is_some_and(|k| r.key.as_deref() != Some(k))
                {
                    continue;
                }
                if r.timestamp < req.from_ms || r.timestamp >= req.to_ms {
                    continue;
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
                    continue;
                };
                let Some(dest_info) = broker.topics.get(&dest) else {
                    report.skipped += 1;
                    missing.insert(format!(
                        "topic {dest} no longer exists: its records stay in {}",
                        req.dlq_topic
                    ));
                    continue;
                };
                let partition = partition_for(r.key.as_deref(), p, dest_info.partitions);
                out.entry(dest)
                    .or_default()
                    .entry(partition)
                    .or_default()
                    .push(reset(r));
            }
            offset = next;
        }
    }
    report.problems = missing.into_iter().collect();
    for (dest, partitions) in out {
        for (partition, records) in partitions {
            let n = records.len() as u64;
            if req.dry_run {
                report.redriven += n;
                continue;
            }
            let Ok(tp) = broker.leader_replica(&dest, partition) else {
                report.skipped += n;
                report.problems.push(format!(
                    "partition {dest}-{partition} is not led by this broker"
                ));
                continue;
            };
            for chunk in records.chunks(REDRIVE_BATCH_RECORDS_MAX) {
                let bytes: Bytes = crate::records::encode_batch(chunk.to_vec(), now_ms())?;
                tp.append(bytes)
                    .map_err(|e| format!("appending to {dest}-{partition}: {}", e.message))?;
                report.redriven += chunk.len() as u64;
            }
        }
    }
    Ok(report)
}
