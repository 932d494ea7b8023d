//! Partition replicas on this broker: the log, idempotent-producer state, the leader-epoch cache,
//! and the replica state of Kafka's `Partition`: the high watermark, what a leader knows of its
//! followers (their log end offsets and when they last caught up) and the ISR changes it wants.

pub mod epochs;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::log::batch::{validate_batches, BatchHeader};
use crate::log::{FileRegion, Log, LogConfig};
use crate::metadata::{PartitionInfo, TopicInfo};
use crate::metrics::{Metrics, TopicMetrics};

/// Kafka error codes: the cluster-wide ones, plus those only the log and produce path use.
pub mod codes {
    pub use crate::metadata::codes::*;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const INVALID_RECORD: i16 = 87;
}

/// A Kafka error code with the message sent back (Produce v8+ carries it).
#[derive(Debug, Clone)]
pub struct PartitionError {
    pub code: i16,
    pub message: String,
    /// Produce v8+ per-record errors: (index of the record in the request, message).
    pub record_errors: Vec<(i32, String)>,
}

impl From<crate::log::LogError> for PartitionError {
    fn from(e: crate::log::LogError) -> Self {
        PartitionError::new(e.kafka_error_code(), e.to_string())
    }
}

impl PartitionError {
    fn new(code: i16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            record_errors: Vec::new(),
        }
    }
}

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5).
const PRODUCER_BATCHES_MAX: usize = 5;

#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// The max timestamp of the producer's last batch (Kafka's `lastTimestamp`).
    last_timestamp: i64,
}

/// One producer's state on a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
}

/// What an idempotence check decided for one batch.
enum SeqCheck {
    Append,
    Duplicate { first_offset: i64 },
}

/// Per-producer sequence state of one partition (Kafka's ProducerStateManager, minus txns).
#[derive(Default)]
struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Rebuilt from the batch headers of a log (start-up, follower truncation).
    fn from_headers(headers: &[BatchHeader]) -> Self {
        let mut producers = ProducerStates::default();
        for h in headers {
            producers.record(h, h.base_offset);
        }
        producers
    }

    fn check(&self, h: &BatchHeader) -> Result<SeqCheck, PartitionError> {
        if h.producer_id < 0 {
            return Ok(SeqCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its state was removed by retention): any sequence is
            // accepted, as Kafka does when there is no current epoch.
            return Ok(SeqCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(PartitionError::new(
                codes::INVALID_PRODUCER_EPOCH,
                format!(
                    "Producer {} epoch {} is older than the current epoch {}",
                    h.producer_id, h.producer_epoch, entry.epoch
                ),
            ));
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(SeqCheck::Append)
            } else {
                Err(PartitionError::new(
                    codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!(
                        "Invalid sequence number for new epoch {}: {} (request epoch), {} (seq. number)",
                        h.producer_epoch, h.producer_epoch, h.base_sequence
                    ),
                ))
            };
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate {
                first_offset: dup.first_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_seq(b.last_seq))
            .unwrap_or(0);
        if h.base_sequence != expected {
            return Err(PartitionError::new(
                codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!(
                    "Out of order sequence number for producer {} at offset ?: {} (incoming seq. number), {} (expected seq. number)",
                    h.producer_id, h.base_sequence, expected
                ),
            ));
        }
        Ok(SeqCheck::Append)
    }

    fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .filter_map(|(id, e)| {
                Some(ActiveProducer {
                    producer_id: *id,
                    producer_epoch: e.epoch,
                    last_sequence: e.batches.back()?.last_seq,
                    last_timestamp: e.last_timestamp,
                })
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    fn record(&mut self, h: &BatchHeader, first_offset: i64) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset,
        });
        entry.last_timestamp = h.max_timestamp;
        while entry.batches.len() > PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
    }
}

/// Delay and retry topics: the broker schedules their records (and keeps them until done).
fn is_scheduled(topic: &TopicInfo) -> bool {
    topic.configs.contains_key(crate::metadata::DELAY_TARGET)
        || topic.configs.contains_key(crate::metadata::RETRY_TARGET)
}

/// Whether appends to this topic are stamped with the broker's clock: `LogAppendTime` topics,
/// and delay topics (their due times count from the append time, which must be in the log so
/// the timer index can be rebuilt from it).
fn stamps_append_time(topic: &TopicInfo) -> bool {
    topic
        .configs
        .get("message.timestamp.type")
        .map(String::as_str)
        == Some("LogAppendTime")
        || topic.configs.contains_key(crate::metadata::DELAY_TARGET)
}

/// The effective log config of a topic: topic overrides over broker defaults.
/// A topic's numeric config, or `default` when unset (values were validated when set).
fn topic_num(topic: &TopicInfo, key: &str, default: i64) -> i64 {
    topic
        .configs
        .get(key)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(default)
}

pub fn log_config(topic: &TopicInfo, broker: &BrokerConfig) -> LogConfig {
    let get = |k: &str| topic.configs.get(k).map(String::as_str);
    let num = |k: &str, default: i64| topic_num(topic, k, default);
    let policy = get("cleanup.policy").unwrap_or(&broker.log_cleanup_policy);
    LogConfig {
        segment_bytes: num("segment.bytes", broker.log_segment_bytes as i64).max(14) as u64,
        segment_ms: num("segment.ms", broker.log_roll_ms),
        index_interval_bytes: num(
            "index.interval.bytes",
            broker.log_index_interval_bytes as i64,
        )
        .max(0) as u64,
        retention_ms: num("retention.ms", broker.log_retention_ms),
        retention_bytes: num("retention.bytes", broker.log_retention_bytes),
        max_message_bytes: num("max.message.bytes", broker.message_max_bytes as i64).max(0)
            as usize,
        flush_messages: num(
            "flush.messages",
            broker.log_flush_interval_messages.min(i64::MAX as u64) as i64,
        )
        .max(1) as u64,
        flush_ms: num("flush.ms", broker.log_flush_interval_ms),
        cleanup_policy_compact: policy.contains("compact"),
        cleanup_policy_delete: policy.contains("delete"),
        delete_retention_ms: num(
            "delete.retention.ms",
            broker.log_cleaner_delete_retention_ms,
        ),
        min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker.log_cleaner_min_cleanable_ratio),
        min_compaction_lag_ms: num(
            "min.compaction.lag.ms",
            broker.log_cleaner_min_compaction_lag_ms,
        ),
        ..LogConfig::default()
    }
}

