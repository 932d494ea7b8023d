//! Retention (cleanup.policy=delete) and compaction (cleanup.policy=compact) for one
//! partition, as methods on [`Log`]. The caller runs them from a background task.
//!
//! Compaction rules (Kafka's, with the simplifications named here):
//! - Only segments before the active one are touched, and only those whose largest
//!   timestamp is older than `min.compaction.lag.ms`.
//! - Cleaning runs when dirty bytes / cleanable bytes >= `min.cleanable.dirty.ratio`, where
//!   "dirty" are the segments at or after the cleaner checkpoint (`cleaner-offset` file in the
//!   partition directory: `0\n1\n<first dirty offset>\n`, Kafka's cleaner-offset-checkpoint
//!   value for this partition).
//! - A record is kept iff it is the latest record for its key in the cleanable range.
//!   Records without a key are dropped (produce to a compacted topic rejects them anyway).
//! - Tombstones (null value): Kafka ≥ 3.1 stamps a delete horizon into the batch. Kairos
//!   uses the older, marker-free rule instead: a tombstone is removed when it was already
//!   in the clean part of the log before this pass (it survived one cleaning) AND its
//!   batch's max timestamp is older than `now - delete.retention.ms`.
//! - Control batches (transaction markers) are copied unchanged; aborted transactional data
//!   is not filtered; batches left with no records are dropped (Kafka keeps an empty batch
//!   for the last batch of a live idempotent producer — not done here).
//! - Surviving records keep their offsets (gaps are normal); a batch whose records all
//!   survive is copied byte for byte, otherwise it is re-encoded with its original
//!   compression, producer id/epoch, sequences, leader epoch and timestamp type.
//! - The key map holds every key of the cleanable range in memory (Kafka bounds it with
//!   `log.cleaner.dedupe.buffer.size`; no bound here yet).

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use super::batch::{self, BatchHeader};
use super::checkpoint;
use super::segment::LogSegment;
use super::{Log, LogError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionResult {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactResult {
    /// False when the dirty ratio or policy did not call for a pass.
    pub ran: bool,
    pub dirty_ratio: f64,
    pub cleaned_segments: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
}

fn compression_of(header: &BatchHeader) -> Option<Compression> {
    Some(match header.compression() {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => return None,
    })
}

impl Log {
    /// Deletes old segments by time, then by size (delete policy), then any segment wholly
    /// below the log start offset (any policy). Never deletes the active segment, but rolls
    /// an expired non-empty active segment so its data can go, like Kafka.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionResult, LogError> {
        self.enforce_retention_above(now_ms, i64::MAX)
    }

    /// Retention that never deletes a segment holding an offset at or above `floor` (a delay
    /// topic's oldest pending record: retention waits for it to be delivered).
    pub fn enforce_retention_above(
        &mut self,
        now_ms: i64,
        floor: i64,
    ) -> Result<RetentionResult, LogError> {
        let size_before = self.size_bytes();
        let count_before = self.segments.len();
        if self.config.cleanup_policy_delete && self.config.retention_ms >= 0 {
            let retention_ms = self.config.retention_ms;
            let expired = |s: &LogSegment| now_ms - s.largest_timestamp() > retention_ms;
            let active = self.active_segment();
            let all_expired = self.segments.values().all(|s| s.is_empty() || expired(s));
            if !active.is_empty() && all_expired {
                self.roll(now_ms)?;
            }
            let doomed: Vec<i64> = self
                .segments
                .iter()
                .rev()
                .skip(1)
                .rev()
                .take_while(|(_, s)| expired(s) && s.next_offset() <= floor)
                .map(|(b, _)| *b)
                .collect();
            for base in doomed {
                self.delete_segment(base)?;
            }
        }
        if self.config.cleanup_policy_delete && self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            let mut doomed = Vec::new();
            for (base, segment) in self.segments.iter().rev().skip(1).rev() {
                if excess - segment.size_bytes() as i64 >= 0 && segment.next_offset() <= floor {
                    excess -= segment.size_bytes() as i64;
                    doomed.push(*base);
                } else {
                    break;
                }
            }
            for base in doomed {
                self.delete_segment(base)?;
            }
        }
        self.delete_segments_below_log_start(now_ms)?;
        let first_base = self.first_segment().base_offset();
        if first_base > self.log_start_offset {
            self.log_start_offset = first_base;
            checkpoint::write_offset(&self.dir.join(super::LOG_START_OFFSET_FILE), first_base)?;
        }
        self.check_invariants();
        Ok(RetentionResult {
            deleted_segments: count_before.saturating_sub(self.segments.len()),
            deleted_bytes: size_before.saturating_sub(self.size_bytes()),
            log_start_offset: self.log_start_offset,
        })
    }

    /// The first dirty offset recorded by the last cleaning pass (0 if none).
    pub fn cleaner_checkpoint(&self) -> i64 {
        checkpoint::read_offset(&self.cleaner_offset_path())
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// One compaction pass; see the module documentation for the rules.
    pub fn compact(&mut self, now_ms: i64) -> Result<CompactResult, LogError> {
        let mut result = CompactResult::default();
        if !self.config.cleanup_policy_compact {
            return Ok(result);
        }
        let lag_horizon_ms = now_ms.saturating_sub(self.config.min_compaction_lag_ms);
        let cleanable: Vec<i64> = self
            .segments
            .iter()
            .rev()
            .skip(1)
            .rev()
            .take_while(|(_, s)| s.largest_timestamp() <= lag_horizon_ms)
            .map(|(b, _)| *b)
            .collect();
        let first_dirty = self.cleaner_checkpoint();
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        for base in &cleanable {
            let segment = &self.segments[base];
            if segment.next_offset() <= first_dirty {
                clean_bytes += segment.size_bytes();
            } else {
                dirty_bytes += segment.size_bytes();
            }
        }
        let total = clean_bytes + dirty_bytes;
        if total == 0 {
            return Ok(result);
        }
        result.dirty_ratio = dirty_bytes as f64 / total as f64;
        if dirty_bytes == 0 || result.dirty_ratio < self.config.min_cleanable_dirty_ratio {
            return Ok(result);
        }
        result.ran = true;
        let latest = self.build_key_map(&cleanable)?;
        let tombstone_horizon_ms = now_ms.saturating_sub(self.config.delete_retention_ms);
        let mut dirty_end = first_dirty;
        for base in &cleanable {
            let Some(old) = self.segments.remove(base) else {
                continue;
            };
            dirty_end = dirty_end.max(old.next_offset());
            result.bytes_before += old.size_bytes();
            let filter = CleanFilter {
                latest: &latest,
                first_dirty,
                tombstone_horizon_ms,
            };
            let cleaned = match self.clean_segment(&old, &filter, now_ms, &mut result) {
                Ok(cleaned) => cleaned,
                Err(e) => {
                    self.segments.insert(*base, old);
                    return Err(e);
                }
            };
            result.bytes_after += cleaned.size_bytes();
            result.cleaned_segments += 1;
            let is_first = self.segments.keys().next().is_none_or(|first| first > base);
            if cleaned.is_empty() && !is_first {
                cleaned.delete()?;
                old.delete()?;
            } else {
                let installed = cleaned.install_cleaned(old, now_ms)?;
                self.segments.insert(*base, installed);
            }
        }
        checkpoint::write_offset(&self.cleaner_offset_path(), dirty_end)?;
        self.check_invariants();
        Ok(result)
    }

    /// Key → offset of its latest record over the given segments.
    fn build_key_map(&self, bases: &[i64]) -> Result<HashMap<Bytes, i64>, LogError> {
        let mut latest = HashMap::new();
        for base in bases {
            let segment = &self.segments[base];
            for (position, header) in segment.batch_headers(*base)? {
                if header.is_control() {
                    continue;
                }
                for record in Self::decode_batch_at(segment, position, &header)? {
                    if let Some(key) = record.key {
                        latest.insert(key, record.offset);
                    }
                }
            }
        }
        Ok(latest)
    }

    /// Writes the retained batches of `old` into a `.cleaned` segment.
    fn clean_segment(
        &self,
        old: &LogSegment,
        filter: &CleanFilter<'_>,
        now_ms: i64,
        result: &mut CompactResult,
    ) -> Result<LogSegment, LogError> {
        let mut cleaned = LogSegment::create_cleaned(
            &self.dir,
            old.base_offset(),
            self.config.index_interval_bytes,
            now_ms,
        )?;
        for (position, header) in old.batch_headers(old.base_offset())? {
            let bytes = old.read_batch_at(position, &header)?;
            let out = if header.is_control() {
                Some(bytes)
            } else {
                let records = Self::decode_batch_at(old, position, &header)?;
                let total = records.len();
                let kept: Vec<Record> = records
                    .into_iter()
                    .filter(|r| filter.keep(r, &header, result))
                    .collect();
                result.records_removed += (total - kept.len()) as u64;
                if kept.len() == total {
                    Some(bytes)
                } else if kept.is_empty() {
                    None
                } else {
                    Some(reencode(&header, kept).map_err(|reason| LogError::Corrupt {
                        path: old.log_path(),
                        reason,
                    })?)
                }
            };
            if let Some(out) = out {
                let h = BatchHeader::parse(&out)?;
                cleaned.append(h.last_offset(), h.max_timestamp, h.last_offset(), &out)?;
            }
        }
        Ok(cleaned)
    }
}

struct CleanFilter<'a> {
    latest: &'a HashMap<Bytes, i64>,
    first_dirty: i64,
    tombstone_horizon_ms: i64,
}

