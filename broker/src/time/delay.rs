//! The delay engine: delay topics (`kairos.delay.target`) forward each record to their target
//! when it is due, exactly once, unless a tombstone for its key came first.
//!
//! Per delay partition one task keeps a [`DueIndex`] of pending records, built by reading the
//! partition's own log (the records are the source of truth; nothing pending lives only in
//! memory). Due time = `kairos.deliver.at.ms`, else the append time (delay topics are stamped
//! with LogAppendTime) plus `kairos.delay.ms` from the header or the topic config.
//!
//! Exactly once across crashes:
//! 1. A due record is appended to its target partition with `kairos.original.topic|partition|
//!    offset|timestamp` headers; only after that append succeeded is its offset written to the
//!    partition's delivered file (`kairos-delay-delivered`, u64 big-endian offsets, append-only).
//! 2. A checkpoint (`kairos-delay-checkpoint.json`) records, after the delivered file is
//!    written, the low water (oldest offset still pending) and every target partition's log end.
//! 3. On start, the delivered set = the delivered file ∪ the origin offsets found in the target
//!    partitions after the checkpointed positions (a crash between 1's append and its file
//!    write leaves the record in the target: the scan finds it). The log is then re-indexed
//!    from the low water, skipping delivered offsets and applying tombstones again.
//!
//! Cancel: a tombstone (same key, null value) cancels every pending record with that key at a
//! lower offset. Retention never deletes at or above the low water (see `set_retention_floor`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::headers::{self, DueSpec};
use super::murmur2::partition_for_key;
use crate::log::batch::BatchHeader;
use crate::metadata::{DELAY_MS, DELAY_TARGET};
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
/// Checkpoints are written at most this often (and on shutdown); recovery re-reads the target
/// tails after the last one, so a longer interval only costs start-up time.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
const CHECKPOINT_FILE: &str = "kairos-delay-checkpoint.json";
/// Delivered offsets below the low water kept anyway, newest first, so a late Cancel can say
/// "already delivered" (correctness never depends on them).
const RECENT_DELIVERED_MAX: usize = 100_000;
const DELIVERED_FILE: &str = "kairos-delay-delivered";

/// Records due within this horizon keep their decoded content in memory (read once while
/// indexing); later ones are read back from the log when they come due.
const PAYLOAD_HORIZON_MS: i64 = 60_000;
/// Bound on the record bytes one partition keeps in memory.
const PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// A record's content kept for forwarding: (append time, record with owned bytes).
type Payload = Arc<(i64, Record)>;

/// One pending record.
#[derive(Debug, Clone)]
struct Pending {
    due_ms: i64,
    key: Option<Bytes>,
    payload: Option<(Payload, usize)>,
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

/// Pending records of one delay partition, by due time, offset and key.
#[derive(Default)]
pub struct DueIndex {
    by_due: BTreeSet<(i64, i64)>,
    by_offset: BTreeMap<i64, Pending>,
    by_key: HashMap<Bytes, BTreeSet<i64>>,
    payload_bytes: usize,
    /// Delivered offsets at or above the low water (mirrors the delivered file).
    delivered: BTreeSet<i64>,
    /// Next offset of the delay log to index.
    indexed_to: i64,
}

impl DueIndex {
    fn insert(
        &mut self,
        offset: i64,
        due_ms: i64,
        key: Option<Bytes>,
        payload: Option<(Payload, usize)>,
    ) {
        self.by_due.insert((due_ms, offset));
        if let Some(k) = &key {
            self.by_key.entry(k.clone()).or_default().insert(offset);
        }
        if let Some((_, size)) = &payload {
            self.payload_bytes += size;
        }
        self.by_offset.insert(
            offset,
            Pending {
                due_ms,
                key,
                payload,
            },
        );
    }