pub struct AppendResult {
    pub base_offset: i64,
    /// The last offset of the (possibly duplicate) batch: `acks=all` waits for the HW past it.
    pub last_offset: i64,
    /// The leader epoch the append happened in (`acks=all` fails if leadership moves on).
    pub leader_epoch: i32,
    /// Records appended (0 for a duplicate batch answered with its original offset).
    pub records: u64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// How far a fetch may read (Kafka's `FetchIsolation`; READ_COMMITTED comes with transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchIsolation {
    /// Followers: up to the log end offset.
    LogEnd,
    /// Consumers: committed records only, below the high watermark.
    HighWatermark,
}

pub struct ReadResult {
    pub regions: Vec<FileRegion>,
    pub bytes: u64,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

struct PartitionState {
    log: Log,
    producers: ProducerStates,
    epochs: epochs::EpochCache,
    log_append_time: bool,
    /// A delay topic: `kairos.*` headers are validated on produce.
    delay: bool,
    /// A delay or retry topic: retention waits for the scheduler's floor.
    scheduled: bool,
    compacted: bool,
    max_message_bytes: usize,
    timestamps: TimestampBounds,
}

/// How far a CreateTime record's timestamp may be from the broker's clock
/// (`message.timestamp.before.max.ms` / `message.timestamp.after.max.ms`).
#[derive(Debug, Clone, Copy)]
struct TimestampBounds {
    before_max_ms: i64,
    after_max_ms: i64,
}

impl TimestampBounds {
    fn of(topic: &TopicInfo, broker: &BrokerConfig) -> Self {
        TimestampBounds {
            before_max_ms: topic_num(
                topic,
                "message.timestamp.before.max.ms",
                broker.log_message_timestamp_before_max_ms,
            ),
            after_max_ms: topic_num(
                topic,
                "message.timestamp.after.max.ms",
                broker.log_message_timestamp_after_max_ms,
            ),
        }
    }

    /// The accepted range at `now_ms`, inclusive.
    fn window(&self, now_ms: i64) -> (i64, i64) {
        (
            now_ms.saturating_sub(self.before_max_ms),
            now_ms.saturating_add(self.after_max_ms),
        )
    }
}

/// What a leader knows of one follower (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// The follower's log end offset: its last fetch offset; -1 until it fetched from us.
    leo: i64,
    last_caught_up_ms: i64,
    /// The leader's log end offset at the follower's previous fetch, and when that was.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

impl Follower {
    /// A follower that has not fetched from this leader yet; it counts as caught up now, as
    /// Kafka does for the replicas of a new leader.
    fn unknown(now: i64) -> Self {
        Follower {
            leo: -1,
            last_caught_up_ms: now,
            last_fetch_leader_leo: -1,
            last_fetch_ms: now,
        }
    }
}

/// The partition's replica set as the image gives it, plus the leader's view of its followers.
#[derive(Debug, Default)]
struct ReplicaState {
    node: i32,
    isr: Vec<i32>,
    partition_epoch: i32,
    /// An ISR this leader proposed (AlterPartition) that the image does not show yet.
    pending_isr: Option<Vec<i32>>,
    followers: HashMap<i32, Follower>,
    /// The offset at which this leader's epoch began.
    epoch_start_offset: i64,
}

impl ReplicaState {
    /// Kafka's "maximal ISR": the committed ISR and any members a pending change adds. The HW
    /// waits for all of them, so it never passes a replica that is about to count.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let extra = self
            .pending_isr
            .iter()
            .flatten()
            .filter(|r| !self.isr.contains(r));
        self.isr.iter().chain(extra).copied()
    }

    /// Kafka's ISR-join rule: a follower whose log reaches the HW and this leader's epoch start.
    fn may_join(&self, follower_leo: i64, hw: i64) -> bool {
        follower_leo >= hw && follower_leo >= self.epoch_start_offset
    }
}

/// How a replica's role changed when the image was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    None,
    BecameLeader,
    /// A new leader (or leader epoch) to follow: the follower must truncate before fetching.
    BecameFollower,
}

