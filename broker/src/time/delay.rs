//! The delay engine: delay topics (`kairos.delay.target`) forward each record to their target
//! when it is due, exactly once, unless it was cancelled first.
//!
//! Per delay partition one task indexes the partition's own log (the records are the source of
//! truth). Due time = `kairos.deliver.at.ms`, else the append time (delay topics are stamped
//! with LogAppendTime) plus `kairos.delay.ms` from the header or the topic config.
//!
//! The index ([`DueIndex`]) keeps only the near future in memory: every indexed record gets a
//! 24-byte entry in a per-minute bucket file of the [`DueStore`]; buckets due within
//! `kairos.delay.window.ms` are loaded into memory, later ones cost a count and a minimum offset each. So
//! millions of far-future records cost almost no RAM, and a restart reads bucket files, not the
//! whole log.
//!
//! Files in the partition directory:
//! - `kairos-delay-due/<bucket>.due` — the due index (see `due_store.rs`);
//! - `kairos-delay-done` — u64 offsets that must never be forwarded again: delivered (top bit
//!   clear) or cancelled by offset (top bit set); pruned with their bucket files;
//! - `kairos-delay-tombstones` — (key hash u64, offset i64) of every tombstone, pruned once no
//!   pending record is older;
//! - `kairos-delay-checkpoint.json` — how far the log was indexed.
//!
//! These files are this broker's own cache; the log is the truth, and it is replicated. Exactly
//! once across crashes and leadership moves: before appending due records to their targets, the
//! leader writes a forward [`Intent`] naming them into the delay partition (a control batch) and
//! waits until it is committed; the target batches carry the intent's idempotent producer id and
//! sequences and are appended with acks=all, on this broker or through the target's leader
//! ([`super::deliver`]); then the offsets go to the done file. A broker that starts leading
//! re-indexes the log from its checkpoint (all of it if it has none): the intents there mark
//! their offsets forwarded, and the last one, unless the done file shows it finished, is sent
//! again — a duplicate of a batch the target already holds is answered with its first offset.
//! Checkpoints are not written while an intent is unfinished, so a restart re-reads it.
//!
//! Cancel: a tombstone (same key, null value) cancels every pending record with that key at a
//! lower offset. Keys are compared by their 64-bit FNV-1a hash: a collision (odds about
//! n²/2⁶⁵ for n keys) could cancel an unrelated key. Retention never deletes at or above the
//! oldest pending offset (see `set_retention_floor`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::due_store::{DueEntry, DueStore};
use super::headers;
use super::murmur2::partition_for;
use crate::log::batch::BatchHeader;
use crate::metadata::{
    TopicInfo, DELAY_MS, DELAY_TARGET, DLQ_TOPIC, RETRY_BACKOFF_DEFAULT, RETRY_BACKOFF_MS,
    RETRY_JITTER_MS, RETRY_MAX_ATTEMPTS, RETRY_MAX_ATTEMPTS_DEFAULT, RETRY_TARGET,
};
use crate::partition::{now_ms, Partition};
use crate::server::Broker;

/// Records forwarded per target append, and bytes (estimated) per append.
const FORWARD_BATCH_RECORDS_MAX: usize = 5_000;
const FORWARD_BATCH_BYTES_MAX: usize = 512 * 1024;
/// Bytes read from a log per step while indexing or scanning.
const READ_BYTES_MAX: usize = 1 << 20;
/// How often the supervisor looks for new or deleted delay topics.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(200);
/// Longest sleep of a partition task (checkpointing and config changes need a heartbeat).
const IDLE_WAKE: Duration = Duration::from_millis(500);
/// Checkpoints are written at most this often (and on shutdown); recovery re-indexes the log
/// after the last one, so a longer interval only costs start-up time.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Records due within this horizon keep their decoded content in memory (read once while
/// indexing); later ones are read back from the log when they come due.
const PAYLOAD_HORIZON_MS: i64 = 60_000;
/// Bound on the record bytes one partition keeps in memory.
const PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// Delivered offsets remembered (newest) so a late Cancel can say "already delivered".
const RECENT_DELIVERED_MAX: usize = 100_000;
const CHECKPOINT_FILE: &str = "kairos-delay-checkpoint.json";
const DONE_FILE: &str = "kairos-delay-done";
const TOMBSTONES_FILE: &str = "kairos-delay-tombstones";
/// Done-file flag: cancelled by offset (clear: delivered).
const DONE_CANCELLED: u64 = 1 << 63;

/// Control record type of a forward intent (Kafka's own control types are small numbers).
const FORWARD_INTENT: i16 = 0x4b01;
/// How long a forward intent may take to be committed in the delay partition.
const INTENT_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a forwarder is about to append, written to the delay partition itself (a control batch
/// that clients skip) and committed before any target append. The partition's replicas thus
/// carry the forwarding progress: whichever broker leads next re-indexes the log, treats the
/// named offsets as forwarded, and completes the last intent if it is not known done. An intent
/// is completed (every batch delivered) before the next is written, so only the last one can be
/// unfinished; resending it is safe because each batch carries the intent's idempotent producer
/// id and sequence, and a target leader answers a batch it already holds as a duplicate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Intent {
    producer_id: i64,
    producer_epoch: i16,
    batches: Vec<IntentBatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct IntentBatch {
    target: String,
    partition: i32,
    base_sequence: i32,
    /// Source offsets, in the batch's record order.
    offsets: Vec<i64>,
}

/// A batch of an intent not yet delivered: the encoded batch and its sources (offset, due time,
/// attempt) for the done marks and metrics.
struct Undelivered {
    target: String,
    partition: i32,
    batch: Bytes,
    sources: Vec<(i64, i64, Option<i64>)>,
}

/// A record's content kept for forwarding: (append time, record with owned bytes).
type Payload = Arc<(i64, Record)>;

/// 64-bit FNV-1a of a key; 0 is reserved for "no key".
pub fn key_hash(key: Option<&[u8]>) -> u64 {
    let Some(key) = key else { return 0 };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// A record copied out of the buffer it was decoded from (so a kept payload does not pin a
/// whole read chunk), with its approximate size.
fn owned_payload(append_ms: i64, r: &Record) -> (Payload, usize) {
    let copy = |b: &Option<Bytes>| b.as_ref().map(|b| Bytes::copy_from_slice(b));
    let mut rec = r.clone();
    rec.key = copy(&r.key);
    rec.value = copy(&r.value);
    rec.headers = r
        .headers
        .iter()
        .map(|(k, v)| (StrBytes::from_string(k.to_string()), copy(v)))
        .collect();
    let size = rec.key.as_ref().map_or(0, |k| k.len())
        + rec.value.as_ref().map_or(0, |v| v.len())
        + rec
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
        + 64;
    (Arc::new((append_ms, rec)), size)
}

/// What a scheduled topic does with its records: a delay topic forwards each to its target
/// when due; a retry topic redelivers to its target after a backoff, or dead-letters it.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Delay {
        target: String,
        delay_ms: i64,
    },
    Retry {
        target: String,
        backoff_ms: Vec<i64>,
        max_attempts: i64,
        jitter_ms: i64,
        dlq: String,
    },
}

impl Schedule {
    pub fn from_topic(info: &TopicInfo) -> Option<Schedule> {
        let num = |k: &str| {
            info.configs
                .get(k)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if let Some(target) = info.configs.get(DELAY_TARGET) {
            return Some(Schedule::Delay {
                target: target.trim().to_string(),
                delay_ms: num(DELAY_MS).unwrap_or(0),
            });
        }
        let target = info.configs.get(RETRY_TARGET)?.trim().to_string();
        let backoff_ms = info
            .configs
            .get(RETRY_BACKOFF_MS)
            .map(String::as_str)
            .unwrap_or(RETRY_BACKOFF_DEFAULT)
            .split(',')
            .filter_map(|v| v.trim().parse::<i64>().ok())
            .collect::<Vec<_>>();
        Some(Schedule::Retry {
            dlq: info
                .configs
                .get(DLQ_TOPIC)
                .map(|d| d.trim().to_string())
                .unwrap_or_else(|| format!("{target}.dlq")),
            target,
            backoff_ms: if backoff_ms.is_empty() {
                vec![0]
            } else {
                backoff_ms
            },
            max_attempts: num(RETRY_MAX_ATTEMPTS)
                .unwrap_or(RETRY_MAX_ATTEMPTS_DEFAULT)
                .max(1),
            jitter_ms: num(RETRY_JITTER_MS).unwrap_or(0).max(0),
        })
    }

    /// Every topic records may go to (each must exist before anything is forwarded).
    fn destinations(&self) -> Vec<String> {
        match self {
            Schedule::Delay { target, .. } => vec![target.clone()],
            Schedule::Retry { target, dlq, .. } => vec![target.clone(), dlq.clone()],
        }
    }

    /// The attempt a retry record stands for: previous `kairos.retry.attempt` + 1 (a missing
    /// or malformed header counts as a first failure).
    pub(crate) fn attempt(record: &Record) -> i64 {
        match header_str(record, headers::RETRY_ATTEMPT) {
            None => 1,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n.saturating_add(1),
                _ => {
                    tracing::warn!(
                        "malformed {} header {v:?}: treated as a first failure",
                        headers::RETRY_ATTEMPT
                    );
                    1
                }
            },
        }
    }