    fn remove(&mut self, offset: i64) -> Option<Pending> {
        let p = self.by_offset.remove(&offset)?;
        if let Some((_, size)) = &p.payload {
            self.payload_bytes -= size;
        }
        self.by_due.remove(&(p.due_ms, offset));
        if let Some(k) = &p.key {
            if let Some(set) = self.by_key.get_mut(k) {
                set.remove(&offset);
                if set.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
        Some(p)
    }

    /// Removes every pending record with `key` below `before`; returns how many.
    fn cancel_key(&mut self, key: &Bytes, before: i64) -> usize {
        let offsets: Vec<i64> = match self.by_key.get(key) {
            Some(set) => set.range(..before).copied().collect(),
            None => return 0,
        };
        for o in &offsets {
            self.remove(*o);
        }
        offsets.len()
    }

    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }

    fn oldest_offset(&self) -> Option<i64> {
        self.by_offset.keys().next().copied()
    }

    fn next_due(&self) -> Option<i64> {
        self.by_due.iter().next().map(|(d, _)| *d)
    }

    /// Offsets due at `now`, earliest first, at most `max`.
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

/// A record appended by the broker itself (cancel markers, tombstones, forwarded records).
fn broker_record(
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: indexmap::IndexMap<StrBytes, Option<Bytes>>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms(),
        key,
        value,
        headers,
        delete_horizon: false,
    }
}

impl DelayPartition {
    pub fn pending(&self) -> usize {
        self.index.lock().len()
    }