/// An ISR change a leader wants the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The topic's id: a topic deleted and created again under the same name is another topic.
    pub topic_id: uuid::Uuid,
    /// Whether this broker leads the partition, and the leader epoch it knows.
    is_leader: std::sync::atomic::AtomicBool,
    epoch: std::sync::atomic::AtomicI32,
    /// The partition's directory (`<log.dir>/<topic>-<partition>`).
    dir: PathBuf,
    state: Mutex<PartitionState>,
    /// Log end offset, readable without the lock.
    leo: AtomicI64,
    log_start: AtomicI64,
    /// High watermark: consumers read below it; `acks=all` waits for it.
    hw: AtomicI64,
    replica: Mutex<ReplicaState>,
    /// Woken on every append (followers' fetches wait on it) and on role changes.
    appended: Notify,
    /// Woken when the HW moves (consumers' fetches and `acks=all` wait on it) and on role
    /// changes.
    hw_moved: Notify,
    /// This topic's BrokerTopicMetrics (atomics; resolved once).
    metrics: TopicMetrics,
    /// Retention keeps offsets at or above this (set by the delay engine to its oldest pending).
    retention_floor: AtomicI64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Partition {
    fn open(
        dir: &Path,
        topic: &TopicInfo,
        index: i32,
        broker: &BrokerConfig,
        recover: bool,
        metrics: TopicMetrics,
        checkpointed_hw: Option<i64>,
    ) -> Result<Self, PartitionError> {
        let config = log_config(topic, broker);
        let max_message_bytes = config.max_message_bytes;
        let compacted = config.cleanup_policy_compact;
        let log = Log::open(dir, config, recover).map_err(|e| {
            PartitionError::new(
                codes::KAFKA_STORAGE_ERROR,
                format!("{}: {e}", dir.display()),
            )
        })?;
        // Idempotent-producer state is rebuilt from the batch headers of the log.
        let headers = log.batch_headers(log.log_start_offset()).map_err(|e| {
            PartitionError::new(
                codes::KAFKA_STORAGE_ERROR,
                format!("{}: {e}", dir.display()),
            )
        })?;
        let producers = ProducerStates::from_headers(&headers);
        let leo = log.log_end_offset();
        let start = log.log_start_offset();
        let epochs = epochs::EpochCache::load(dir, &headers, leo);
        let hw = checkpointed_hw.unwrap_or(0).clamp(start, leo);
        Ok(Partition {
            topic: topic.name.clone(),
            index,
            topic_id: topic.id,
            is_leader: std::sync::atomic::AtomicBool::new(false),
            epoch: std::sync::atomic::AtomicI32::new(-1),
            dir: dir.to_path_buf(),
            state: Mutex::new(PartitionState {
                log,
                producers,
                epochs,
                log_append_time: stamps_append_time(topic),
                delay: topic.configs.contains_key(crate::metadata::DELAY_TARGET),
                scheduled: is_scheduled(topic),
                compacted,
                max_message_bytes,
                timestamps: TimestampBounds::of(topic, broker),
            }),
            leo: AtomicI64::new(leo),
            log_start: AtomicI64::new(start),
            hw: AtomicI64::new(hw),
            replica: Mutex::new(ReplicaState::default()),
            appended: Notify::new(),
            hw_moved: Notify::new(),
            metrics,
            retention_floor: AtomicI64::new(i64::MAX),
        })
    }

    pub fn log_end_offset(&self) -> i64 {
        self.leo.load(Ordering::Acquire)
    }
    pub fn high_watermark(&self) -> i64 {
        self.hw.load(Ordering::Acquire)
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }
    pub fn leader_epoch(&self) -> i32 {
        self.epoch.load(Ordering::Acquire)
    }
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }
    /// KIP-320: the leader epoch a client believes current, against ours: 0, or
    /// FENCED_LEADER_EPOCH (the client's is older) / UNKNOWN_LEADER_EPOCH (newer). -1: unchecked.
    pub fn check_current_epoch(&self, client: i32) -> i16 {
        let ours = self.leader_epoch();
        if client < 0 || client == ours {
            codes::NONE
        } else if client < ours {
            codes::FENCED_LEADER_EPOCH
        } else {
            codes::UNKNOWN_LEADER_EPOCH
        }
    }

    /// Stops leading (the partition left this broker or its topic is going).
    pub fn demote(&self) {
        let state = self.state.lock();
        self.is_leader.store(false, Ordering::Release);
        drop(state);
        self.appended.notify_waiters();
        self.hw_moved.notify_waiters();
    }

    /// Applies the replica set, ISR, leader and leader epoch the image gives this partition.
    /// Becoming leader (Kafka's `makeLeader`) starts the epoch at the log end offset and resets
    /// what is known of the followers; the HW is then recomputed.
    pub fn apply_image(&self, info: &PartitionInfo, node: i32) -> RoleChange {
        let now = now_ms();
        let leader = info.leader == node;
        let mut r = self.replica.lock();
        let was_leader = self.is_leader();
        let old_epoch = self.leader_epoch();
        let epoch_changed = info.leader_epoch != old_epoch || leader != was_leader;
        r.node = node;
        r.isr = info.isr.clone();
        if r.partition_epoch != info.partition_epoch || epoch_changed {
            // Our proposal was applied or overtaken: either way it is no longer pending.
            r.pending_isr = None;
        }
        r.partition_epoch = info.partition_epoch;
        {
            // The role and epoch flip under the state lock (taken after the replica lock, the
            // one order used), so an append sees either the old role or the new one whole.
            let mut state = self.state.lock();
            if leader && epoch_changed {
                let leo = state.log.log_end_offset();
                state.epochs.assign(info.leader_epoch, leo);
                r.epoch_start_offset = leo;
                // A new epoch: nothing is known of the followers until they fetch from us.
                r.followers.clear();
            }
            self.epoch.store(info.leader_epoch, Ordering::Release);
            self.is_leader.store(leader, Ordering::Release);
        }
        if leader {
            // Replicas added by a reassignment start unknown; removed ones are forgotten.
            r.followers.retain(|id, _| info.replicas.contains(id));
            for &id in info.replicas.iter().filter(|&&id| id != node) {
                r.followers.entry(id).or_insert(Follower::unknown(now));
            }
        } else {
            r.followers.clear();
        }
        drop(r);
        if leader {
            self.maybe_advance_hw();
        }
        if !epoch_changed {
            return RoleChange::None;
        }
        self.appended.notify_waiters();
        self.hw_moved.notify_waiters();
        if leader {
            RoleChange::BecameLeader
        } else {
            RoleChange::BecameFollower
        }
    }

    /// Leader: moves the HW up to the smallest log end offset over the (maximal) ISR. A member
    /// that has not fetched since this leader took over holds it where it is.
    pub fn maybe_advance_hw(&self) {
        if self.is_leader() {
            self.advance_hw_locked(&self.replica.lock());
        }
    }

    /// [`maybe_advance_hw`](Self::maybe_advance_hw) with the replica lock already held.
    fn advance_hw_locked(&self, r: &ReplicaState) {
        let mut low = self.log_end_offset();
        for id in r.maximal_isr() {
            if id == r.node {
                continue;
            }
            match r.followers.get(&id) {
                Some(f) if f.leo >= 0 => low = low.min(f.leo),
                _ => return,
            }
        }
        if self.hw.fetch_max(low, Ordering::AcqRel) < low {
            self.hw_moved.notify_waiters();
        }
    }

    /// Leader: a follower fetched from `fetch_offset` (so its log ends there). Updates when it
    /// last caught up, as Kafka does, and the HW. Returns whether it may join the ISR; `None`
    /// when `replica` is not a follower of this leader.
    pub fn record_follower_fetch(&self, replica: i32, fetch_offset: i64, now: i64) -> Option<bool> {
        let leo = self.log_end_offset();
        let hw = self.high_watermark();
        let mut r = self.replica.lock();
        let f = r.followers.get_mut(&replica)?;
        // Outside the log the read answers OFFSET_OUT_OF_RANGE; like Kafka, such a fetch says
        // nothing about the follower (it must not count as caught up).
        if fetch_offset > leo || fetch_offset < self.log_start_offset() {
            return Some(false);
        }
        if fetch_offset >= leo {
            f.last_caught_up_ms = now;
        } else if fetch_offset >= f.last_fetch_leader_leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.leo = fetch_offset;
        f.last_fetch_leader_leo = leo;
        f.last_fetch_ms = now;
        let joins = !r.maximal_isr().any(|id| id == replica) && r.may_join(fetch_offset, hw);
        if self.is_leader() {
            self.advance_hw_locked(&r);
        }
        Some(joins)
    }

    /// Leader: the ISR it wants now: members that have not caught up within `lag_max_ms` leave,
    /// replicas that reached the HW (and this epoch's start) join. `None` when unchanged or a
    /// change is already pending; otherwise the change is marked pending.
    /// `eligible` says which brokers may join the ISR (KIP-841: not fenced, not shutting down);
    /// a dead follower's last fetch can look caught up while nothing is written.
    pub fn isr_change(
        &self,
        now: i64,
        lag_max_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<IsrChange> {
        if !self.is_leader() {
            return None;
        }
        let hw = self.high_watermark();
        let mut r = self.replica.lock();
        if r.pending_isr.is_some() {
            return None;
        }
        let node = r.node;
        let mut isr: Vec<i32> = r
            .isr
            .iter()
            .copied()
            .filter(|&id| {
                id == node
                    || r.followers
                        .get(&id)
                        .is_some_and(|f| now - f.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        let mut joining: Vec<i32> = r
            .followers
            .iter()
            .filter(|(id, f)| !r.isr.contains(id) && r.may_join(f.leo, hw) && eligible(**id))
            .map(|(id, _)| *id)
            .collect();
        joining.sort_unstable();
        isr.extend(joining);
        if !isr.contains(&node) {
            isr.insert(0, node);
        }
        let mut sorted_new = isr.clone();
        sorted_new.sort_unstable();
        let mut sorted_old = r.isr.clone();
        sorted_old.sort_unstable();
        if sorted_new == sorted_old {
            return None;
        }
        r.pending_isr = Some(isr.clone());
        Some(IsrChange {
            leader_epoch: self.leader_epoch(),
            partition_epoch: r.partition_epoch,
            isr,
        })
    }

    /// The controller refused a proposed ISR change: forget it so it can be proposed again.
    pub fn clear_pending_isr(&self) {
        self.replica.lock().pending_isr = None;
    }

    /// Whether `replica` is in the ISR the image gives.
    pub fn in_isr(&self, replica: i32) -> bool {
        self.replica.lock().isr.contains(&replica)
    }

    /// The committed ISR size (for `min.insync.replicas`).
    pub fn isr_size(&self) -> usize {
        self.replica.lock().isr.len()
    }

    /// Waits until the HW passes `last_offset` (`acks=all`). Fails with NOT_LEADER_OR_FOLLOWER
    /// when leadership moves meanwhile and REQUEST_TIMED_OUT at `deadline`.
    pub async fn wait_replicated(
        &self,
        last_offset: i64,
        epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), i16> {
        loop {
            let notified = self.hw_moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_leader() || self.leader_epoch() != epoch {
                return Err(codes::NOT_LEADER_OR_FOLLOWER);
            }
            if self.high_watermark() > last_offset {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(codes::REQUEST_TIMED_OUT);
            }
        }
    }

    /// The leader epoch of the last record batch this replica holds (or started as leader).
    pub fn latest_epoch(&self) -> i32 {
        self.state.lock().epochs.latest_epoch()
    }

    /// Kafka's `endOffsetForEpoch` over this replica's leader-epoch cache.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let state = self.state.lock();
        state
            .epochs
            .end_offset_for(epoch, state.log.log_end_offset())
    }

    /// Follower: removes everything at or after `offset` (a diverged suffix) and rebuilds the
    /// idempotent-producer state from what is left.
    pub fn truncate_to(&self, offset: i64, epoch: i32) -> Result<(), PartitionError> {
        let mut state = self.state.lock();
        self.check_following(epoch)?;
        if offset >= state.log.log_end_offset() {
            return Ok(());
        }
        state.log.truncate_to(offset)?;
        let leo = state.log.log_end_offset();
        state.epochs.truncate_from_end(leo);
        self.after_truncation(&mut state)
    }

    /// Follower: empties the log and restarts it at `offset` (the leader's log start is past
    /// our log end).
    pub fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        epoch: i32,
    ) -> Result<(), PartitionError> {
        let mut state = self.state.lock();
        self.check_following(epoch)?;
        state.log.truncate_fully_and_start_at(offset)?;
        state.epochs.clear();
        self.after_truncation(&mut state)
    }

    /// A follower's write decided in leader epoch `epoch` is stale once this replica leads or
    /// follows another epoch. Call with the state lock held (a leadership change holds it).
    fn check_following(&self, epoch: i32) -> Result<(), PartitionError> {
        if self.is_leader() || self.leader_epoch() != epoch {
            return Err(PartitionError::new(
                codes::FENCED_LEADER_EPOCH,
                format!(
                    "{}-{}: decided in epoch {epoch} as a follower, now epoch {}{}",
                    self.topic,
                    self.index,
                    self.leader_epoch(),
                    if self.is_leader() { " as leader" } else { "" }
                ),
            ));
        }
        Ok(())
    }

    fn after_truncation(&self, state: &mut PartitionState) -> Result<(), PartitionError> {
        let headers = state.log.batch_headers(state.log.log_start_offset())?;
        state.producers = ProducerStates::from_headers(&headers);
        let leo = self.publish_offsets(state);
        self.hw.fetch_min(leo, Ordering::AcqRel);
        Ok(())
    }

    /// Publishes the log's end and start offsets to the lock-free readers; returns the end.
    fn publish_offsets(&self, state: &PartitionState) -> i64 {
        let leo = state.log.log_end_offset();
        self.leo.store(leo, Ordering::Release);
        self.log_start
            .store(state.log.log_start_offset(), Ordering::Release);
        leo
    }

    /// Follower: appends batches fetched from the leader (offsets and epochs kept), follows the
    /// leader's log start, and takes HW = min(leader's HW, own log end). Returns the records
    /// appended.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        epoch: i32,
        leader_hw: i64,
        leader_log_start: i64,
    ) -> Result<u64, PartitionError> {
        let mut state = self.state.lock();
        self.check_following(epoch)?;
        // The log checks every batch before writing any; a write that fails part-way (disk)
        // takes the batches before it back out, so the published log end stays the log's.
        let before = state.log.log_end_offset();
        let (info, headers) = match state.log.append_as_follower(records, now_ms()) {
            Ok(appended) => appended,
            Err(e) => {
                if let Err(undo) = state.log.truncate_to(before) {
                    tracing::error!(
                        "{}-{}: undoing a failed append: {undo}",
                        self.topic,
                        self.index
                    );
                }
                self.publish_offsets(&state);
                return Err(e.into());
            }
        };
        state.epochs.assign_batches(&headers);
        for h in &headers {
            state.producers.record(h, h.base_offset);
        }
        // The batches are in: a failure to follow the leader's log start must not leave the
        // published offsets behind the log (it is tried again with the next fetch).
        if let Err(e) = state.log.maybe_increment_log_start(leader_log_start) {
            tracing::warn!(
                "{}-{}: following the leader's log start {leader_log_start}: {e}",
                self.topic,
                self.index
            );
        }
        let leo = self.publish_offsets(&state);
        let log_start = state.log.log_start_offset();
        drop(state);
        // Kafka's updateHighWatermark: the leader's value, within this log's bounds.
        let hw = leader_hw.clamp(log_start, leo);
        if self.hw.swap(hw, Ordering::AcqRel) != hw {
            self.hw_moved.notify_waiters();
        }
        if info.record_count > 0 {
            self.appended.notify_waiters();
        }
        Ok(info.record_count)
    }

    pub fn hw_moved(&self) -> &Notify {
        &self.hw_moved
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn appended(&self) -> &Notify {
        &self.appended
    }
    pub fn metrics(&self) -> &TopicMetrics {
        &self.metrics
    }

    /// Validates and appends the record batches of one produce request partition.
    pub fn append(&self, records: Bytes) -> Result<AppendResult, PartitionError> {
        self.append_from(records, false)
    }

    /// Appends batches the broker wrote itself, control batches included (clients may not
    /// write those: [`append`](Self::append) refuses them, as Kafka does).
    pub fn append_control(&self, records: Bytes) -> Result<AppendResult, PartitionError> {
        self.append_from(records, true)
    }

    fn append_from(&self, records: Bytes, internal: bool) -> Result<AppendResult, PartitionError> {
        let bytes = records.len() as u64;
        let result = self.append_inner(records, internal);
        match &result {
            Ok(r) if r.records > 0 => self.metrics.produced(r.records, bytes),
            Ok(_) => {} // a duplicate: nothing appended
            Err(_) => self.metrics.produce_failed(),
        }
        result
    }

    fn append_inner(&self, records: Bytes, internal: bool) -> Result<AppendResult, PartitionError> {
        let (max_message_bytes, compacted, delay, log_append_time, timestamps) = {
            let state = self.state.lock();
            (
                state.max_message_bytes,
                state.compacted,
                state.delay,
                state.log_append_time,
                state.timestamps,
            )
        };
        let headers = validate_batches(&records, max_message_bytes)
            .map_err(|e| PartitionError::new(e.kafka_error_code(), e.to_string()))?;
        if headers.is_empty() {
            return Err(PartitionError::new(
                codes::CORRUPT_MESSAGE,
                "produce request holds no record batch",
            ));
        }
        if !internal && headers.iter().any(|h| h.is_control()) {
            return Err(PartitionError::new(
                codes::INVALID_RECORD,
                "clients may not write control batches",
            ));
        }
        // Record-level checks decode the batches: done before taking the partition lock.
        if !log_append_time && !internal {
            check_timestamps(&records, &headers, timestamps.window(now_ms()))?;
        }
        if compacted {
            check_keys(&records)?;
        }
        if delay {
            check_delay_headers(&records)?;
        }
        let mut state = self.state.lock();
        // Checked first under the state lock, which a leadership change also holds: a batch is
        // never stamped with an epoch this replica does not lead, and a replica that just lost
        // leadership does not answer a duplicate as if it held the partition.
        if !self.is_leader() {
            return Err(PartitionError::new(
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("this broker does not lead {}-{}", self.topic, self.index),
            ));
        }
        // Idempotence: a request is a single batch per partition for idempotent producers.
        let mut appends = Vec::with_capacity(headers.len());
        for h in &headers {
            match state.producers.check(h)? {
                SeqCheck::Duplicate { first_offset } if headers.len() == 1 => {
                    return Ok(AppendResult {
                        base_offset: first_offset,
                        last_offset: first_offset + h.last_offset_delta as i64,
                        leader_epoch: self.leader_epoch(),
                        records: 0,
                        log_append_time_ms: -1,
                        log_start_offset: state.log.log_start_offset(),
                    });
                }
                SeqCheck::Duplicate { .. } => {
                    return Err(PartitionError::new(
                        codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                        "duplicate batch inside a multi-batch request",
                    ));
                }
                SeqCheck::Append => appends.push(h),
            }
        }
        let now = now_ms();
        let mut bytes = BytesMut::from(&records[..]);
        if state.log_append_time {
            // `validate_batches` framed the blob: its headers give each batch's extent.
            let mut pos = 0;
            for h in &headers {
                let end = pos + h.total_size();
                crate::log::batch::set_log_append_time(&mut bytes[pos..end], now);
                pos = end;
            }
        }
        let epoch = self.leader_epoch();
        let info = state.log.append(&mut bytes, epoch, now)?;
        state.epochs.assign(epoch, info.first_offset);
        let mut offset = info.first_offset;
        for h in appends {
            state.producers.record(h, offset);
            offset += h.last_offset_delta as i64 + 1;
        }
        let result = AppendResult {
            base_offset: info.first_offset,
            last_offset: info.last_offset,
            leader_epoch: epoch,
            records: info.record_count,
            log_append_time_ms: if state.log_append_time { now } else { -1 },
            log_start_offset: state.log.log_start_offset(),
        };
        self.publish_offsets(&state);
        drop(state);
        self.appended.notify_waiters();
        self.maybe_advance_hw();
        Ok(result)
    }

    /// Reads up to `max_bytes` of committed records (below the HW) from `offset` (whole
    /// batches, at least one).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, PartitionError> {
        self.read_below(offset, max_bytes, self.high_watermark(), true)
    }

    /// A Fetch's read: up to the HW for consumers, the log end for followers (Kafka's
    /// `FetchIsolation`); `min_one_batch` as in [`Log::read_batches`].
    pub fn fetch_records(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: FetchIsolation,
        min_one_batch: bool,
    ) -> Result<ReadResult, PartitionError> {
        let limit = match isolation {
            FetchIsolation::HighWatermark => self.high_watermark(),
            FetchIsolation::LogEnd => i64::MAX,
        };
        self.read_below(offset, max_bytes, limit, min_one_batch)
    }

    /// Reads up to the log end offset: for followers' fetches and for loading state this
    /// leader wrote itself.
    pub fn read_uncommitted(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult, PartitionError> {
        self.read_below(offset, max_bytes, i64::MAX, true)
    }

    fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, PartitionError> {
        let state = self.state.lock();
        let hw = self.high_watermark();
        let r = state
            .log
            .read_batches(offset, max_bytes, limit, min_one_batch)?;
        let bytes = r.regions.iter().map(|r| r.len).sum();
        Ok(ReadResult {
            regions: r.regions,
            bytes,
            high_watermark: hw,
            log_start_offset: state.log.log_start_offset(),
        })
    }

    /// First record with timestamp >= `ts`, as (offset, timestamp).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, PartitionError> {
        let found = self.state.lock().log.fetch_offset_by_timestamp(ts)?;
        Ok(self.committed(found))
    }

    /// The record with the largest timestamp, as (offset, timestamp) (ListOffsets -3).
    pub fn max_timestamp_and_offset(&self) -> Result<Option<(i64, i64)>, PartitionError> {
        let found = self.state.lock().log.max_timestamp_and_offset()?;
        Ok(self.committed(found))
    }

    /// Kafka answers ListOffsets only with offsets a consumer can fetch: below the HW.
    fn committed(&self, found: Option<(i64, i64)>) -> Option<(i64, i64)> {
        found.filter(|(offset, _)| *offset < self.high_watermark())
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64, PartitionError> {
        let mut state = self.state.lock();
        let start = state.log.delete_records_before(offset)?;
        self.log_start.store(start, Ordering::Release);
        Ok(start)
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.lock().log.size_bytes()
    }

    /// The idempotent producers this partition keeps sequence state for (DescribeProducers).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.state.lock().producers.active()
    }

    pub fn update_config(&self, topic: &TopicInfo, broker: &BrokerConfig) {
        let config = log_config(topic, broker);
        let mut state = self.state.lock();
        state.max_message_bytes = config.max_message_bytes;
        state.timestamps = TimestampBounds::of(topic, broker);
        state.compacted = config.cleanup_policy_compact;
        state.log_append_time = stamps_append_time(topic);
        state.delay = topic.configs.contains_key(crate::metadata::DELAY_TARGET);
        state.scheduled = is_scheduled(topic);
        state.log.update_config(config);
    }

    /// Keeps every offset at or above `floor` through retention (`i64::MAX`: no floor).
    pub fn set_retention_floor(&self, floor: i64) {
        self.retention_floor.store(floor, Ordering::Release);
    }

    /// Reads whole batches from `offset` into memory (at least one batch, about `max_bytes`).
    pub fn read_bytes(&self, offset: i64, max_bytes: usize) -> Result<Bytes, PartitionError> {
        regions_to_bytes(self.read(offset, max_bytes)?)
    }

    /// [`read_bytes`](Self::read_bytes) up to the log end offset, past the HW.
    pub fn read_bytes_uncommitted(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, PartitionError> {
        regions_to_bytes(self.read_uncommitted(offset, max_bytes)?)
    }

    /// Retention and compaction; called from the broker's background cleaner task.
    pub fn clean(&self, now: i64) {
        let mut floor = self.retention_floor.load(Ordering::Acquire);
        let mut state = self.state.lock();
        if state.scheduled && floor == i64::MAX {
            // The scheduler has not said what is pending yet: keep everything.
            floor = state.log.log_start_offset();
        }
        if let Err(e) = state.log.enforce_retention_above(now, floor) {
            tracing::warn!("{}-{}: retention failed: {e}", self.topic, self.index);
        }
        if state.compacted {
            if let Err(e) = state.log.compact(now) {
                tracing::warn!("{}-{}: compaction failed: {e}", self.topic, self.index);
            }
        }
        self.publish_offsets(&state);
    }

    /// Time-based flush (`flush.ms`) of a log that may have gone idle.
    pub fn flush_if_due(&self, now: i64) {
        if let Err(e) = self.state.lock().log.flush_if_due(now) {
            tracing::warn!("{}-{}: flush failed: {e}", self.topic, self.index);
        }
    }

    fn close(&self) {
        let mut state = self.state.lock();
        if let Err(e) = state.log.flush() {
            tracing::warn!("{}-{}: flush on close failed: {e}", self.topic, self.index);
        }
    }
}

fn regions_to_bytes(read: ReadResult) -> Result<Bytes, PartitionError> {
    use std::os::unix::fs::FileExt;
    let mut bytes = BytesMut::with_capacity(read.bytes as usize);
    for r in &read.regions {
        let start = bytes.len();
        bytes.resize(start + r.len as usize, 0);
        r.file
            .read_exact_at(&mut bytes[start..], r.position)
            .map_err(|e| PartitionError::new(codes::KAFKA_STORAGE_ERROR, e.to_string()))?;
    }
    Ok(bytes.freeze())
}

/// Decodes the batches of a produce request (a cheap `Bytes` clone, no copy).
fn decode_record_sets(
    records: &Bytes,
) -> Result<Vec<kafka_protocol::records::RecordSet>, PartitionError> {
    let mut buf = records.clone();
    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
        PartitionError::new(
            codes::CORRUPT_MESSAGE,
            format!("cannot decode records: {e}"),
        )
    })
}

