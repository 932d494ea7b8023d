//! The classic consumer group coordinator and committed offsets (Kafka's `GroupCoordinator` and
//! `GroupMetadataManager`).
//!
//! Module map:
//! - this file: [`GroupConfig`], [`OffsetsLog`] (where records go), [`GroupCoordinator`]
//!   construction, loading, the timer loop, the group → partition mapping.
//! - `metadata`: one group's in-memory state (`Group`, `Member`, `GroupState`).
//! - `membership`: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the rebalance state machine.
//! - `offsets`: OffsetCommit, OffsetFetch, OffsetDelete and offset retention.
//! - `admin`: ListGroups, DescribeGroups, DeleteGroups.
//! - `records`: byte-exact codecs of `__consumer_offsets` records.
//! - `subscription`: reading topics out of a consumer protocol subscription.
//!
//! Concurrency: all groups sit behind one `parking_lot::Mutex`, held only for in-memory work
//! and never across an `.await` (its guard is not `Send`, so the compiler enforces that). Held
//! JoinGroup/SyncGroup answers are `oneshot` channels stored in the member and awaited by the
//! request's own task after the lock is released. Appends to the [`OffsetsLog`] are started
//! under the lock (so records of one partition are appended in decision order) and awaited
//! outside it.

mod admin;
mod membership;
mod metadata;
mod offsets;
pub mod records;
mod subscription;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use metadata::GroupState;
use metadata::{CommittedOffset, Group};
use records::RecordKey;

/// Kafka error codes the coordinator answers with.
pub mod error_codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}

/// How often expired offsets are removed (Kafka's `offsets.retention.check.interval.ms`).
const OFFSETS_RETENTION_CHECK_INTERVAL_MS: u64 = 600_000;
/// Longest pause of the timer loop between checks.
const TIMER_TICK_MS: u64 = 100;
/// A member that joined during a rebalance and went silent is dropped after this long
/// (Kafka's `NewMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 300_000;

/// Coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub offsets_topic_num_partitions: i32,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub offsets_retention_minutes: i64,
    pub offset_metadata_max_bytes: usize,
    pub node_id: i32,
}

impl Default for GroupConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        GroupConfig {
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 10080,
            offset_metadata_max_bytes: 4096,
            node_id: 0,
        }
    }
}

impl GroupConfig {
    fn offsets_retention_ms(&self) -> i64 {
        self.offsets_retention_minutes.saturating_mul(60_000)
    }
}

/// Where committed offsets and group metadata are persisted: the compacted `__consumer_offsets`
/// topic. Implemented by the broker over its partitions; records are (key, value) with value
/// None = tombstone.
///
/// The coordinator calls `append` while it holds its lock and awaits the future afterwards:
/// implementations must fix the order of records at the call, not when the future is polled.
pub trait OffsetsLog: Send + Sync + 'static {
    /// Append records to __consumer_offsets partition `partition`, durably (acks=all on one node).
    fn append(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> BoxFuture<'static, Result<(), i16>>;
    /// All records of the partition in offset order (for loading on start-up).
    fn read_all(&self, partition: i32) -> Result<Vec<(Bytes, Option<Bytes>)>, i16>;
}

/// "Does topic `t` have partition `p`?" — asked before accepting an offset commit.
pub type PartitionExists = Arc<dyn Fn(&str, i32) -> bool + Send + Sync>;

/// `__consumer_offsets` records as (key, value); a `None` value is a tombstone.
pub type OffsetsRecords = Vec<(Bytes, Option<Bytes>)>;

/// Records to append to one partition, decided under the lock.
struct PendingAppend {
    partition: i32,
    records: OffsetsRecords,
}

/// The current time, on both clocks the coordinator needs.
#[derive(Debug, Clone, Copy)]
struct Now {
    /// Monotonic, for deadlines (tokio's, so tests can pause it).
    instant: Instant,
    /// Wall clock in ms since the epoch, for commit and state timestamps.
    wall_ms: i64,
}

/// Wall-clock time derived from tokio's monotonic clock: the epoch time at start plus the
/// elapsed monotonic time. Tests with paused time thus see both clocks move together.
struct Clock {
    start_instant: Instant,
    start_wall_ms: i64,
}

impl Clock {
    fn new() -> Self {
        let start_wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            start_instant: Instant::now(),
            start_wall_ms,
        }
    }

    fn now(&self) -> Now {
        let instant = Instant::now();
        let elapsed_ms = instant.duration_since(self.start_instant).as_millis() as i64;
        Now {
            instant,
            wall_ms: self.start_wall_ms + elapsed_ms,
        }
    }
}