    /// Cancels the record at `offset`: removed from the index now, and a durable marker is
    /// appended to `partition` so a restart does not bring it back.
    pub fn cancel_offset(
        &self,
        partition: &Partition,
        offset: i64,
    ) -> Result<CancelOutcome, String> {
        let _round = self.forward_lock.lock();
        let mut index = self.index.lock();
        let removed = index.remove(offset).is_some();
        if !removed {
            if index.delivered.contains(&offset) {
                return Ok(CancelOutcome::AlreadyDelivered);
            }
            // Not indexed yet (just produced): the marker cancels it when indexing reaches it.
            let unindexed = offset >= index.indexed_to && offset < partition.log_end_offset();
            if !unindexed {
                return Ok(CancelOutcome::NotFound);
            }
        }
        drop(index);
        let mut headers = indexmap::IndexMap::new();
        headers.insert(
            StrBytes::from_static_str(headers::CANCEL_OFFSET),
            Some(Bytes::from(offset.to_string())),
        );
        let bytes = encode_batch(vec![broker_record(None, None, headers)], now_ms())?;
        partition.append(bytes).map_err(|e| e.message)?;
        if removed {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(CancelOutcome::Cancelled(1))
    }

    /// Cancels every pending record with `key` (as a tombstone produced now would), appending
    /// the tombstone for durability.
    pub fn cancel_key(&self, partition: &Partition, key: &[u8]) -> Result<CancelOutcome, String> {
        let _round = self.forward_lock.lock();
        let key = Bytes::copy_from_slice(key);
        let mut index = self.index.lock();
        let n = index.cancel_key(&key, i64::MAX);
        let unindexed = index.indexed_to < partition.log_end_offset();
        drop(index);
        if n == 0 && !unindexed {
            return Ok(CancelOutcome::NotFound);
        }
        let bytes = encode_batch(
            vec![broker_record(Some(key), None, Default::default())],
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

    /// Pending (offset, due, key), due order, filtered by key and due range [from, to).
    pub fn list(
        &self,
        key: Option<&[u8]>,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<(i64, i64, Option<Bytes>)> {
        let index = self.index.lock();
        index
            .by_due
            .range((from_ms, i64::MIN)..(to_ms, i64::MIN))
            .filter_map(|(due, offset)| {
                let p = index.by_offset.get(offset)?;
                match key {
                    Some(k) if p.key.as_deref() != Some(k) => None,
                    _ => Some((*offset, *due, p.key.clone())),
                }
            })
            .collect()
    }

    pub fn stats(&self, now: i64) -> DueStats {
        let index = self.index.lock();
        let mut s = DueStats {
            pending: index.len() as u64,
            ..Default::default()
        };
        for (due, _) in &index.by_due {
            let d = due - now;
            match d {
                d if d <= 0 => {
                    s.overdue += 1;
                    s.oldest_overdue_ms = s.oldest_overdue_ms.max(-d);
                }
                d if d < 60_000 => s.within_1m += 1,
                d if d < 3_600_000 => s.within_1h += 1,
                d if d < 86_400_000 => s.within_1d += 1,
                _ => s.later += 1,
            }
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
    /// Oldest offset that may still be pending; re-indexing starts here.
    low_water: i64,
    /// Target topic → partition → log end offset when the checkpoint was written.
    target_positions: BTreeMap<String, BTreeMap<i32, i64>>,
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
            .filter(|t| t.configs.contains_key(DELAY_TARGET))
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
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
                let mut task = PartitionTask::new(b, partition, state);
                task.run(rx, global).await;
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
struct LogRecord {
    offset: i64,
    append_ms: i64,
    record: Record,
}

/// Decodes whole batches from `bytes`; skips records below `from`.
fn decode(bytes: Bytes, from: i64) -> Result<Vec<LogRecord>, String> {
    let mut out = Vec::new();
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
        for record in set.records {
            if record.offset >= from && !record.control {
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
    Ok(out)
}

fn header_str(record: &Record, name: &str) -> Option<String> {
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
    dir: PathBuf,
    delivered_file: Option<std::fs::File>,
    checkpoint_dirty: bool,
    last_checkpoint: std::time::Instant,
    /// (offset range) → decoded records of the last batch read for forwarding.
    cache: Option<(i64, i64, Vec<LogRecord>)>,
    warned_target: Option<String>,
}

impl PartitionTask {
    fn new(broker: Arc<Broker>, partition: Arc<Partition>, state: Arc<DelayPartition>) -> Self {
        let dir = broker.config.log_dirs[0].join(format!("{}-{}", state.topic, state.partition));
        PartitionTask {
            broker,
            partition,
            state,
            dir,
            delivered_file: None,
            checkpoint_dirty: false,
            last_checkpoint: std::time::Instant::now(),
            cache: None,
            warned_target: None,
        }
    }

    fn name(&self) -> String {
        format!("{}-{}", self.state.topic, self.state.partition)
    }

    /// (target topic, topic default delay) from the current topic config.
    fn config(&self) -> Option<(String, i64)> {
        let info = self.broker.topics.get(&self.state.topic)?;
        let target = info.configs.get(DELAY_TARGET)?.trim().to_string();
        let delay = info
            .configs
            .get(DELAY_MS)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Some((target, delay))
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>, mut global: watch::Receiver<bool>) {
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
            let appended = partition.appended().notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let mut wait = IDLE_WAKE;
            let (indexed, forwarded) =
                tokio::task::block_in_place(|| (self.index_new(), self.forward_due()));
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
            self.partition.set_retention_floor(self.low_water());
            if self.checkpoint_dirty && self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                if let Err(e) = tokio::task::block_in_place(|| self.write_checkpoint()) {
                    tracing::warn!("delay {}: checkpoint failed: {e}", self.name());
                }
            }
            if self.checkpoint_dirty {
                wait = wait.min(CHECKPOINT_INTERVAL.saturating_sub(self.last_checkpoint.elapsed()));
            }
            tokio::select! {
                _ = &mut appended => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
                _ = global.changed() => break,
            }
        }
        if let Err(e) = self.write_checkpoint() {
            tracing::warn!("delay {}: final checkpoint failed: {e}", self.name());
        }
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    /// Rebuilds the delivered set and the due index (see the module doc).
    fn recover(&mut self) -> Result<(), String> {
        let checkpoint: Checkpoint = match std::fs::read(self.checkpoint_path()) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{CHECKPOINT_FILE}: {e}"))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint {
                low_water: self.partition.log_start_offset(),
                target_positions: BTreeMap::new(),
            },
            Err(e) => return Err(format!("{CHECKPOINT_FILE}: {e}")),
        };
        let low_water = checkpoint.low_water.max(self.partition.log_start_offset());
        // 1. The delivered file.
        match std::fs::read(self.dir.join(DELIVERED_FILE)) {
            Ok(bytes) => {
                for chunk in bytes.chunks_exact(8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    let offset = u64::from_be_bytes(b) as i64;
                    self.state.index.lock().delivered.insert(offset);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{DELIVERED_FILE}: {e}")),
        }
        // 2. Records this partition forwarded after the checkpoint, found in the targets.
        let mut targets = checkpoint.target_positions.clone();
        if let Some((target, _)) = self.config() {
            targets.entry(target).or_default();
        }
        let mut found = 0usize;
        for (topic, positions) in &targets {
            let Some(info) = self.broker.topics.get(topic) else {
                continue;
            };
            for p in 0..info.partitions {
                let Some(tp) = self.broker.replicas.get(topic, p) else {
                    continue;
                };
                let start = positions
                    .get(&p)
                    .copied()
                    .unwrap_or(0)
                    .max(tp.log_start_offset());
                found += self.scan_target(&tp, start, low_water)?;
            }
        }
        // 3. Rewrite the delivered file with what is still relevant, and re-index the log.
        self.rewrite_delivered_file()?;
        self.state.index.lock().indexed_to = low_water;
        self.index_new()?;
        let (pending, delivered) = {
            let index = self.state.index.lock();
            (index.len(), index.delivered.len())
        };
        tracing::info!(
            "delay {}: recovered {pending} pending from offset {low_water} ({delivered} delivered since, {found} found in targets)",
            self.name(),
        );
        self.checkpoint_dirty = true;
        Ok(())
    }

    /// Adds to `delivered` every origin offset of this partition found in `tp` from `start`.
    fn scan_target(&mut self, tp: &Partition, start: i64, low_water: i64) -> Result<usize, String> {
        let mut offset = start;
        let mut found = 0;
        while offset < tp.log_end_offset() {
            let bytes = tp
                .read_bytes(offset, READ_BYTES_MAX)
                .map_err(|e| e.message)?;
            if bytes.is_empty() {
                break;
            }
            let records = decode(bytes, offset)?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for r in records {
                let origin = (
                    header_str(&r.record, headers::ORIGINAL_TOPIC),
                    header_str(&r.record, headers::ORIGINAL_PARTITION),
                    header_str(&r.record, headers::ORIGINAL_OFFSET),
                );
                if let (Some(t), Some(p), Some(o)) = origin {
                    if t == self.state.topic && p == self.state.partition.to_string() {
                        if let Ok(o) = o.parse::<i64>() {
                            if o >= low_water && self.state.index.lock().delivered.insert(o) {
                                found += 1;
                            }
                        }
                    }
                }
            }
            offset = last + 1;
        }
        Ok(found)
    }

    fn rewrite_delivered_file(&mut self) -> Result<(), String> {
        let path = self.dir.join(DELIVERED_FILE);
        let tmp = self.dir.join(format!("{DELIVERED_FILE}.tmp"));
        let bytes: Vec<u8> = {
            let index = self.state.index.lock();
            index
                .delivered
                .iter()
                .flat_map(|o| (*o as u64).to_be_bytes())
                .collect()
        };
        std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        self.delivered_file = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| e.to_string())?,
        );
        Ok(())
    }

    /// Indexes records appended since the last call; applies tombstones.
    fn index_new(&mut self) -> Result<(), String> {
        let Some((_, topic_delay_ms)) = self.config() else {
            return Ok(());
        };
        let mut indexed_to = {
            let mut index = self.state.index.lock();
            index.indexed_to = index.indexed_to.max(self.partition.log_start_offset());
            index.indexed_to
        };
        while indexed_to < self.partition.log_end_offset() {
            let bytes = self
                .partition
                .read_bytes(indexed_to, READ_BYTES_MAX)
                .map_err(|e| e.message)?;
            if bytes.is_empty() {
                break;
            }
            let records = decode(bytes, indexed_to)?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            let mut index = self.state.index.lock();
            for r in records {
                if let Some(target) = header_str(&r.record, headers::CANCEL_OFFSET) {
                    // A cancel marker (gRPC Cancel by offset): never forwarded itself.
                    if let Ok(o) = target.parse::<i64>() {
                        if index.remove(o).is_some() {
                            self.state.cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                match (&r.record.key, &r.record.value) {
                    (Some(key), None) => {
                        let n = index.cancel_key(key, r.offset);
                        self.state.cancelled.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    _ if index.delivered.contains(&r.offset) => {}
                    _ => {
                        let spec = headers::due_spec(
                            r.record
                                .headers
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_deref())),
                        )
                        .unwrap_or_else(|e| {
                            // Validated at produce; a record written before the topic became a
                            // delay topic may still carry junk: deliver it at once.
                            tracing::warn!(
                                "delay {}-{} offset {}: {e}; due now",
                                self.state.topic,
                                self.state.partition,
                                r.offset
                            );
                            DueSpec::After(0)
                        });
                        let due_ms = spec.due_ms(r.append_ms, topic_delay_ms);
                        let payload = (due_ms - now_ms() <= PAYLOAD_HORIZON_MS
                            && index.payload_bytes < PAYLOAD_BYTES_MAX)
                            .then(|| owned_payload(r.append_ms, &r.record));
                        let key = payload
                            .as_ref()
                            .and_then(|(p, _)| p.1.key.clone())
                            .or_else(|| r.record.key.as_ref().map(|k| Bytes::copy_from_slice(k)));
                        index.insert(r.offset, due_ms, key, payload);
                    }
                }
            }
            indexed_to = last + 1;
            index.indexed_to = indexed_to;
            drop(index);
            self.checkpoint_dirty = true;
        }
        Ok(())
    }

    /// The record at `offset`, from the last decoded batch or the log.
    fn record_at(&mut self, offset: i64) -> Result<Option<(i64, Record)>, String> {
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
        let Some((target, _)) = self.config() else {
            return Ok(None);
        };
        loop {
            let state = self.state.clone();
            let _round = state.forward_lock.lock();
            let now = now_ms();
            let due = self.state.index.lock().due(now, FORWARD_BATCH_RECORDS_MAX);
            if due.is_empty() {
                *self.state.blocked.lock() = None;
                return Ok(self.state.index.lock().next_due());
            }
            let Some(info) = self.broker.topics.get(&target) else {
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
            for (offset, due_ms) in missing {
                match self.record_at(offset)? {
                    Some((append_ms, record)) => resolved.push((due_ms, offset, append_ms, record)),
                    None => {
                        // Gone from the log (DeleteRecords): nothing to forward.
                        self.state.index.lock().remove(offset);
                    }
                }
            }
            // Forward in due order (and offset order among equal due times: a fixed-delay topic
            // keeps its partition order).
            resolved.sort_unstable_by_key(|(due_ms, offset, _, _)| (*due_ms, *offset));
            // Group due records by target partition, within the batch bounds.
            let mut batches: BTreeMap<i32, ForwardBatch> = BTreeMap::new();
            let source_partitions = self
                .broker
                .topics
                .get(&self.state.topic)
                .map(|t| t.partitions)
                .unwrap_or(1);
            for (due_ms, offset, append_ms, mut record) in resolved {
                let target_partition = match &record.key {
                    Some(k) => partition_for_key(k, info.partitions),
                    None if source_partitions == info.partitions => self.state.partition,
                    None => self.state.partition % info.partitions.max(1),
                };
                let h = &mut record.headers;
                let put = |h: &mut indexmap::IndexMap<StrBytes, Option<Bytes>>,
                           k: &'static str,
                           v: String| {
                    h.insert(StrBytes::from_static_str(k), Some(Bytes::from(v)));
                };
                put(h, headers::ORIGINAL_TOPIC, self.state.topic.clone());
                put(
                    h,
                    headers::ORIGINAL_PARTITION,
                    self.state.partition.to_string(),
                );
                put(h, headers::ORIGINAL_OFFSET, offset.to_string());
                put(h, headers::ORIGINAL_TIMESTAMP, append_ms.to_string());
                let size = record.key.as_ref().map_or(0, |k| k.len())
                    + record.value.as_ref().map_or(0, |v| v.len())
                    + record
                        .headers
                        .iter()
                        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 8)
                        .sum::<usize>()
                    + 32;
                let entry = batches.entry(target_partition).or_default();
                if entry.2 + size > FORWARD_BATCH_BYTES_MAX && !entry.0.is_empty() {
                    break;
                }
                entry.0.push(record);
                entry.1.push((offset, due_ms));
                entry.2 += size;
            }
            if batches.is_empty() {
                continue;
            }
            for (tp_index, (records, sources, _)) in batches {
                let Some(tp) = self.broker.replicas.get(&target, tp_index) else {
                    return Err(format!(
                        "target partition {target}-{tp_index} is not hosted here"
                    ));
                };
                let bytes = encode_batch(records, now_ms())?;
                tp.append(bytes)
                    .map_err(|e| format!("appending to {target}-{tp_index}: {}", e.message))?;
                // Delivered: record it (the target append is already durable to a crash).
                let mut buf = Vec::with_capacity(sources.len() * 8);
                let now = now_ms();
                let mut index = self.state.index.lock();
                for (offset, due_ms) in &sources {
                    index.remove(*offset);
                    index.delivered.insert(*offset);
                    buf.extend_from_slice(&(*offset as u64).to_be_bytes());
                    self.broker
                        .metrics
                        .delay_lateness
                        .observe((now - due_ms).max(0) as f64 / 1000.0);
                }
                drop(index);
                if let Some(f) = self.delivered_file.as_mut() {
                    f.write_all(&buf)
                        .map_err(|e| format!("{DELIVERED_FILE}: {e}"))?;
                }
                self.state
                    .forwarded
                    .fetch_add(sources.len() as u64, Ordering::Relaxed);
                self.checkpoint_dirty = true;
            }
        }
    }

    /// The oldest offset that may still be pending: the oldest indexed pending record, or the
    /// first record not indexed yet.
    fn low_water(&self) -> i64 {
        let index = self.state.index.lock();
        index
            .oldest_offset()
            .unwrap_or(index.indexed_to)
            .min(index.indexed_to)
    }

    fn write_checkpoint(&mut self) -> Result<(), String> {
        let low_water = self.low_water();
        let mut target_positions = BTreeMap::new();
        if let Some((target, _)) = self.config() {
            if let Some(info) = self.broker.topics.get(&target) {
                let mut positions = BTreeMap::new();
                for p in 0..info.partitions {
                    if let Some(tp) = self.broker.replicas.get(&target, p) {
                        positions.insert(p, tp.log_end_offset());
                    }
                }
                target_positions.insert(target, positions);
            }
        }
        // Delivered offsets below the low water are no longer needed.
        let shrunk = {
            let mut index = self.state.index.lock();
            let before = index.delivered.len();
            let recent = index
                .delivered
                .iter()
                .rev()
                .nth(RECENT_DELIVERED_MAX)
                .copied()
                .unwrap_or(i64::MIN);
            index.delivered = index.delivered.split_off(&low_water.min(recent));
            index.delivered.len() + 4096 < before
        };
        if shrunk {
            self.rewrite_delivered_file()?;
        }
        let checkpoint = Checkpoint {
            low_water,
            target_positions,
        };
        let bytes = serde_json::to_vec(&checkpoint).map_err(|e| e.to_string())?;
        let tmp = self.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.checkpoint_path()).map_err(|e| e.to_string())?;
        self.partition.set_retention_floor(low_water);
        self.checkpoint_dirty = false;
        self.last_checkpoint = std::time::Instant::now();
        Ok(())
    }
}

/// Records bound for one target partition: the records, their (source offset, due time), and
/// their estimated bytes.
type ForwardBatch = (Vec<Record>, Vec<(i64, i64)>, usize);

/// One uncompressed v2 batch of forwarded records, timestamped now.
fn encode_batch(records: Vec<Record>, now: i64) -> Result<Bytes, String> {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.offset = i as i64;
            r.sequence = i as i32 - 1;
            r.producer_id = -1;
            r.producer_epoch = -1;
            r.transactional = false;
            r.control = false;
            r.partition_leader_epoch = 0;
            r.timestamp_type = TimestampType::Creation;
            r.timestamp = now;
            r
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_index_orders_by_due_and_cancels_by_key_below_an_offset() {
        let mut ix = DueIndex::default();
        let k = |s: &'static str| Some(Bytes::from_static(s.as_bytes()));
        ix.insert(0, 500, k("a"), None);
        ix.insert(1, 100, k("b"), None);
        ix.insert(2, 300, k("a"), None);
        ix.insert(3, 200, None, None);
        assert_eq!(ix.due(250, 10), vec![(100, 1), (200, 3)]);
        assert_eq!(ix.next_due(), Some(100));
        // A tombstone at offset 2 cancels key "a" below 2 only.
        assert_eq!(ix.cancel_key(&Bytes::from_static(b"a"), 2), 1);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.oldest_offset(), Some(1));
        assert!(ix.remove(2).is_some());
        assert_eq!(ix.cancel_key(&Bytes::from_static(b"a"), 100), 0);
        assert_eq!(ix.due(i64::MAX, 10), vec![(100, 1), (200, 3)]);
    }
}