impl CleanFilter<'_> {
    fn keep(&self, record: &Record, header: &BatchHeader, result: &mut CompactResult) -> bool {
        let Some(key) = &record.key else { return false };
        if self.latest.get(key) != Some(&record.offset) {
            return false;
        }
        let removable_tombstone = record.value.is_none()
            && record.offset < self.first_dirty
            && header.max_timestamp < self.tombstone_horizon_ms;
        if removable_tombstone {
            result.tombstones_removed += 1;
        }
        !removable_tombstone
    }
}

/// Re-encodes surviving records as one batch that keeps the original batch's compression,
/// producer id/epoch, sequence numbering, leader epoch and timestamp type.
fn reencode(header: &BatchHeader, mut kept: Vec<Record>) -> Result<Vec<u8>, String> {
    let compression = compression_of(header).ok_or("unknown compression codec")?;
    let first_offset = kept.first().map(|r| r.offset).ok_or("no records")?;
    // The encoder derives base sequence from the first record and splits batches where
    // offset - sequence changes; number records so the result is a single batch whose base
    // sequence is the original sequence of its first record (or -1 without a producer).
    let base_sequence = if header.base_sequence < 0 {
        -1
    } else {
        header
            .base_sequence
            .wrapping_add((first_offset - header.base_offset) as i32)
    };
    for record in &mut kept {
        record.sequence = base_sequence.wrapping_add((record.offset - first_offset) as i32);
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kept,
        &RecordEncodeOptions {
            version: batch::MAGIC_V2,
            compression,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut out = buf.to_vec();
    let encoded = BatchHeader::parse(&out).map_err(|e| e.to_string())?;
    if encoded.total_size() != out.len() {
        return Err("re-encoding produced more than one batch".into());
    }
    // The encoder ignores the timestamp type; restore it (and the log-append max
    // timestamp) and re-seal the CRC.
    if header.is_log_append_time() {
        batch::set_log_append_time(&mut out, header.max_timestamp);
    }
    batch::set_base_offset_and_epoch(&mut out, first_offset, header.partition_leader_epoch);
    Ok(out)
}