/// The group coordinator of this broker (single node: it leads every `__consumer_offsets`
/// partition).
pub struct GroupCoordinator {
    config: GroupConfig,
    log: Arc<dyn OffsetsLog>,
    partition_exists: PartitionExists,
    groups: Mutex<HashMap<String, Group>>,
    /// `__consumer_offsets` partitions this broker coordinates: loaded (true) or loading.
    owned: Mutex<HashMap<i32, bool>>,
    clock: Clock,
    /// Wakes the timer loop early (a deadline was set sooner than its next tick).
    wake: Notify,
    /// Taken under the lock with each offset commit append (see `offsets.rs`).
    commit_sequence: AtomicU64,
}

impl GroupCoordinator {
    pub fn new(
        config: GroupConfig,
        log: Arc<dyn OffsetsLog>,
        partition_exists: PartitionExists,
    ) -> Arc<Self> {
        assert!(
            config.offsets_topic_num_partitions > 0,
            "offsets.topic.num.partitions must be positive"
        );
        Arc::new(GroupCoordinator {
            config,
            log,
            partition_exists,
            groups: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            clock: Clock::new(),
            wake: Notify::new(),
            commit_sequence: AtomicU64::new(1),
        })
    }

    /// `__consumer_offsets` partition of a group: `Utils.abs(groupId.hashCode) % partitions`,
    /// where Kafka's `Utils.abs(x)` is `x & 0x7fffffff` (so `i32::MIN` maps to 0).
    pub fn partition_for(&self, group_id: &str) -> i32 {
        (java_string_hash(group_id) & 0x7fff_ffff) % self.config.offsets_topic_num_partitions
    }

    /// Loads every partition (a coordinator that owns them all: unit tests).
    #[cfg(test)]
    pub fn load(&self) -> Result<(), i16> {
        for partition in 0..self.config.offsets_topic_num_partitions {
            self.load_partition(partition)?;
        }
        Ok(())
    }

    /// Why this broker cannot coordinate `group_id` now: NOT_COORDINATOR when it does not lead
    /// the group's `__consumer_offsets` partition, COORDINATOR_LOAD_IN_PROGRESS while loading it.
    pub fn coordinator_error(&self, group_id: &str) -> Option<i16> {
        let partition = self.partition_for(group_id);
        let owned = self.owned.lock();
        match owned.get(&partition) {
            Some(true) => None,
            Some(false) => Some(error_codes::COORDINATOR_LOAD_IN_PROGRESS),
            None => Some(error_codes::NOT_COORDINATOR),
        }
    }

    /// This broker became leader of `__consumer_offsets` partition `partition` (Kafka's
    /// `onElection`): its groups and offsets are loaded from the log, replacing any stale copy.
    /// Later records of a key replace earlier ones; tombstones delete. Undecodable records are
    /// skipped with a warning.
    pub fn load_partition(&self, partition: i32) -> Result<(), i16> {
        self.owned.lock().insert(partition, false);
        let result = self.load_partition_records(partition);
        match result {
            Ok(()) => {
                self.owned.lock().insert(partition, true);
            }
            Err(_) => {
                self.owned.lock().remove(&partition);
            }
        }
        result
    }

    /// This broker no longer leads `partition` (Kafka's `onResignation`): its groups leave
    /// memory; requests for them get NOT_COORDINATOR.
    pub fn unload_partition(&self, partition: i32) {
        if self.owned.lock().remove(&partition).is_none() {
            return;
        }
        let mut groups = self.groups.lock();
        let before = groups.len();
        groups.retain(|_, g| g.partition != partition);
        tracing::info!(
            partition,
            unloaded_groups = before - groups.len(),
            "resigned as coordinator"
        );
    }