/// CreateTime records must lie within the topic's timestamp window (Kafka's LogValidator):
/// otherwise the batch is refused with INVALID_TIMESTAMP, each record outside listed. The batch
/// headers' first and max timestamps decide without decoding when every batch is inside.
fn check_timestamps(
    records: &Bytes,
    headers: &[BatchHeader],
    (earliest, latest): (i64, i64),
) -> Result<(), PartitionError> {
    let inside = |ts: i64| ts >= earliest && ts <= latest;
    if headers
        .iter()
        .all(|h| inside(h.base_timestamp) && inside(h.max_timestamp))
    {
        return Ok(());
    }
    let sets = decode_record_sets(records)?;
    let mut bad = Vec::new();
    for (index, record) in sets.iter().flat_map(|s| &s.records).enumerate() {
        if !inside(record.timestamp) {
            bad.push((
                index as i32,
                format!(
                    "Timestamp {} of message with offset {} is out of range. The timestamp should be within [{earliest}, {latest}]",
                    record.timestamp, record.offset
                ),
            ));
        }
    }
    let Some((_, first)) = bad.first().cloned() else {
        return Ok(());
    };
    let mut err = PartitionError::new(codes::INVALID_TIMESTAMP, first);
    err.record_errors = bad;
    Err(err)
}