    /// When the record at `offset` is due (deterministic: recovery recomputes the same time).
    pub(crate) fn due_ms(
        &self,
        record: &Record,
        append_ms: i64,
        offset: i64,
    ) -> Result<i64, String> {
        match self {
            Schedule::Delay { delay_ms, .. } => {
                let spec = headers::due_spec(
                    record
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref())),
                )?;
                Ok(spec.due_ms(append_ms, *delay_ms))
            }
            Schedule::Retry {
                backoff_ms,
                max_attempts,
                jitter_ms,
                ..
            } => {
                let n = Self::attempt(record);
                if n > *max_attempts {
                    return Ok(append_ms); // dead-lettered at once
                }
                let step = backoff_ms[((n - 1) as usize).min(backoff_ms.len() - 1)];
                let jitter = if *jitter_ms > 0 {
                    (key_hash(Some(&offset.to_be_bytes())) % (*jitter_ms as u64 + 1)) as i64
                } else {
                    0
                };
                Ok(append_ms.saturating_add(step).saturating_add(jitter))
            }
        }
    }

    /// Where the record goes and the headers it gets; `(topic, partition, offset, append)` are
    /// its coordinates in the scheduled topic.
    pub(crate) fn route(
        &self,
        record: &mut Record,
        topic: &str,
        partition: i32,
        offset: i64,
        append_ms: i64,
    ) -> (String, Option<i64>) {
        let put =
            |h: &mut indexmap::IndexMap<StrBytes, Option<Bytes>>, k: &'static str, v: String| {
                h.insert(StrBytes::from_static_str(k), Some(Bytes::from(v)));
            };
        let h = &mut record.headers;
        match self {
            Schedule::Delay { target, .. } => {
                put(h, headers::ORIGINAL_TOPIC, topic.to_string());
                put(h, headers::ORIGINAL_PARTITION, partition.to_string());
                put(h, headers::ORIGINAL_OFFSET, offset.to_string());
                put(h, headers::ORIGINAL_TIMESTAMP, append_ms.to_string());
                (target.clone(), None)
            }
            Schedule::Retry {
                target,
                max_attempts,
                dlq,
                ..
            } => {
                let n = Self::attempt(record);
                let h = &mut record.headers;
                // The first failure's coordinates stay on the record through every attempt.
                if !h.contains_key(headers::ORIGINAL_TOPIC.as_bytes()) {
                    put(h, headers::ORIGINAL_TOPIC, topic.to_string());
                    put(h, headers::ORIGINAL_PARTITION, partition.to_string());
                    put(h, headers::ORIGINAL_OFFSET, offset.to_string());
                    put(h, headers::ORIGINAL_TIMESTAMP, append_ms.to_string());
                }
                if n <= *max_attempts {
                    put(h, headers::RETRY_ATTEMPT, n.to_string());
                    return (target.clone(), Some(n));
                }
                let first = h
                    .get(headers::ORIGINAL_TIMESTAMP.as_bytes())
                    .and_then(|v| v.as_ref())
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                    .unwrap_or(append_ms);
                let reason = h
                    .get(headers::RETRY_REASON.as_bytes())
                    .and_then(|v| v.as_ref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| {
                        format!("retries exhausted after {max_attempts} attempt(s)")
                    });
                put(h, headers::DLQ_REASON, reason);
                put(h, headers::DLQ_ATTEMPTS, (n - 1).to_string());
                put(h, headers::DLQ_FIRST_FAILURE_MS, first.to_string());
                put(h, headers::DLQ_LAST_FAILURE_MS, append_ms.to_string());
                put(h, headers::DLQ_SOURCE_TOPIC, target.clone());
                (dlq.clone(), None)
            }
        }
    }
}

/// A pending record held in memory (due within the window).
#[derive(Debug, Clone)]
struct Entry {
    due_ms: i64,
    key_hash: u64,
    payload: Option<(Payload, usize)>,
}

/// The due index of one delay partition: the near future in memory, the rest in the
/// [`DueStore`]'s bucket files.
#[derive(Default)]
pub struct DueIndex {
    /// In-memory window: every pending record whose bucket is below `window_bucket`.
    by_due: BTreeSet<(i64, i64)>,
    by_offset: BTreeMap<i64, Entry>,
    by_key: HashMap<u64, Vec<i64>>,
    payload_bytes: usize,
    window_bucket: i64,
    /// Buckets not loaded: bucket → (entries, smallest offset). Counts may include entries
    /// cancelled by offset since (corrected when the bucket loads).
    far: BTreeMap<i64, (u64, i64)>,
    /// Loaded buckets → entries still pending (the file goes when it reaches 0).
    loaded: BTreeMap<i64, u64>,
    /// Latest tombstone offset per key hash.
    tombstones: HashMap<u64, i64>,
    /// Offsets delivered or cancelled by offset whose bucket file may still list them.
    done: HashSet<i64>,
    /// Recently delivered offsets (bounded), for "already delivered" answers.
    delivered_recent: BTreeSet<i64>,
    /// Next offset of the delay log to index.
    indexed_to: i64,
    /// Width of a due bucket (`kairos.delay.bucket.ms`).
    bucket_ms: i64,
    /// A tombstone or cancel marker was indexed while far buckets existed: their counts may
    /// include records it cancelled (recounted by [`DelayPartition::recount_far`]).
    far_stale: bool,
}

impl DueIndex {
    fn bucket_of(&self, due_ms: i64) -> i64 {
        due_ms.div_euclid(self.bucket_ms.max(1))
    }

    fn insert_window(
        &mut self,
        offset: i64,
        due_ms: i64,
        key_hash: u64,
        payload: Option<(Payload, usize)>,
    ) {
        if self.by_offset.contains_key(&offset) {
            return;
        }
        self.by_due.insert((due_ms, offset));
        if key_hash != 0 {
            self.by_key.entry(key_hash).or_default().push(offset);
        }
        if let Some((_, size)) = &payload {
            self.payload_bytes += size;
        }
        let bucket = self.bucket_of(due_ms);
        *self.loaded.entry(bucket).or_default() += 1;
        self.by_offset.insert(
            offset,
            Entry {
                due_ms,
                key_hash,
                payload,
            },
        );
    }

    /// Removes a window entry; returns it and whether its bucket has no pending entry left.
    fn remove(&mut self, offset: i64) -> Option<(Entry, Option<i64>)> {
        let e = self.by_offset.remove(&offset)?;
        if let Some((_, size)) = &e.payload {
            self.payload_bytes -= size;
        }
        self.by_due.remove(&(e.due_ms, offset));
        if e.key_hash != 0 {
            if let Some(v) = self.by_key.get_mut(&e.key_hash) {
                v.retain(|o| *o != offset);
                if v.is_empty() {
                    self.by_key.remove(&e.key_hash);
                }
            }
        }
        let bucket = self.bucket_of(e.due_ms);
        let mut emptied = None;
        if let Some(n) = self.loaded.get_mut(&bucket) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.loaded.remove(&bucket);
                emptied = Some(bucket);
            }
        }
        Some((e, emptied))
    }

    /// Whether a tombstone cancels the record at `offset` with `key_hash`.
    fn tombstoned(&self, offset: i64, key_hash: u64) -> bool {
        key_hash != 0 && self.tombstones.get(&key_hash).is_some_and(|t| *t > offset)
    }

    pub fn len(&self) -> usize {
        self.by_offset.len() + self.far.values().map(|(n, _)| *n as usize).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest offset that may still be pending.
    fn low_water(&self) -> i64 {
        let window = self.by_offset.keys().next().copied().unwrap_or(i64::MAX);
        let far = self.far.values().map(|(_, o)| *o).min().unwrap_or(i64::MAX);
        window.min(far).min(self.indexed_to)
    }

    fn next_due(&self) -> Option<i64> {
        let window = self.by_due.iter().next().map(|(d, _)| *d);
        let far = self.far.keys().next().map(|b| b * self.bucket_ms);
        match (window, far) {
            (Some(w), Some(f)) => Some(w.min(f)),
            (w, f) => w.or(f),
        }
    }

    /// (due, offset) due at `now`, earliest first, at most `max`.
    fn due(&self, now: i64, max: usize) -> Vec<(i64, i64)> {
        self.by_due
            .range(..(now.saturating_add(1), i64::MIN))
            .take(max)
            .copied()
            .collect()
    }
}

/// What one delay partition exposes to metrics and inspection.
pub struct DelayPartition {
    pub topic: String,
    pub partition: i32,
    index: Mutex<DueIndex>,
    pub forwarded: AtomicU64,
    pub cancelled: AtomicU64,
    /// Why due records are waiting (e.g. the target topic does not exist), if they are.
    pub blocked: Mutex<Option<String>>,
    /// Held by a forwarding round from reading due records to recording them delivered, and
    /// by an admin cancel: a record is either cancelled or forwarded, never both.
    forward_lock: Mutex<()>,
    /// Retry topics: records scheduled, redeliveries by attempt, records dead-lettered.
    pub retry: Mutex<RetryCounters>,
    /// Retry topics scheduled in Redis: entries waiting there (due + in flight).
    pub redis_pending: AtomicU64,
}