    fn load_partition_records(&self, partition: i32) -> Result<(), i16> {
        let now = self.clock.now();
        let mut offsets: HashMap<String, HashMap<(String, i32), CommittedOffset>> = HashMap::new();
        let mut group_records: HashMap<String, records::GroupMetadataValue> = HashMap::new();
        for (key, value) in self.log.read_all(partition)? {
            if let Err(e) =
                apply_loaded_record(&key, value.as_deref(), &mut offsets, &mut group_records)
            {
                tracing::warn!(partition, error = %e, "skipping undecodable __consumer_offsets record");
            }
        }
        let mut groups = self.groups.lock();
        groups.retain(|_, g| g.partition != partition);
        let mut loaded_groups = 0usize;
        for (group_id, record) in group_records {
            let group = Group::from_record(group_id.clone(), partition, record, now);
            groups.insert(group_id, group);
            loaded_groups += 1;
        }
        let mut loaded_offsets = 0usize;
        for (group_id, group_offsets) in offsets {
            let group = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(group_id, partition, now.wall_ms));
            loaded_offsets += group_offsets.len();
            group.offsets.extend(group_offsets);
        }
        if loaded_groups + loaded_offsets > 0 {
            tracing::info!(
                partition,
                loaded_groups,
                loaded_offsets,
                "loaded __consumer_offsets partition"
            );
        }
        Ok(())
    }

    /// Committed offset for (group, topic, partition).
    #[cfg(test)]
    pub fn committed_offsets(&self, group_id: &str) -> Vec<(String, i32, i64)> {
        let groups = self.groups.lock();
        groups
            .get(group_id)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|((topic, partition), o)| (topic.clone(), *partition, o.offset))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every committed offset of every group, as (group, topic, partition, offset): the
    /// source of the consumer-group lag metrics.
    pub fn all_committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.lock();
        let mut out = Vec::new();
        for (group_id, g) in groups.iter() {
            for ((topic, partition), o) in &g.offsets {
                out.push((group_id.clone(), topic.clone(), *partition, o.offset));
            }
        }
        out
    }

    /// Background timers: session expiry, rebalance timeouts, initial-rebalance delay, offset
    /// retention expiry. Runs until `shutdown` resolves; ticks at most every 100 ms or wakes on
    /// events.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut next_retention_check =
            Instant::now() + Duration::from_millis(OFFSETS_RETENTION_CHECK_INTERVAL_MS);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(TIMER_TICK_MS)) => {}
                _ = self.wake.notified() => {}
            }
            let now = self.clock.now();
            let appends = self.expire_timers(now);
            self.spawn_appends(appends);
            if now.instant >= next_retention_check {
                next_retention_check =
                    now.instant + Duration::from_millis(OFFSETS_RETENTION_CHECK_INTERVAL_MS);
                let appends = self.expire_offsets(now);
                self.spawn_appends(appends);
            }
        }
        tracing::debug!("group coordinator timers stopped");
    }

    /// Starts appends whose outcome no request waits for; failures are logged (the in-memory
    /// state stays authoritative until the next restart, as in Kafka).
    fn spawn_appends(&self, appends: Vec<PendingAppend>) {
        for append in appends {
            let partition = append.partition;
            let fut = self.log.append(append.partition, append.records);
            tokio::spawn(async move {
                if let Err(code) = fut.await {
                    tracing::warn!(partition, code, "append to __consumer_offsets failed");
                }
            });
        }
    }

    /// Starts appends and returns one future resolving to the first error, if any.
    fn start_appends(&self, appends: Vec<PendingAppend>) -> BoxFuture<'static, Result<(), i16>> {
        let futs: Vec<_> = appends
            .into_iter()
            .map(|a| self.log.append(a.partition, a.records))
            .collect();
        Box::pin(async move {
            for result in futures::future::join_all(futs).await {
                result?;
            }
            Ok(())
        })
    }
}

/// Applies one loaded record to the maps being rebuilt.
fn apply_loaded_record(
    key: &[u8],
    value: Option<&[u8]>,
    offsets: &mut HashMap<String, HashMap<(String, i32), CommittedOffset>>,
    groups: &mut HashMap<String, records::GroupMetadataValue>,
) -> Result<(), records::RecordError> {
    match records::decode_key(key)? {
        RecordKey::OffsetCommit {
            group,
            topic,
            partition,
        } => match value {
            None => {
                if let Some(g) = offsets.get_mut(&group) {
                    g.remove(&(topic, partition));
                }
            }
            Some(value) => {
                let v = records::decode_offset_commit_value(value)?;
                offsets.entry(group).or_default().insert(
                    (topic, partition),
                    CommittedOffset {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                        commit_timestamp_ms: v.commit_timestamp_ms,
                        expire_timestamp_ms: v.expire_timestamp_ms,
                        append_sequence: 0,
                    },
                );
            }
        },
        RecordKey::GroupMetadata { group } => match value {
            None => {
                groups.remove(&group);
            }
            Some(value) => {
                groups.insert(group, records::decode_group_metadata_value(value)?);
            }
        },
    }
    Ok(())
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32))
}

/// Records (key, value) of a group's metadata, or the error code to answer with.
fn group_metadata_append(group: &Group) -> Result<PendingAppend, i16> {
    let key = records::encode_group_metadata_key(&group.group_id);
    let value = records::encode_group_metadata_value(&group.to_record());
    match (key, value) {
        (Ok(key), Ok(value)) => Ok(PendingAppend {
            partition: group.partition,
            records: vec![(key, Some(value))],
        }),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(group = %group.group_id, error = %e, "cannot encode group metadata");
            Err(error_codes::UNKNOWN_SERVER_ERROR)
        }
    }
}