/// Compacted topics need a key on every record (Kafka: InvalidRecordException).
fn check_keys(records: &Bytes) -> Result<(), PartitionError> {
    let sets = decode_record_sets(records)?;
    for set in sets {
        if set.records.iter().any(|r| r.key.is_none()) {
            return Err(PartitionError::new(
                codes::INVALID_RECORD,
                "Compacted topic cannot accept message without key.",
            ));
        }
    }
    Ok(())
}

/// Delay topics: every `kairos.deliver.at.ms` / `kairos.delay.ms` header must be a
/// non-negative whole number. A bad record rejects its whole batch (Kafka's rule: batches are
/// atomic) with INVALID_RECORD, and each bad record is listed with its message.
fn check_delay_headers(records: &Bytes) -> Result<(), PartitionError> {
    let sets = decode_record_sets(records)?;
    let mut bad = Vec::new();
    for (index, record) in sets.iter().flat_map(|s| &s.records).enumerate() {
        if record.control {
            continue;
        }
        let headers = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()));
        if let Err(e) = crate::time::headers::due_spec(headers) {
            bad.push((index as i32, e));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let mut err = PartitionError::new(
        codes::INVALID_RECORD,
        format!(
            "{} record(s) with malformed kairos headers: {}",
            bad.len(),
            bad[0].1
        ),
    );
    err.record_errors = bad;
    Err(err)
}