#[derive(Default, Clone, Debug)]
pub struct RetryCounters {
    pub is_retry: bool,
    pub scheduled: u64,
    pub redelivered: BTreeMap<i64, u64>,
    pub dead_lettered: u64,
    pub dlq_topic: String,
}

/// What an admin cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// This many pending records will not be delivered.
    Cancelled(usize),
    /// The record was already forwarded.
    AlreadyDelivered,
    /// Nothing pending matched.
    NotFound,
}

/// Counts of pending records by due time (relative to `now`).
#[derive(Debug, Default, Clone, Copy)]
pub struct DueStats {
    pub pending: u64,
    pub overdue: u64,
    pub oldest_overdue_ms: i64,
    pub within_1m: u64,
    pub within_1h: u64,
    pub within_1d: u64,
    pub later: u64,
}

/// Files of one delay partition besides the log.
struct DelayFiles {
    dir: PathBuf,
    store: DueStore,
}

impl DelayFiles {
    fn append_done(&self, offsets: &[(i64, bool)]) -> Result<(), String> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(offsets.len() * 8);
        for (o, cancelled) in offsets {
            let v = *o as u64 | if *cancelled { DONE_CANCELLED } else { 0 };
            buf.extend_from_slice(&v.to_be_bytes());
        }
        append(&self.dir.join(DONE_FILE), &buf)
    }

    fn append_tombstone(&self, key_hash: u64, offset: i64) -> Result<(), String> {
        let mut buf = key_hash.to_be_bytes().to_vec();
        buf.extend_from_slice(&offset.to_be_bytes());
        append(&self.dir.join(TOMBSTONES_FILE), &buf)
    }

    /// Deletes a bucket file whose entries are all done, and forgets their done offsets.
    fn retire_bucket(&self, index: &mut DueIndex, bucket: i64) -> Result<(), String> {
        let entries = self.store.read(bucket).map_err(|e| e.to_string())?;
        self.store.delete(bucket).map_err(|e| e.to_string())?;
        for (_, offset, _) in entries {
            index.done.remove(&offset);
        }
        Ok(())
    }

    /// Marks offsets done in memory and on disk; retires emptied buckets.
    fn mark_done(
        &self,
        index: &mut DueIndex,
        offsets: &[(i64, bool)],
        emptied: &[i64],
    ) -> Result<(), String> {
        self.append_done(offsets)?;
        for (o, cancelled) in offsets {
            index.done.insert(*o);
            if !cancelled {
                index.delivered_recent.insert(*o);
            }
        }
        while index.delivered_recent.len() > RECENT_DELIVERED_MAX {
            index.delivered_recent.pop_first();
        }
        for b in emptied {
            // Only if still empty: entries indexed after the count hit zero (same batch) live
            // in this file too.
            if !index.loaded.contains_key(b) && !index.far.contains_key(b) {
                self.retire_bucket(index, *b)?;
            }
        }
        Ok(())
    }
}

