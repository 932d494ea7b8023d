//! `__consumer_offsets` as the group coordinator's durable store: records are appended to and
//! read back from the compacted topic's partitions.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::records::RecordBatchDecoder;

use crate::group::OffsetsLog;
use crate::metadata::OFFSETS_TOPIC;
use crate::partition::{codes, now_ms, ReplicaManager};

pub struct PartitionOffsetsLog {
    replicas: Arc<ReplicaManager>,
}

impl PartitionOffsetsLog {
    pub fn new(replicas: Arc<ReplicaManager>) -> Self {
        Self { replicas }
    }
}

/// Kafka's `offsets.commit.timeout.ms` default.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest read per step while loading a partition.
const LOAD_READ_BYTES_MAX: usize = 4 << 20;

impl OffsetsLog for PartitionOffsetsLog {
    fn append(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> BoxFuture<'static, Result<(), i16>> {
        let result = (|| -> Result<_, i16> {
            let p = self
                .replicas
                .get(OFFSETS_TOPIC, partition)
                .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
            let records = records
                .into_iter()
                .map(|(key, value)| crate::records::record(Some(key), value, Default::default(), 0))
                .collect();
            let batch = crate::records::encode_batch(records, now_ms()).map_err(|e| {
                tracing::error!("encoding {OFFSETS_TOPIC} records: {e}");
                codes::KAFKA_STORAGE_ERROR
            })?;
            let appended = p.append(batch).map_err(|e| e.code)?;
            Ok((p, appended.last_offset, appended.leader_epoch))
        })();
        // Durable means replicated: wait, as acks=all does, until the ISR holds the records
        // (Kafka: `offsets.commit.timeout.ms`).
        Box::pin(async move {
            let (p, last, epoch) = result?;
            let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
            p.wait_replicated(last, epoch, deadline).await
        })
    }

    fn read_all(&self, partition: i32) -> Result<Vec<(Bytes, Option<Bytes>)>, i16> {
        // A partition this broker does not host holds nothing for its coordinator to load.
        let Some(p) = self.replicas.get(OFFSETS_TOPIC, partition) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut offset = p.log_start_offset();
        while offset < p.log_end_offset() {
            let mut buf = p
                .read_bytes_uncommitted(offset, LOAD_READ_BYTES_MAX)
                .map_err(|e| e.code)?;
            if buf.is_empty() {
                break;
            }
            let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                tracing::error!("{OFFSETS_TOPIC}-{partition}: undecodable batch at {offset}: {e}");
                codes::CORRUPT_MESSAGE
            })?;
            let mut next = offset;
            for set in sets {
                for r in set.records {
                    next = next.max(r.offset + 1);
                    if r.offset < offset || r.control {
                        continue;
                    }
                    if let Some(key) = r.key {
                        out.push((key, r.value));
                    }
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        Ok(out)
    }
}