/// All partitions hosted here, by (topic, partition).
pub struct ReplicaManager {
    dir: PathBuf,
    config: BrokerConfig,
    metrics: Arc<Metrics>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// The last stop was not clean: partitions are recovered as they open.
    recover: bool,
    /// High watermarks read from `replication-offset-checkpoint` at start.
    checkpointed_hw: HashMap<(String, i32), i64>,
    pub fetchers: crate::replication::Fetchers,
    /// Replication throttling (reassignments), refreshed from each image.
    pub throttles: Arc<crate::replication::quota::Throttles>,
}

/// Kafka's per-log-dir file of high watermarks.
pub const HW_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

/// What [`ReplicaManager::sync`] did.
#[derive(Default)]
pub struct SyncOutcome {
    pub errors: Vec<PartitionError>,
    /// Partitions whose role (leader, or follower of a new epoch) changed.
    pub roles: Vec<(String, i32, RoleChange)>,
    /// Partitions no longer hosted (or no longer led) here.
    pub dropped: Vec<(String, i32)>,
}

/// Kafka's marker for a clean shutdown: present → indexes are trusted on start.
const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";

impl ReplicaManager {
    /// Opens no partition yet: [`ReplicaManager::sync`] opens what the cluster image assigns here.
    pub fn open(config: &BrokerConfig, metrics: Arc<Metrics>) -> Result<Self, PartitionError> {
        let dir = config.log_dirs[0].clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| PartitionError::new(codes::KAFKA_STORAGE_ERROR, e.to_string()))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let recover = !marker.exists();
        // From here on a crash must trigger recovery on the next start.
        if marker.exists() {
            std::fs::remove_file(&marker)
                .map_err(|e| PartitionError::new(codes::KAFKA_STORAGE_ERROR, e.to_string()))?;
        }
        let checkpointed_hw =
            crate::log::checkpoint::read_partition_offsets(&dir.join(HW_CHECKPOINT_FILE))
                .unwrap_or_else(|e| {
                    tracing::warn!("{e}; high watermarks restart from the log start");
                    Vec::new()
                })
                .into_iter()
                .map(|(t, p, o)| ((t, p), o))
                .collect();
        let throttles = Arc::new(crate::replication::quota::Throttles::default());
        Ok(ReplicaManager {
            dir,
            config: config.clone(),
            metrics,
            partitions: RwLock::new(HashMap::new()),
            recover,
            checkpointed_hw,
            fetchers: crate::replication::Fetchers::new(
                crate::replication::FetchConfig::from_broker(config),
                throttles.clone(),
            ),
            throttles,
        })
    }

    /// Makes the hosted partitions match the image: opens those assigned to `node` (creating
    /// them), applies leadership and topic configs, and deletes the replicas of topics that were
    /// in `previous` and are gone now (deleted, or moved off this broker). Directories of topics
    /// never seen in an image are left alone: an image that lags must not delete data.
    pub fn sync(
        &self,
        previous: Option<&crate::metadata::ClusterImage>,
        image: &crate::metadata::ClusterImage,
        node: i32,
    ) -> SyncOutcome {
        let mut out = SyncOutcome::default();
        self.throttles.update(image, node);
        let errors = &mut out.errors;
        let mut wanted = std::collections::HashSet::new();
        for t in image.topics.values() {
            for (i, p) in t.assignment.iter().enumerate() {
                let index = i as i32;
                if !p.replicas.contains(&node) {
                    continue;
                }
                wanted.insert((t.name.clone(), index));
                let part = match self.get(&t.name, index) {
                    Some(part) if part.topic_id == t.id => part,
                    existing => {
                        if existing.is_some() {
                            // Same name, another topic: the old one was deleted meanwhile.
                            self.remove(&t.name, index);
                        }
                        match self.open_one(t, index) {
                            Ok(part) => part,
                            Err(e) => {
                                errors.push(e);
                                continue;
                            }
                        }
                    }
                };
                let role = part.apply_image(p, node);
                self.follow(image, &part, p, node, role);
                if role != RoleChange::None {
                    out.roles.push((t.name.clone(), index, role));
                }
                // Hosted partitions were last made to match `previous`: configs changed since?
                let old = previous.and_then(|prev| prev.topic(&t.name));
                if old.is_some_and(|old| old.id == t.id && old.configs != t.configs) {
                    part.update_config(t, &self.config);
                }
            }
        }
        let hosted: Vec<(String, i32)> = self.partitions.read().keys().cloned().collect();
        for (topic, index) in hosted {
            if wanted.contains(&(topic.clone(), index)) {
                continue;
            }
            let was_assigned = previous
                .and_then(|prev| prev.partition(&topic, index))
                .is_some_and(|p| p.replicas.contains(&node));
            if was_assigned {
                self.remove(&topic, index); // unfollows too
            } else if let Some(p) = self.get(&topic, index) {
                self.fetchers.unfollow(&topic, index);
                p.demote();
            }
            out.dropped.push((topic, index));
        }
        for t in previous.map(|p| p.topics.values()).into_iter().flatten() {
            if !image.topics.contains_key(&t.name) {
                self.metrics.remove_topic(&t.name);
            }
        }
        out
    }

    /// Points the fetchers at the partition's leader, or stops fetching when this broker leads
    /// it or it has no leader.
    fn follow(
        &self,
        image: &crate::metadata::ClusterImage,
        part: &Arc<Partition>,
        info: &PartitionInfo,
        node: i32,
        role: RoleChange,
    ) {
        let leader = image.brokers.get(&info.leader);
        match leader {
            Some(b) if info.leader != node => {
                if role != RoleChange::None {
                    tracing::debug!(
                        "{}-{}: following broker {} in epoch {}",
                        part.topic,
                        part.index,
                        b.id,
                        info.leader_epoch
                    );
                }
                self.fetchers
                    .follow(part, b.id, b.addr(), info.leader_epoch)
            }
            _ => self.fetchers.unfollow(&part.topic, part.index),
        }
    }

    fn open_one(&self, topic: &TopicInfo, index: i32) -> Result<Arc<Partition>, PartitionError> {
        let p = Arc::new(Partition::open(
            &self.partition_dir(&topic.name, index),
            topic,
            index,
            &self.config,
            self.recover,
            self.metrics.topic(&topic.name),
            self.checkpointed_hw
                .get(&(topic.name.clone(), index))
                .copied(),
        )?);
        self.partitions
            .write()
            .insert((topic.name.clone(), index), p.clone());
        Ok(p)
    }

    /// Stops hosting a partition and deletes its files.
    fn remove(&self, topic: &str, index: i32) {
        self.fetchers.unfollow(topic, index);
        let removed = self.partitions.write().remove(&(topic.to_string(), index));
        if let Some(p) = removed {
            p.demote();
        }
        let dir = self.partition_dir(topic, index);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("deleting {}: {e}", dir.display());
            }
        }
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{index}"))
    }

    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Writes every hosted partition's HW to `replication-offset-checkpoint`, keeping the
    /// checkpointed HW of partitions still on disk but not opened yet (before the image that
    /// assigns them here has arrived).
    pub fn checkpoint_high_watermarks(&self) {
        let hosted = self.partitions.read();
        let mut entries: Vec<(String, i32, i64)> = hosted
            .values()
            .map(|p| (p.topic.clone(), p.index, p.high_watermark()))
            .collect();
        for ((topic, index), hw) in &self.checkpointed_hw {
            let key = (topic.clone(), *index);
            if !hosted.contains_key(&key) && self.partition_dir(topic, *index).exists() {
                entries.push((key.0, key.1, *hw));
            }
        }
        drop(hosted);
        entries.sort();
        let path = self.dir.join(HW_CHECKPOINT_FILE);
        if let Err(e) = crate::log::checkpoint::write_partition_offsets(&path, &entries) {
            tracing::warn!("writing {}: {e}", path.display());
        }
    }

    /// Stops the fetchers, flushes every log, checkpoints high watermarks and writes the
    /// clean-shutdown marker.
    pub fn shutdown(&self) {
        self.fetchers.shutdown();
        for p in self.all() {
            p.close();
        }
        self.checkpoint_high_watermarks();
        if let Err(e) = std::fs::write(self.dir.join(CLEAN_SHUTDOWN_FILE), b"") {
            tracing::warn!("writing clean shutdown marker: {e}");
        }
    }
}