fn append(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl DelayPartition {
    /// Counts one forwarded record: a delay topic's lateness, or a retry topic's redelivery of
    /// `attempt` (`None`: dead-lettered). `late_ms` is how long after its due time it went.
    pub(crate) fn count_delivery(
        &self,
        attempt: Option<i64>,
        late_ms: i64,
        metrics: &crate::metrics::Metrics,
    ) {
        let late = late_ms.max(0) as f64 / 1000.0;
        let mut retry = self.retry.lock();
        match (retry.is_retry, attempt) {
            (false, _) => metrics.delay_lateness.observe(late),
            (true, Some(n)) => {
                *retry.redelivered.entry(n).or_default() += 1;
                metrics.retry_lateness.observe(late);
            }
            (true, None) => retry.dead_lettered += 1,
        }
    }

    pub fn pending(&self) -> usize {
        self.index.lock().len() + self.redis_pending.load(Ordering::Relaxed) as usize
    }

    fn files(&self, partition: &Partition) -> Result<DelayFiles, String> {
        let dir = partition.dir().to_path_buf();
        let bucket_ms = self.index.lock().bucket_ms;
        Ok(DelayFiles {
            store: DueStore::open(&dir, bucket_ms).map_err(|e| e.to_string())?,
            dir,
        })
    }

    /// Cancels the record at `offset`; a durable marker is appended to `partition` so a
    /// restart does not bring it back.
    pub fn cancel_offset(
        &self,
        partition: &Partition,
        offset: i64,
    ) -> Result<CancelOutcome, String> {
        let _round = self.forward_lock.lock();
        let files = self.files(partition)?;
        let mut index = self.index.lock();
        let outcome = if let Some((_, emptied)) = index.remove(offset) {
            files.mark_done(
                &mut index,
                &[(offset, true)],
                &emptied.into_iter().collect::<Vec<_>>(),
            )?;
            CancelOutcome::Cancelled(1)
        } else if index.delivered_recent.contains(&offset) {
            return Ok(CancelOutcome::AlreadyDelivered);
        } else if index.done.contains(&offset) {
            return Ok(CancelOutcome::NotFound);
        } else if offset >= index.indexed_to {
            // Not indexed yet (just produced): the marker cancels it when indexing reaches it.
            if offset >= partition.log_end_offset() {
                return Ok(CancelOutcome::NotFound);
            }
            CancelOutcome::Cancelled(1)
        } else {
            // Maybe in a far bucket: look it up there.
            let candidates: Vec<i64> = index
                .far
                .iter()
                .filter(|(_, (_, min))| *min <= offset)
                .map(|(b, _)| *b)
                .collect();
            let mut found = None;
            for b in candidates {
                let entries = files.store.read(b).map_err(|e| e.to_string())?;
                if let Some(e) = entries.iter().find(|e| e.1 == offset) {
                    if !index.tombstoned(e.1, e.2) {
                        found = Some(b);
                    }
                    break;
                }
            }
            let Some(bucket) = found else {
                return Ok(CancelOutcome::NotFound);
            };
            if let Some((n, _)) = index.far.get_mut(&bucket) {
                *n = n.saturating_sub(1);
            }
            files.mark_done(&mut index, &[(offset, true)], &[])?;
            CancelOutcome::Cancelled(1)
        };
        drop(index);
        let mut headers = indexmap::IndexMap::new();
        headers.insert(
            StrBytes::from_static_str(headers::CANCEL_OFFSET),
            Some(Bytes::from(offset.to_string())),
        );
        let bytes = crate::records::encode_batch(
            vec![crate::records::record(None, None, headers, now_ms())],
            now_ms(),
        )?;
        partition.append(bytes).map_err(|e| e.message)?;
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Cancels every pending record with `key` (as a tombstone produced now would) and appends
    /// that tombstone for durability.
    pub fn cancel_key(&self, partition: &Partition, key: &[u8]) -> Result<CancelOutcome, String> {
        let _round = self.forward_lock.lock();
        let hash = key_hash(Some(key));
        let files = self.files(partition)?;
        let mut index = self.index.lock();
        let offsets = index.by_key.get(&hash).cloned().unwrap_or_default();
        let mut emptied = Vec::new();
        for o in &offsets {
            if let Some((_, e)) = index.remove(*o) {
                emptied.extend(e);
            }
        }
        for b in emptied {
            if !index.loaded.contains_key(&b) && !index.far.contains_key(&b) {
                files.retire_bucket(&mut index, b)?;
            }
        }
        // Far buckets: count the matches (the tombstone cancels them when they load).
        let mut far = 0usize;
        let buckets: Vec<i64> = index.far.keys().copied().collect();
        for b in buckets {
            let entries = files.store.read(b).map_err(|e| e.to_string())?;
            let n = entries
                .iter()
                .filter(|e| {
                    e.2 == hash && !index.done.contains(&e.1) && !index.tombstoned(e.1, e.2)
                })
                .count();
            if let Some((count, _)) = index.far.get_mut(&b) {
                *count = count.saturating_sub(n as u64);
            }
            far += n;
        }
        let n = offsets.len() + far;
        let unindexed = index.indexed_to < partition.log_end_offset();
        drop(index);
        if n == 0 && !unindexed {
            return Ok(CancelOutcome::NotFound);
        }
        let bytes = crate::records::encode_batch(
            vec![crate::records::record(
                Some(Bytes::copy_from_slice(key)),
                None,
                Default::default(),
                now_ms(),
            )],
            now_ms(),
        )?;
        partition.append(bytes).map_err(|e| e.message)?;
        self.cancelled.fetch_add(n as u64, Ordering::Relaxed);
        Ok(if n == 0 {
            CancelOutcome::NotFound
        } else {
            CancelOutcome::Cancelled(n)
        })
    }

    /// Pending (offset, due, key hash) in due order, due in [from, to), matching `key` if given,
    /// at most `limit` (window first, then far buckets read from disk).
    pub fn list(
        &self,
        partition: &Partition,
        key: Option<&[u8]>,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, i64, u64)>, String> {
        let want = key.map(|k| key_hash(Some(k)));
        let files = self.files(partition)?; // before the index lock: it takes it too
        let index = self.index.lock();
        let mut out: Vec<(i64, i64, u64)> = index
            .by_due
            .range((from_ms, i64::MIN)..(to_ms, i64::MIN))
            .filter_map(|(due, offset)| {
                let e = index.by_offset.get(offset)?;
                (want.is_none() || want == Some(e.key_hash)).then_some((*offset, *due, e.key_hash))
            })
            .take(limit)
            .collect();
        if out.len() < limit {
            for (b, _) in index.far.range(index.bucket_of(from_ms)..) {
                if b * index.bucket_ms >= to_ms || out.len() >= limit {
                    break;
                }
                let mut entries: Vec<DueEntry> = files
                    .store
                    .read(*b)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|(due, o, h)| {
                        *due >= from_ms
                            && *due < to_ms
                            && !index.done.contains(o)
                            && !index.tombstoned(*o, *h)
                            && (want.is_none() || want == Some(*h))
                    })
                    .collect();
                entries.sort_unstable();
                out.extend(
                    entries
                        .into_iter()
                        .map(|(due, o, h)| (o, due, h))
                        .take(limit - out.len()),
                );
            }
        }
        Ok(out)
    }

    /// The keys of records at `offsets` (ascending), read from the log.
    pub fn keys(
        partition: &Partition,
        offsets: &[i64],
    ) -> Result<HashMap<i64, Option<Bytes>>, String> {
        let mut out = HashMap::new();
        let mut batch: Vec<LogRecord> = Vec::new();
        for o in offsets {
            if !batch.iter().any(|r| r.offset == *o) {
                let bytes = partition.read_bytes(*o, 1).map_err(|e| e.message)?;
                batch = decode(bytes, 0)?;
            }
            if let Some(r) = batch.iter().find(|r| r.offset == *o) {
                out.insert(*o, r.record.key.clone());
            }
        }
        Ok(out)
    }

    /// Makes the far-bucket counts exact after tombstones or cancel markers were indexed while
    /// those buckets were on disk (reads their files; an admin-path cost, never the hot path).
    pub fn recount_far(&self, partition: &Partition) -> Result<(), String> {
        if !self.index.lock().far_stale {
            return Ok(());
        }
        let _round = self.forward_lock.lock();
        let files = self.files(partition)?;
        let mut index = self.index.lock();
        let buckets: Vec<i64> = index.far.keys().copied().collect();
        for b in buckets {
            let entries = files.store.read(b).map_err(|e| e.to_string())?;
            let n = entries
                .iter()
                .filter(|e| !index.done.contains(&e.1) && !index.tombstoned(e.1, e.2))
                .count() as u64;
            if let Some((count, _)) = index.far.get_mut(&b) {
                *count = n;
            }
        }
        index.far_stale = false;
        Ok(())
    }

    pub fn stats(&self, now: i64) -> DueStats {
        let pending = self.pending() as u64;
        let index = self.index.lock();
        let mut s = DueStats {
            pending,
            ..Default::default()
        };
        let count = |d: i64, n: u64, s: &mut DueStats| match d {
            d if d <= 0 => {
                s.overdue += n;
                s.oldest_overdue_ms = s.oldest_overdue_ms.max(-d);
            }
            d if d < 60_000 => s.within_1m += n,
            d if d < 3_600_000 => s.within_1h += n,
            d if d < 86_400_000 => s.within_1d += n,
            _ => s.later += n,
        };
        for (due, _) in &index.by_due {
            count(due - now, 1, &mut s);
        }
        for (b, (n, _)) in &index.far {
            count((b * index.bucket_ms - now).max(1), *n, &mut s);
        }
        s
    }
}

/// All delay partitions this broker forwards for.
#[derive(Default)]
pub struct DelayEngine {
    parts: Mutex<HashMap<(String, i32), Arc<DelayPartition>>>,
}

impl DelayEngine {
    pub fn partitions(&self) -> Vec<Arc<DelayPartition>> {
        self.parts.lock().values().cloned().collect()
    }

    /// The delay partitions of `topic`, by partition number.
    pub fn topic(&self, topic: &str) -> Vec<Arc<DelayPartition>> {
        let mut v: Vec<_> = self
            .parts
            .lock()
            .values()
            .filter(|p| p.topic == topic)
            .cloned()
            .collect();
        v.sort_by_key(|p| p.partition);
        v
    }
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct Checkpoint {
    /// The log is indexed (into the due store) below this offset.
    #[serde(default)]
    indexed_to: i64,
}

/// Runs delay forwarding for every delay topic until `shutdown`.
pub async fn run(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let mut tasks: HashMap<(String, i32), (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut stop = shutdown.clone();
    loop {
        let wanted: BTreeSet<(String, i32)> = broker
            .topics
            .all()
            .into_iter()
            .filter(|t| {
                t.configs.contains_key(DELAY_TARGET) || t.configs.contains_key(RETRY_TARGET)
            })
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
            // Forwarding runs where the partition is led; it moves with leadership.
            .filter(|(t, p)| broker.replicas.get(t, *p).is_some_and(|p| p.is_leader()))
            .collect();
        tasks.retain(|k, (tx, handle)| {
            let keep = wanted.contains(k) && !handle.is_finished();
            if !keep {
                let _ = tx.send(true);
                broker.delays.parts.lock().remove(k);
            }
            keep
        });
        for key in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let Some(partition) = broker.replicas.get(&key.0, key.1) else {
                continue;
            };
            let state = Arc::new(DelayPartition {
                topic: key.0.clone(),
                partition: key.1,
                index: Mutex::new(DueIndex::default()),
                forwarded: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                blocked: Mutex::new(None),
                forward_lock: Mutex::new(()),
                retry: Mutex::new(RetryCounters::default()),
                redis_pending: AtomicU64::new(0),
            });
            broker
                .delays
                .parts
                .lock()
                .insert(key.clone(), state.clone());
            let (tx, rx) = watch::channel(false);
            let b = broker.clone();
            let global = shutdown.clone();
            let handle = tokio::spawn(async move {
                let redis_url = b.config.retry_redis_url.clone();
                let info = b.topics.get(&state.topic);
                let retry = info
                    .as_ref()
                    .and_then(|t| Schedule::from_topic(t))
                    .filter(|s| matches!(s, Schedule::Retry { .. }));
                if let (Some(url), Some(Schedule::Retry { dlq, .. })) = (redis_url, retry) {
                    {
                        let mut r = state.retry.lock();
                        r.is_retry = true;
                        r.dlq_topic = dlq;
                    }
                    let mut task =
                        super::retry_redis::RedisRetryTask::new(b, partition, state, url);
                    task.run(rx, global).await;
                    return;
                }
                match PartitionTask::new(b, partition, state.clone()) {
                    Ok(mut task) => task.run(rx, global).await,
                    Err(e) => {
                        tracing::error!("delay {}-{}: {e}", state.topic, state.partition);
                        *state.blocked.lock() = Some(e);
                    }
                }
            });
            tasks.insert(key, (tx, handle));
        }
        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
    for (_, (tx, handle)) in tasks {
        let _ = tx.send(true);
        let _ = handle.await;
    }
}

/// One record of a log, decoded, with its batch's append time.
pub(crate) struct LogRecord {
    pub(crate) offset: i64,
    pub(crate) append_ms: i64,
    pub(crate) record: Record,
}

/// One read's worth (about `READ_BYTES_MAX`, whole batches) of the data records `tp` holds
/// from `offset` on, and the offset to read next (past the last batch read, so a read of only
/// control records still moves on); `None` once nothing is left.
pub(crate) fn read_from(
    tp: &Partition,
    offset: i64,
) -> Result<Option<(Vec<LogRecord>, i64)>, String> {
    let bytes = tp
        .read_bytes(offset, READ_BYTES_MAX)
        .map_err(|e| e.message)?;
    let (records, next) = decode_batches(bytes, offset, None)?;
    Ok((next > offset).then_some((records, next)))
}

/// Decoded data records and forward intents (with their offsets), and the offset to read next.
type RecordsAndIntents = (Vec<LogRecord>, Vec<(i64, Intent)>, i64);

/// Like [`read_from`], also returning the forward intents found.
fn read_with_intents(tp: &Partition, offset: i64) -> Result<Option<RecordsAndIntents>, String> {
    let bytes = tp
        .read_bytes(offset, READ_BYTES_MAX)
        .map_err(|e| e.message)?;
    let mut intents = Vec::new();
    let (records, next) = decode_batches(bytes, offset, Some(&mut intents))?;
    Ok((next > offset).then_some((records, intents, next)))
}

/// The data records of the whole batches in `bytes` from `from` on, and the offset to read next
/// (for bytes read elsewhere, e.g. fetched from another broker).
pub(crate) fn decode_from(bytes: Bytes, from: i64) -> Result<(Vec<LogRecord>, i64), String> {
    decode_batches(bytes, from, None)
}

/// Decodes whole batches from `bytes`; skips records below `from`.
fn decode(bytes: Bytes, from: i64) -> Result<Vec<LogRecord>, String> {
    Ok(decode_batches(bytes, from, None)?.0)
}

/// The data records of the whole batches in `bytes` from `from` on, and the offset after the
/// last of those batches (`from` when there is none). Control records are skipped, except
/// forward intents, collected into `intents` when given.
fn decode_batches(
    bytes: Bytes,
    from: i64,
    mut intents: Option<&mut Vec<(i64, Intent)>>,
) -> Result<(Vec<LogRecord>, i64), String> {
    let mut out = Vec::new();
    let mut next = from;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = BatchHeader::parse(&bytes[pos..]).map_err(|e| e.to_string())?;
        let end = pos + header.total_size();
        if end > bytes.len() {
            break;
        }
        let append_ms = header.max_timestamp;
        let mut slice = bytes.slice(pos..end);
        let set = RecordBatchDecoder::decode(&mut slice).map_err(|e| e.to_string())?;
        next = next.max(header.last_offset() + 1);
        for record in set.records {
            if record.offset >= from && record.control {
                if crate::records::control_type(&record) != Some(FORWARD_INTENT) {
                    continue;
                }
                let Some(intents) = intents.as_deref_mut() else {
                    continue;
                };
                match serde_json::from_slice::<Intent>(record.value.as_deref().unwrap_or_default())
                {
                    Ok(i) => intents.push((record.offset, i)),
                    // Written by a broker, so never expected; an unreadable one names nothing.
                    Err(e) => tracing::error!("forward intent at offset {}: {e}", record.offset),
                }
                continue;
            }
            if record.offset >= from {
                let log_append = header.is_log_append_time();
                let append_ms = if log_append {
                    append_ms
                } else {
                    record.timestamp
                };
                out.push(LogRecord {
                    offset: record.offset,
                    append_ms,
                    record,
                });
            }
        }
        pos = end;
    }
    Ok((out, next))
}

/// A header's value as text.
pub(crate) fn header_str(record: &Record, name: &str) -> Option<String> {
    record
        .headers
        .get(name.as_bytes())
        .and_then(|v| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

struct PartitionTask {
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    state: Arc<DelayPartition>,
    files: DelayFiles,
    checkpoint_dirty: bool,
    last_checkpoint: std::time::Instant,
    /// (offset range) → decoded records of the last batch read for forwarding.
    cache: Option<(i64, i64, Vec<LogRecord>)>,
    warned_target: Option<String>,
    deliverer: super::deliver::Deliverer,
    /// This task's idempotent producer and its sequences per target partition.
    stamper: super::deliver::Stamper,
    /// The last intent, while not every batch of it is known delivered, with the batches still
    /// to deliver (built from the log when the intent was found there).
    pending: Option<(Intent, Option<Vec<Undelivered>>)>,
    /// The log end when this task took over: nothing is forwarded before it is indexed.
    ready_at: i64,
}

impl PartitionTask {
    fn new(
        broker: Arc<Broker>,
        partition: Arc<Partition>,
        state: Arc<DelayPartition>,
    ) -> Result<Self, String> {
        let dir = partition.dir().to_path_buf();
        let store = DueStore::open(&dir, broker.config.kairos_delay_bucket_ms)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        state.index.lock().bucket_ms = store.bucket_ms();
        Ok(PartitionTask {
            broker: broker.clone(),
            partition,
            state,
            files: DelayFiles { dir, store },
            checkpoint_dirty: false,
            last_checkpoint: std::time::Instant::now(),
            cache: None,
            warned_target: None,
            deliverer: super::deliver::Deliverer::new(broker.clone()),
            stamper: super::deliver::Stamper::default(),
            pending: None,
            ready_at: 0,
        })
    }

    fn name(&self) -> String {
        format!("{}-{}", self.state.topic, self.state.partition)
    }

    /// The topic's current schedule (configs may change while running).
    fn schedule(&self) -> Option<Schedule> {
        let schedule = Schedule::from_topic(&*self.broker.topics.get(&self.state.topic)?)?;
        let mut r = self.state.retry.lock();
        r.is_retry = matches!(schedule, Schedule::Retry { .. });
        if let Schedule::Retry { dlq, .. } = &schedule {
            r.dlq_topic.clone_from(dlq);
        }
        Some(schedule)
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>, mut global: watch::Receiver<bool>) {
        self.ready_at = self.partition.log_end_offset();
        // The engine's steps read and write files: run them where blocking is allowed, so the
        // runtime's workers keep serving clients (recovery can take a while).
        if let Err(e) = tokio::task::block_in_place(|| self.recover()) {
            tracing::error!(
                "delay {}: recovery failed, forwarding paused: {e}",
                self.name()
            );
            *self.state.blocked.lock() = Some(format!("recovery failed: {e}"));
            let _ = stop.changed().await;
            return;
        }
        loop {
            let partition = self.partition.clone();
            // Records count once committed (below the HW), so the HW moving is the wake-up.
            let committed = partition.hw_moved().notified();
            tokio::pin!(committed);
            committed.as_mut().enable();
            let mut wait = IDLE_WAKE;
            let (indexed, forwarded) = tokio::task::block_in_place(|| {
                let indexed = self.index_new().and_then(|_| self.advance_window());
                (indexed, self.forward_due())
            });
            if let Err(e) = indexed {
                tracing::warn!("delay {}: indexing failed: {e}", self.name());
            }
            match forwarded {
                Ok(Some(next_due)) => {
                    let ms = (next_due - now_ms()).max(0) as u64;
                    wait = wait.min(Duration::from_millis(ms));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("delay {}: forwarding failed, retrying: {e}", self.name());
                    wait = Duration::from_millis(100);
                }
            }
            // Retention must keep everything from the oldest pending record on.
            self.partition.set_retention_floor(self.retention_floor());
            // No checkpoint past an unfinished intent: a restart must find it in the log tail.
            if self.checkpoint_dirty
                && self.pending.is_none()
                && self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
            {
                if let Err(e) = tokio::task::block_in_place(|| self.write_checkpoint()) {
                    tracing::warn!("delay {}: checkpoint failed: {e}", self.name());
                }
            }
            if self.checkpoint_dirty && self.pending.is_none() {
                wait = wait.min(CHECKPOINT_INTERVAL.saturating_sub(self.last_checkpoint.elapsed()));
            }
            tokio::select! {
                _ = &mut committed => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
                _ = global.changed() => break,
            }
        }
        if self.pending.is_some() {
            return;
        }
        if let Err(e) = self.write_checkpoint() {
            tracing::warn!("delay {}: final checkpoint failed: {e}", self.name());
        }
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.files.dir.join(CHECKPOINT_FILE)
    }

    /// Rebuilds the index from its files and the log's tail (with the intents in it).
    fn recover(&mut self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let checkpoint: Checkpoint = match std::fs::read(self.checkpoint_path()) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{CHECKPOINT_FILE}: {e}"))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(format!("{CHECKPOINT_FILE}: {e}")),
        };
        let indexed_to = checkpoint.indexed_to.max(self.partition.log_start_offset());
        // Fixed-size entries appended without a frame: a crash mid-append leaves a partial last
        // entry, cut here so later appends stay aligned (as `DueStore` does for bucket files).
        let read = |name: &str, entry_bytes: usize| -> Result<Vec<u8>, String> {
            let path = self.files.dir.join(name);
            let mut bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(format!("{name}: {e}")),
            };
            let whole = bytes.len() - bytes.len() % entry_bytes;
            if whole != bytes.len() {
                tracing::warn!(
                    "{}: cutting a torn last entry ({} bytes)",
                    path.display(),
                    bytes.len() - whole
                );
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(whole as u64))
                    .map_err(|e| format!("{name}: {e}"))?;
                bytes.truncate(whole);
            }
            Ok(bytes)
        };
        let u64s = |bytes: &[u8]| -> Vec<u64> {
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        };
        let mut index = DueIndex {
            indexed_to,
            bucket_ms: self.files.store.bucket_ms(),
            ..Default::default()
        };
        let window_ms = self.broker.config.kairos_delay_window_ms;
        // 1. Done offsets and tombstones.
        for v in u64s(&read(DONE_FILE, 8)?) {
            let offset = (v & !DONE_CANCELLED) as i64;
            index.done.insert(offset);
            if v & DONE_CANCELLED == 0 {
                index.delivered_recent.insert(offset);
            }
        }
        while index.delivered_recent.len() > RECENT_DELIVERED_MAX {
            index.delivered_recent.pop_first();
        }
        let tombs = u64s(&read(TOMBSTONES_FILE, 16)?);
        // Every tombstone written, also those past the checkpoint: each is in the log, and the
        // bucket files below must be filtered by all of them (re-indexing the tail would apply
        // the newer ones too late for the far-bucket counts).
        for pair in tombs.chunks_exact(2) {
            let (hash, offset) = (pair[0], pair[1] as i64);
            let t = index.tombstones.entry(hash).or_insert(offset);
            *t = (*t).max(offset);
        }
        // 2. Bucket files: cut what was indexed after the checkpoint, load the near ones.
        index.window_bucket = index.bucket_of(now_ms() + window_ms) + 1;
        for b in self.files.store.buckets().map_err(|e| e.to_string())? {
            let entries = self
                .files
                .store
                .truncate_from(b, indexed_to)
                .map_err(|e| e.to_string())?;
            // Entries a tombstone cancelled become done: the tombstone may be pruned later,
            // the bucket file still lists them.
            let cancelled: Vec<(i64, bool)> = entries
                .iter()
                .filter(|(_, o, h)| !index.done.contains(o) && index.tombstoned(*o, *h))
                .map(|(_, o, _)| (*o, true))
                .collect();
            self.files.mark_done(&mut index, &cancelled, &[])?;
            let live: Vec<DueEntry> = entries
                .into_iter()
                .filter(|(_, o, _)| !index.done.contains(o))
                .collect();
            if live.is_empty() {
                self.files.retire_bucket(&mut index, b)?;
            } else if b < index.window_bucket {
                for (due, o, h) in live {
                    index.insert_window(o, due, h, None);
                }
            } else {
                let min = live.iter().map(|e| e.1).min().unwrap_or(i64::MAX);
                index.far.insert(b, (live.len() as u64, min));
            }
        }
        *self.state.index.lock() = index;
        // 3. The log's tail, with the forward intents written after the checkpoint.
        self.index_new()?;
        let pending = self.state.pending();
        tracing::info!(
            "delay {}: recovered {pending} pending in {} ms (indexed from {indexed_to}{})",
            self.name(),
            started.elapsed().as_millis(),
            if self.pending.is_some() {
                ", completing the last forward intent"
            } else {
                ""
            }
        );
        self.checkpoint_dirty = true;
        Ok(())
    }

    /// Indexes records appended since the last call: entries to the due store, near ones to
    /// memory; applies tombstones and cancel markers.
    fn index_new(&mut self) -> Result<(), String> {
        let Some(schedule) = self.schedule() else {
            return Ok(());
        };
        let mut indexed_to = {
            let mut index = self.state.index.lock();
            index.indexed_to = index.indexed_to.max(self.partition.log_start_offset());
            index.indexed_to
        };
        while indexed_to < self.partition.high_watermark() {
            let Some((records, intents, next)) = read_with_intents(&self.partition, indexed_to)?
            else {
                break;
            };
            let now = now_ms();
            let mut new_entries: Vec<DueEntry> = Vec::new();
            let mut done: Vec<(i64, bool)> = Vec::new();
            let mut emptied = Vec::new();
            let mut index = self.state.index.lock();
            for r in records {
                if let Some(target) = header_str(&r.record, headers::CANCEL_OFFSET) {
                    // A cancel marker (admin Cancel by offset): never forwarded itself.
                    index.far_stale |= !index.far.is_empty();
                    if let Ok(o) = target.parse::<i64>() {
                        if let Some((_, e)) = index.remove(o) {
                            emptied.extend(e);
                        }
                        if !index.done.contains(&o) {
                            done.push((o, true));
                        }
                    }
                    continue;
                }
                let hash = key_hash(r.record.key.as_deref());
                if r.record.value.is_none() && hash != 0 {
                    // A tombstone: cancels this key's pending records below it.
                    index.far_stale |= !index.far.is_empty();
                    let t = index.tombstones.entry(hash).or_insert(r.offset);
                    *t = (*t).max(r.offset);
                    self.files.append_tombstone(hash, r.offset)?;
                    let offsets: Vec<i64> = index
                        .by_key
                        .get(&hash)
                        .map(|v| v.iter().copied().filter(|o| *o < r.offset).collect())
                        .unwrap_or_default();
                    for o in &offsets {
                        if let Some((_, e)) = index.remove(*o) {
                            emptied.extend(e);
                        }
                    }
                    self.state
                        .cancelled
                        .fetch_add(offsets.len() as u64, Ordering::Relaxed);
                    continue;
                }
                if index.done.contains(&r.offset) {
                    continue;
                }
                let due_ms = schedule
                    .due_ms(&r.record, r.append_ms, r.offset)
                    .unwrap_or_else(|e| {
                        // Validated at produce; a record written before the topic became a delay
                        // topic may still carry junk: deliver it at once.
                        tracing::warn!(
                            "delay {}-{} offset {}: {e}; due now",
                            self.state.topic,
                            self.state.partition,
                            r.offset
                        );
                        r.append_ms
                    });
                if matches!(schedule, Schedule::Retry { .. }) {
                    self.state.retry.lock().scheduled += 1;
                }
                new_entries.push((due_ms, r.offset, hash));
                let bucket = index.bucket_of(due_ms);
                if bucket < index.window_bucket {
                    let payload = (due_ms - now <= PAYLOAD_HORIZON_MS
                        && index.payload_bytes < PAYLOAD_BYTES_MAX)
                        .then(|| owned_payload(r.append_ms, &r.record));
                    index.insert_window(r.offset, due_ms, hash, payload);
                } else {
                    let far = index.far.entry(bucket).or_insert((0, r.offset));
                    far.0 += 1;
                    far.1 = far.1.min(r.offset);
                }
            }
            // Forward intents (each after the records it names): their offsets are forwarded,
            // by whoever wrote them or, for the last one if unfinished, by this task.
            for (_, intent) in intents {
                if matches!(&self.pending, Some((p, _)) if *p == intent) {
                    continue; // this task's own unfinished intent, now committed
                }
                // A later intent means the one before it was finished (one at a time): its
                // offsets are done.
                if let Some((earlier, _)) = self.pending.take() {
                    for o in earlier.batches.iter().flat_map(|b| b.offsets.iter()) {
                        if !index.done.contains(o) {
                            done.push((*o, false));
                        }
                    }
                }
                let mut unfinished = false;
                for o in intent.batches.iter().flat_map(|b| b.offsets.iter()) {
                    if let Some((_, e)) = index.remove(*o) {
                        emptied.extend(e);
                    }
                    unfinished |= !index.done.contains(o);
                }
                index.far_stale |= !index.far.is_empty();
                if unfinished {
                    self.pending = Some((intent, None));
                }
            }
            // The due store first: a crash after this and before the checkpoint re-indexes
            // the same records (recovery cuts their entries and writes them again).
            self.files
                .store
                .append(&new_entries)
                .map_err(|e| e.to_string())?;
            self.files.mark_done(&mut index, &done, &emptied)?;
            indexed_to = next;
            index.indexed_to = indexed_to;
            drop(index);
            self.checkpoint_dirty = true;
        }
        Ok(())
    }

    /// Loads far buckets that came within the window.
    fn advance_window(&mut self) -> Result<(), String> {
        let mut index = self.state.index.lock();
        let target_bucket =
            index.bucket_of(now_ms() + self.broker.config.kairos_delay_window_ms) + 1;
        if target_bucket <= index.window_bucket {
            return Ok(());
        }
        let due: Vec<i64> = index.far.range(..target_bucket).map(|(b, _)| *b).collect();
        for b in due {
            index.far.remove(&b);
            let entries = self.files.store.read(b).map_err(|e| e.to_string())?;
            let mut live = 0;
            let mut cancelled = Vec::new();
            for (due_ms, o, h) in entries {
                if index.done.contains(&o) {
                    continue;
                }
                if index.tombstoned(o, h) {
                    // Done on disk too: the tombstone may be pruned before the file goes.
                    cancelled.push((o, true));
                    continue;
                }
                index.insert_window(o, due_ms, h, None);
                live += 1;
            }
            self.state
                .cancelled
                .fetch_add(cancelled.len() as u64, Ordering::Relaxed);
            self.files.mark_done(&mut index, &cancelled, &[])?;
            if live == 0 {
                self.files.retire_bucket(&mut index, b)?;
            }
        }
        index.window_bucket = target_bucket;
        Ok(())
    }

    /// The record at `offset`, from the last decoded batch or the log.
    fn record_at(&mut self, offset: i64) -> Result<Option<(i64, Record)>, String> {
        if offset < self.partition.log_start_offset() {
            return Ok(None); // deleted (DeleteRecords): a read there is out of range
        }
        let hit = matches!(&self.cache, Some((lo, hi, _)) if (*lo..=*hi).contains(&offset));
        if !hit {
            let bytes = self
                .partition
                .read_bytes(offset, 1)
                .map_err(|e| e.message)?;
            let records = decode(bytes, 0)?;
            let (Some(lo), Some(hi)) = (
                records.first().map(|r| r.offset),
                records.last().map(|r| r.offset),
            ) else {
                return Ok(None);
            };
            self.cache = Some((lo, hi, records));
        }
        Ok(self
            .cache
            .as_ref()
            .and_then(|(_, _, rs)| rs.iter().find(|r| r.offset == offset))
            .map(|r| (r.append_ms, r.record.clone())))
    }

    /// Forwards every due record; returns the next due time still pending.
    fn forward_due(&mut self) -> Result<Option<i64>, String> {
        let Some(schedule) = self.schedule() else {
            return Ok(None);
        };
        // Intents the previous leader wrote may sit above the HW: forward only once everything
        // this task found in the log on taking over is committed and indexed, so they are seen.
        if self.state.index.lock().indexed_to < self.ready_at {
            return Ok(Some(now_ms() + 50));
        }
        self.complete_pending(&schedule)?;
        loop {
            let state = self.state.clone();
            let round = state.forward_lock.lock();
            let now = now_ms();
            let due = self.state.index.lock().due(now, FORWARD_BATCH_RECORDS_MAX);
            if due.is_empty() {
                *self.state.blocked.lock() = None;
                return Ok(self.state.index.lock().next_due());
            }
            // Every destination must exist; otherwise due records wait (nothing is dropped).
            let mut partitions_of: BTreeMap<String, i32> = BTreeMap::new();
            let mut missing_topic = None;
            for t in schedule.destinations() {
                match self.broker.topics.get(&t) {
                    Some(info) => {
                        partitions_of.insert(t, info.partitions);
                    }
                    None => missing_topic = Some(t),
                }
            }
            if let Some(target) = missing_topic {
                let why = format!(
                    "target topic {target} does not exist; {} due record(s) wait",
                    due.len()
                );
                if self.warned_target.as_deref() != Some(&target) {
                    tracing::warn!("delay {}: {why}", self.name());
                    self.warned_target = Some(target.clone());
                }
                *self.state.blocked.lock() = Some(why);
                // Look again soon; nothing is dropped.
                return Ok(Some(now + 1000));
            };
            self.warned_target = None;
            // Due records with their content: kept in the index, else read from the log in
            // offset order (consecutive offsets share a decoded batch).
            let mut resolved: Vec<(i64, i64, i64, Record)> = Vec::with_capacity(due.len());
            let mut missing = Vec::new();
            {
                let index = self.state.index.lock();
                for (due_ms, offset) in &due {
                    match index.by_offset.get(offset).and_then(|p| p.payload.as_ref()) {
                        Some((payload, _)) => {
                            resolved.push((*due_ms, *offset, payload.0, payload.1.clone()))
                        }
                        None => missing.push((*offset, *due_ms)),
                    }
                }
            }
            missing.sort_unstable();
            let mut gone = Vec::new();
            for (offset, due_ms) in missing {
                match self.record_at(offset)? {
                    Some((append_ms, record)) => resolved.push((due_ms, offset, append_ms, record)),
                    // Gone from the log (DeleteRecords): nothing to forward.
                    None => gone.push((offset, true)),
                }
            }
            if !gone.is_empty() {
                let mut index = self.state.index.lock();
                let mut emptied = Vec::new();
                for (o, _) in &gone {
                    if let Some((_, e)) = index.remove(*o) {
                        emptied.extend(e);
                    }
                }
                self.files.mark_done(&mut index, &gone, &emptied)?;
            }
            // Forward in due order (and offset order among equal due times: a fixed-delay topic
            // keeps its partition order).
            resolved.sort_unstable_by_key(|(due_ms, offset, _, _)| (*due_ms, *offset));
            let mut batches: BTreeMap<(String, i32), ForwardBatch> = BTreeMap::new();
            for (due_ms, offset, append_ms, mut record) in resolved {
                let (dest, attempt) = schedule.route(
                    &mut record,
                    &self.state.topic,
                    self.state.partition,
                    offset,
                    append_ms,
                );
                let partitions = partitions_of.get(&dest).copied().unwrap_or(1).max(1);
                let target_partition =
                    partition_for(record.key.as_deref(), self.state.partition, partitions);
                let size = record.key.as_ref().map_or(0, |k| k.len())
                    + record.value.as_ref().map_or(0, |v| v.len())
                    + record
                        .headers
                        .iter()
                        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 8)
                        .sum::<usize>()
                    + 32;
                let entry = batches.entry((dest, target_partition)).or_default();
                if entry.2 + size > FORWARD_BATCH_BYTES_MAX && !entry.0.is_empty() {
                    break;
                }
                entry.0.push(record);
                entry.1.push((offset, due_ms, attempt));
                entry.2 += size;
            }
            if batches.is_empty() {
                continue;
            }
            // One intent for all of this round's batches, committed in the delay partition
            // before any of them is appended to its target.
            let (producer_id, producer_epoch) =
                tokio::runtime::Handle::current().block_on(self.stamper.producer(&self.broker))?;
            let mut intent = Intent {
                producer_id,
                producer_epoch,
                batches: Vec::with_capacity(batches.len()),
            };
            let mut undelivered = Vec::with_capacity(batches.len());
            for ((target, partition), (records, sources, _)) in batches {
                let base_sequence = self.stamper.take(&target, partition, records.len());
                let batch = crate::records::encode_batch_as(
                    records,
                    now_ms(),
                    Some((producer_id, producer_epoch, base_sequence)),
                )?;
                intent.batches.push(IntentBatch {
                    target: target.clone(),
                    partition,
                    base_sequence,
                    offsets: sources.iter().map(|s| s.0).collect(),
                });
                undelivered.push(Undelivered {
                    target,
                    partition,
                    batch,
                    sources,
                });
            }
            if let Err(e) = self.write_intent(&intent) {
                // The sequences just taken may or may not be in a committed intent (a timeout
                // can still commit later, and that intent will be completed as found): later
                // batches start over with a new producer id, so none can collide with them.
                self.stamper.reset();
                return Err(e);
            }
            // Claimed: out of the due index (a cancel no longer finds them), done once
            // delivered. A bucket file emptied here may go: should this broker stop first, the
            // intent itself names the offsets to send again.
            let claimed: Vec<i64> = intent
                .batches
                .iter()
                .flat_map(|b| b.offsets.iter().copied())
                .collect();
            self.pending = Some((intent, Some(undelivered)));
            {
                let mut index = self.state.index.lock();
                let mut emptied = Vec::new();
                for o in claimed {
                    if let Some((_, e)) = index.remove(o) {
                        emptied.extend(e);
                    }
                }
                self.files.mark_done(&mut index, &[], &emptied)?;
            }
            drop(round);
            self.complete_pending(&schedule)?;
        }
    }

    /// Appends `intent` to the delay partition and waits until it is committed.
    fn write_intent(&self, intent: &Intent) -> Result<(), String> {
        let value = serde_json::to_vec(intent).map_err(|e| e.to_string())?;
        let bytes = crate::records::encode_control(FORWARD_INTENT, Bytes::from(value), now_ms())?;
        let r = self
            .partition
            .append_control(bytes)
            .map_err(|e| format!("writing a forward intent: {}", e.message))?;
        let deadline = tokio::time::Instant::now() + INTENT_COMMIT_TIMEOUT;
        tokio::runtime::Handle::current()
            .block_on(
                self.partition
                    .wait_replicated(r.last_offset, r.leader_epoch, deadline),
            )
            .map_err(|code| format!("forward intent not committed (error {code})"))
    }

    /// Delivers what is left of the pending intent (building its batches from the log when it
    /// was found there), marking each delivered batch's offsets done. On any error the intent
    /// stays pending with what is left of it.
    fn complete_pending(&mut self, schedule: &Schedule) -> Result<(), String> {
        let Some((intent, built)) = self.pending.take() else {
            return Ok(());
        };
        let mut undelivered = match built {
            Some(u) => std::collections::VecDeque::from(u),
            None => match self.rebuild(&intent, schedule) {
                Ok(u) => u.into(),
                Err(e) => {
                    self.pending = Some((intent, None));
                    return Err(e);
                }
            },
        };
        while let Some(next) = undelivered.front() {
            let delivered = tokio::runtime::Handle::current().block_on(self.deliverer.deliver(
                &next.target,
                next.partition,
                next.batch.clone(),
            ));
            let result = delivered.and_then(|()| {
                let sources = std::mem::take(&mut undelivered[0].sources);
                self.mark_delivered(&sources)
            });
            if let Err(e) = result {
                *self.state.blocked.lock() = Some(e.clone());
                self.pending = Some((intent, Some(undelivered.into())));
                return Err(e);
            }
            undelivered.pop_front();
        }
        *self.state.blocked.lock() = None;
        Ok(())
    }

    /// The batches of an intent found in the log, read back from the source records. A batch
    /// with a record gone from the log (DeleteRecords, retention) can no longer be rebuilt as it
    /// was sent: its offsets are marked done and it is left out. That gives up its records still
    /// in the log too; sending those as a new batch would not lose them but could deliver them
    /// twice (the first send may have landed), so it is a choice, not an accident.
    fn rebuild(
        &mut self,
        intent: &Intent,
        schedule: &Schedule,
    ) -> Result<Vec<Undelivered>, String> {
        let mut out = Vec::with_capacity(intent.batches.len());
        'batches: for b in &intent.batches {
            let mut records = Vec::with_capacity(b.offsets.len());
            let mut sources = Vec::with_capacity(b.offsets.len());
            for o in &b.offsets {
                let Some((append_ms, mut record)) = self.record_at(*o)? else {
                    tracing::error!(
                        "delay {}: offset {o} of an unfinished forward intent is gone from the log; \
                         its batch to {}-{} is not sent again",
                        self.name(),
                        b.target,
                        b.partition
                    );
                    let gone: Vec<(i64, bool)> = b.offsets.iter().map(|o| (*o, true)).collect();
                    let mut index = self.state.index.lock();
                    self.files.mark_done(&mut index, &gone, &[])?;
                    continue 'batches;
                };
                let due_ms = schedule.due_ms(&record, append_ms, *o).unwrap_or(append_ms);
                let (_, attempt) = schedule.route(
                    &mut record,
                    &self.state.topic,
                    self.state.partition,
                    *o,
                    append_ms,
                );
                records.push(record);
                sources.push((*o, due_ms, attempt));
            }
            let batch = crate::records::encode_batch_as(
                records,
                now_ms(),
                Some((intent.producer_id, intent.producer_epoch, b.base_sequence)),
            )?;
            out.push(Undelivered {
                target: b.target.clone(),
                partition: b.partition,
                batch,
                sources,
            });
        }
        Ok(out)
    }

    /// Records a delivered batch's sources as done (files, metrics, counters).
    fn mark_delivered(&mut self, sources: &[(i64, i64, Option<i64>)]) -> Result<(), String> {
        let now = now_ms();
        let mut index = self.state.index.lock();
        let mut emptied = Vec::new();
        let mut done = Vec::with_capacity(sources.len());
        for (offset, due_ms, attempt) in sources {
            if let Some((_, e)) = index.remove(*offset) {
                emptied.extend(e);
            }
            done.push((*offset, false));
            self.state
                .count_delivery(*attempt, now - due_ms, &self.broker.metrics);
        }
        self.files.mark_done(&mut index, &done, &emptied)?;
        drop(index);
        self.state
            .forwarded
            .fetch_add(sources.len() as u64, Ordering::Relaxed);
        self.checkpoint_dirty = true;
        Ok(())
    }

    /// The lowest offset retention must keep: the oldest pending record, or the oldest one of
    /// an unfinished intent (claimed, out of the index, not delivered yet).
    fn retention_floor(&self) -> i64 {
        let claimed = self
            .pending
            .iter()
            .flat_map(|(i, _)| i.batches.iter().flat_map(|b| b.offsets.iter().copied()))
            .min()
            .unwrap_or(i64::MAX);
        self.state.index.lock().low_water().min(claimed)
    }

    fn write_checkpoint(&mut self) -> Result<(), String> {
        let (indexed_to, low_water) = {
            let index = self.state.index.lock();
            (index.indexed_to, index.low_water())
        };
        let checkpoint = Checkpoint { indexed_to };
        let bytes = serde_json::to_vec(&checkpoint).map_err(|e| e.to_string())?;
        rewrite(&self.checkpoint_path(), &bytes)?;
        self.compact_files(low_water)?;
        self.partition.set_retention_floor(low_water);
        self.checkpoint_dirty = false;
        self.last_checkpoint = std::time::Instant::now();
        Ok(())
    }

    /// Rewrites the done and tombstone files when most of their entries are no longer needed.
    fn compact_files(&mut self, low_water: i64) -> Result<(), String> {
        let dir = &self.files.dir;
        let size = |name: &str| {
            std::fs::metadata(dir.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let mut index = self.state.index.lock();
        // Tombstones below the low water cancel nothing any more.
        index.tombstones.retain(|_, t| *t >= low_water);
        let live_tombs = index.tombstones.len() as u64 * 16;
        if size(TOMBSTONES_FILE) > 4096 && size(TOMBSTONES_FILE) > 2 * live_tombs {
            let bytes: Vec<u8> = index
                .tombstones
                .iter()
                .flat_map(|(h, o)| h.to_be_bytes().into_iter().chain(o.to_be_bytes()))
                .collect();
            rewrite(&dir.join(TOMBSTONES_FILE), &bytes)?;
        }
        let live_done = (index.done.len() + index.delivered_recent.len()) as u64 * 8;
        if size(DONE_FILE) > 4096 && size(DONE_FILE) > 2 * live_done {
            let mut bytes = Vec::with_capacity(live_done as usize);
            for o in &index.done {
                let cancelled = !index.delivered_recent.contains(o);
                bytes.extend_from_slice(
                    &(*o as u64 | if cancelled { DONE_CANCELLED } else { 0 }).to_be_bytes(),
                );
            }
            for o in index
                .delivered_recent
                .iter()
                .filter(|o| !index.done.contains(o))
            {
                bytes.extend_from_slice(&(*o as u64).to_be_bytes());
            }
            rewrite(&dir.join(DONE_FILE), &bytes)?;
        }
        Ok(())
    }
}

/// Replaces `path` through a temporary file and a rename, fsynced (`checkpoint::write_atomic`),
/// with the path in the error.
pub(crate) fn rewrite(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    crate::log::checkpoint::write_atomic(path, bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Records bound for one target partition: the records, their (source offset, due time), and
/// their estimated bytes.
type ForwardBatch = (Vec<Record>, Vec<(i64, i64, Option<i64>)>, usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_entries_order_by_due_and_track_their_buckets() {
        let mut ix = DueIndex {
            window_bucket: i64::MAX,
            bucket_ms: 60_000,
            ..Default::default()
        };
        ix.insert_window(0, 500, 7, None);
        ix.insert_window(1, 100, 8, None);
        ix.insert_window(2, 300, 7, None);
        ix.insert_window(3, 70_000, 0, None);
        assert_eq!(ix.due(350, 10), vec![(100, 1), (300, 2)]);
        assert_eq!(ix.next_due(), Some(100));
        assert_eq!(ix.low_water(), 0);
        assert_eq!(ix.loaded.get(&0), Some(&3));
        let (_, emptied) = ix.remove(3).unwrap();
        assert_eq!(emptied, Some(1), "bucket 1 has no pending entry left");
        ix.far.insert(5, (10, 42));
        assert_eq!(ix.len(), 13);
        assert_eq!(ix.next_due(), Some(100));
        ix.tombstones.insert(7, 2);
        assert!(ix.tombstoned(0, 7) && !ix.tombstoned(2, 7) && !ix.tombstoned(0, 0));
    }

    /// Proves a broker that takes over a delay partition completes the last forward intent it
    /// finds in the log exactly once: resent when the target never got it, answered as a
    /// duplicate (nothing appended) when the target already holds it, and given up (without
    /// stalling what comes after) when a record it names was deleted meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_intent_is_completed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::server::test_config(dir.path(), 1);
        let metrics = Arc::new(crate::metrics::Metrics::new(|_| true).unwrap());
        let broker = crate::server::open_standalone(&config, metrics)
            .await
            .unwrap();
        // delivered: the target got the intent's batch before the "crash"; lost: it did not.
        for (delay, target) in [("delivered", "t1"), ("lost", "t2"), ("deleted", "t3")] {
            broker
                .create_topic(target, 1, 1, Default::default(), None)
                .await
                .unwrap();
            let configs = [
                (DELAY_TARGET.to_string(), target.to_string()),
                (DELAY_MS.to_string(), "0".to_string()),
            ];
            broker
                .create_topic(delay, 1, 1, configs.into_iter().collect(), None)
                .await
                .unwrap();
            let d = broker.replicas.get(delay, 0).unwrap();
            let records: Vec<Record> = ["a", "b", "c"]
                .iter()
                .map(|k| {
                    crate::records::record(
                        Some(Bytes::from(k.to_string())),
                        Some(Bytes::from_static(b"v")),
                        Default::default(),
                        now_ms(),
                    )
                })
                .collect();
            d.append(crate::records::encode_batch(records, now_ms()).unwrap())
                .unwrap();
            let producer_id = broker.producer_ids.next(&broker.topics).await.unwrap();
            let intent = Intent {
                producer_id,
                producer_epoch: 0,
                batches: vec![IntentBatch {
                    target: target.into(),
                    partition: 0,
                    base_sequence: 0,
                    offsets: vec![0, 1],
                }],
            };
            let value = Bytes::from(serde_json::to_vec(&intent).unwrap());
            // Clients cannot write intents (or any control batch): only the broker can.
            let forged = crate::records::encode_control(FORWARD_INTENT, value.clone(), 0).unwrap();
            assert_eq!(
                d.append(forged).err().map(|e| e.code),
                Some(87),
                "INVALID_RECORD"
            );
            d.append_control(
                crate::records::encode_control(FORWARD_INTENT, value, now_ms()).unwrap(),
            )
            .unwrap();
            if delay == "deleted" {
                d.delete_records_before(1).unwrap();
            }
            if delay == "delivered" {
                let schedule = Schedule::from_topic(&broker.topics.get(delay).unwrap()).unwrap();
                let bytes = d.read_bytes(0, 1 << 20).unwrap();
                let mut sent: Vec<Record> = decode(bytes, 0).unwrap()[..2]
                    .iter()
                    .map(|r| {
                        let mut rec = r.record.clone();
                        schedule.route(&mut rec, delay, 0, r.offset, r.append_ms);
                        rec
                    })
                    .collect();
                sent.iter_mut().for_each(|r| r.timestamp = now_ms());
                let batch =
                    crate::records::encode_batch_as(sent, now_ms(), Some((producer_id, 0, 0)))
                        .unwrap();
                broker
                    .replicas
                    .get(target, 0)
                    .unwrap()
                    .append(batch)
                    .unwrap();
            }
        }
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(run(broker.clone(), shutdown));
        for (target, want) in [
            ("t1", &["0", "1", "2"][..]),
            ("t2", &["0", "1", "2"]),
            ("t3", &["2"]),
        ] {
            let t = broker.replicas.get(target, 0).unwrap();
            // Forwarding runs in due order after the unfinished intent: once offset 2 (not in
            // the intent) is there, the intent was dealt with.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let origins = loop {
                let bytes = t.read_bytes(0, 1 << 20).unwrap();
                let origins: Vec<String> = decode(bytes, 0)
                    .unwrap()
                    .iter()
                    .filter_map(|r| header_str(&r.record, headers::ORIGINAL_OFFSET))
                    .collect();
                if origins.iter().any(|o| o == "2") {
                    break origins;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{target}: {origins:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(origins, want, "{target}: each record once");
        }
    }

    #[test]
    fn key_hash_is_stable_and_never_zero_for_a_key() {
        assert_eq!(key_hash(None), 0);
        assert_eq!(key_hash(Some(b"")), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(Some(b"a")), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(key_hash(Some(b"order-1")), key_hash(Some(b"order-2")));
    }
}
