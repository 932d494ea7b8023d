//! Segmented log storage for one partition, on disk exactly as Apache Kafka lays it out.
//!
//! Module map:
//! - [`batch`]      — the v2 record batch header (byte map), produce-time validation.
//! - [`index`]      — `OffsetIndex` (`.index`) and `TimeIndex` (`.timeindex`).
//! - [`segment`]    — `LogSegment`: one `.log` + its two indexes; append, read, recover.
//! - [`checkpoint`] — Kafka's "version / count / entries" checkpoint text files.
//! - [`cleaner`]    — retention (delete policy) and compaction, as methods on [`Log`].
//!
//! A partition directory `<log.dir>/<topic>-<partition>/` holds
//! `<20-digit base offset>.log|.index|.timeindex` per segment, plus three per-partition
//! checkpoint files written by Kairos (see `checkpoint.rs`): `log-start-offset`,
//! `recovery-point` (offset below which everything was fsynced) and `cleaner-offset`
//! (offset up to which compaction has cleaned). Kafka keeps the first two in per-log.dir
//! files; per-partition files keep each `Log` self-contained.
//!
//! Invariants of [`Log`] (asserted where they matter):
//! 1. There is always at least one segment; the last one is the active segment.
//! 2. Segments are keyed by base offset; each segment's offsets lie in
//!    `[base_offset, next segment's base_offset)`.
//! 3. `log_end_offset() == active segment's next_offset()`.
//! 4. `log_start_offset() <= log_end_offset()`, and `>= first segment's base offset`.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod index;
pub mod segment;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use thiserror::Error;

pub use batch::{BatchError, BatchHeader};
pub use cleaner::{CompactResult, RetentionResult};
pub use segment::{FileRegion, LogSegment};

const LOG_START_OFFSET_FILE: &str = "log-start-offset";
const RECOVERY_POINT_FILE: &str = "recovery-point";
const CLEANER_OFFSET_FILE: &str = "cleaner-offset";
/// Suffixes of files left behind by an interrupted delete / clean / checkpoint write.
const STRAY_SUFFIXES: [&str; 4] = [".deleted", ".cleaned", ".swap", ".tmp"];

/// Per-topic log configuration with Kafka's names (in snake case) and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first timestamp is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: -1 keeps data forever.
    pub retention_ms: i64,
    /// `retention.bytes`: -1 means no size limit.
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: usize,
    /// `flush.messages`: fsync after this many records (u64::MAX: leave it to the OS).
    pub flush_messages: u64,
    /// `flush.ms`: fsync when the last flush is this old (i64::MAX: never).
    pub flush_ms: i64,
    /// `cleanup.policy` contains `compact`.
    pub cleanup_policy_compact: bool,
    /// `cleanup.policy` contains `delete`.
    pub cleanup_policy_delete: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `file.delete.delay.ms` (kept for config fidelity; deletes here are immediate).
    pub file_delete_delay_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            cleanup_policy_compact: false,
            cleanup_policy_delete: true,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            file_delete_delay_ms: 60_000,
        }
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    #[error("storage error: {0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("storage error: corrupt data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl LogError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::OffsetOutOfRange { .. } => 1,
            LogError::Batch(e) => e.kafka_error_code(),
            LogError::Io(_) | LogError::Checkpoint(_) | LogError::Corrupt { .. } => 56,
        }
    }
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Last offset of the batch holding `max_timestamp` (Kafka's shallow offset).
    pub offset_of_max_timestamp: i64,
    pub log_append_time_ms: i64,
    pub record_count: u64,
}

impl AppendInfo {
    /// Nothing appended yet at `first_offset`.
    fn empty_at(first_offset: i64, log_append_time_ms: i64) -> Self {
        AppendInfo {
            first_offset,
            last_offset: first_offset - 1,
            max_timestamp: -1,
            offset_of_max_timestamp: first_offset,
            log_append_time_ms,
            record_count: 0,
        }
    }
}

/// What a read found: file regions of whole batches, in offset order.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub regions: Vec<FileRegion>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

impl ReadResult {
    pub fn total_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.len).sum()
    }

    /// Concatenated bytes of every region (for callers that cannot send files directly).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.total_bytes() as usize);
        for region in &self.regions {
            out.extend(region.read_to_vec()?);
        }
        Ok(out)
    }
}

/// The log of one partition replica (Kafka's `UnifiedLog` + `LocalLog`).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    /// Everything below this offset has been fsynced.
    recovery_point: i64,
    unflushed_records: u64,
    last_flush_ms: i64,
}

fn now_wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses `<20 digits>.log` into a base offset.
fn parse_segment_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl Log {
    /// Opens the log in `dir` (created if missing). `recover` says the broker did not shut
    /// down cleanly: every segment from the one holding the recovery point on, and always
    /// the active one, is re-validated and its indexes rebuilt. Segments whose indexes fail
    /// their sanity check are recovered either way.
    pub fn open(dir: &Path, config: LogConfig, recover: bool) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir)?;
        let now_ms = now_wall_ms();
        let base_offsets = Self::scan_dir(dir)?;
        let mut segments = BTreeMap::new();
        let mut needs_recovery = Vec::new();
        for base in base_offsets {
            let (segment, needs) =
                LogSegment::open(dir, base, config.index_interval_bytes, now_ms)?;
            if needs {
                needs_recovery.push(base);
            }
            segments.insert(base, segment);
        }
        let recovery_point = checkpoint::read_offset(&dir.join(RECOVERY_POINT_FILE))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable recovery point, recovering everything");
                None
            })
            .unwrap_or(0);
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: 0,
            recovery_point,
            unflushed_records: 0,
            last_flush_ms: now_ms,
        };
        log.recover_segments(recover, &needs_recovery)?;
        let stored_start = checkpoint::read_offset(&dir.join(LOG_START_OFFSET_FILE));
        if log.segments.is_empty() {
            let start = stored_start
                .as_ref()
                .ok()
                .copied()
                .flatten()
                .unwrap_or(0)
                .max(0);
            let segment = LogSegment::create(dir, start, log.config.index_interval_bytes, now_ms)?;
            log.segments.insert(start, segment);
        }
        let first_base = log.first_segment().base_offset();
        let stored_start = match stored_start {
            Ok(v) => v.unwrap_or(first_base),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable log start offset, using first segment");
                first_base
            }
        };
        log.log_start_offset = stored_start.max(first_base).min(log.log_end_offset());
        log.recovery_point = log.recovery_point.min(log.log_end_offset());
        log.check_invariants();
        Ok(log)
    }

    /// Lists segment base offsets; removes stray temporary files and orphan indexes.
    fn scan_dir(dir: &Path) -> Result<Vec<i64>, LogError> {
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if STRAY_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                tracing::info!(file = name, "removing stray file");
                std::fs::remove_file(entry.path())?;
            } else if let Some(base) = parse_segment_name(name) {
                bases.push(base);
            } else if name.ends_with(".index") || name.ends_with(".timeindex") {
                index_files.push((name.to_owned(), entry.path()));
            }
        }
        for (name, path) in index_files {
            let stem = name.split('.').next().unwrap_or("");
            let has_log = stem
                .parse::<i64>()
                .map(|b| bases.contains(&b))
                .unwrap_or(false);
            if !has_log {
                tracing::info!(file = name, "removing index without a log file");
                std::fs::remove_file(path)?;
            }
        }
        bases.sort_unstable();
        Ok(bases)
    }

    fn recover_segments(&mut self, recover: bool, needs: &[i64]) -> Result<(), LogError> {
        let Some(&last_base) = self.segments.keys().next_back() else {
            return Ok(());
        };
        let recovery_floor = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(i64::MIN);
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let max_batch_bytes = self.recovery_batch_bytes_max();
        let mut truncated_at = None;
        for base in bases {
            let must =
                needs.contains(&base) || (recover && (base >= recovery_floor || base == last_base));
            if !must {
                continue;
            }
            let Some(segment) = self.segments.get_mut(&base) else {
                continue;
            };
            let report = segment.recover(max_batch_bytes)?;
            if report.truncated_bytes > 0 {
                truncated_at = Some(base);
                break;
            }
        }
        if let Some(base) = truncated_at {
            // Everything after a torn segment is unreachable: Kafka deletes it.
            let later: Vec<i64> = self.segments.range(base + 1..).map(|(b, _)| *b).collect();
            for b in later {
                if let Some(segment) = self.segments.remove(&b) {
                    tracing::warn!(segment = b, "deleting segment after truncated tail");
                    segment.delete()?;
                }
            }
        }
        Ok(())
    }

    /// Recovery refuses batches above this size; stored batches were accepted under the
    /// config at their produce time, so allow any size a segment could hold.
    fn recovery_batch_bytes_max(&self) -> usize {
        let segment_max = usize::try_from(self.config.segment_bytes).unwrap_or(usize::MAX);
        self.config
            .max_message_bytes
            .max(segment_max)
            .min(i32::MAX as usize)
    }

    fn check_invariants(&self) {
        assert!(
            !self.segments.is_empty(),
            "a log always has an active segment"
        );
        assert!(self.log_start_offset <= self.log_end_offset());
        assert!(self.log_start_offset >= self.first_segment().base_offset());
    }

    fn first_segment(&self) -> &LogSegment {
        self.segments
            .values()
            .next()
            .expect("invariant 1: at least one segment")
    }

    fn active_segment(&self) -> &LogSegment {
        self.segments
            .values()
            .next_back()
            .expect("invariant 1: at least one segment")
    }

    fn active_segment_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("invariant 1: at least one segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active_segment().next_offset()
    }

    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    pub fn update_config(&mut self, config: LogConfig) {
        for segment in self.segments.values_mut() {
            segment.set_index_interval_bytes(config.index_interval_bytes);
        }
        self.config = config;
    }

    /// Starts a new empty active segment at the log end offset (no-op if the active
    /// segment is already empty).
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.active_segment().is_empty() {
            return Ok(());
        }
        let base = self.log_end_offset();
        self.active_segment().flush()?;
        let segment =
            LogSegment::create(&self.dir, base, self.config.index_interval_bytes, now_ms)?;
        self.segments.insert(base, segment);
        // Every segment below `base` was fsynced when it rolled: recovery after a crash only
        // needs to look at the new active segment (Kafka advances its recovery point likewise).
        if self.recovery_point < base {
            self.recovery_point = base;
            checkpoint::write_offset(&self.dir.join(RECOVERY_POINT_FILE), base)?;
        }
        Ok(())
    }

    /// Appends already-validated v2 batches laid back to back, assigning offsets from the
    /// log end offset: each batch's baseOffset and partitionLeaderEpoch are rewritten in
    /// place (the CRC does not cover them). Rolls before a batch that does not fit.
    pub fn append(
        &mut self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let first_offset = self.log_end_offset();
        let mut info = AppendInfo::empty_at(first_offset, now_ms);
        // Check framing of every batch before writing any, so a bad blob writes nothing.
        let spans = Self::batch_spans(batches, self.config.segment_bytes, false)?;
        for (start, end) in spans {
            let bytes = &mut batches[start..end];
            let header = BatchHeader::parse(bytes)?;
            let base = self.log_end_offset();
            batch::set_base_offset_and_epoch(bytes, base, leader_epoch);
            self.append_batch(bytes, &header, base, now_ms, &mut info)?;
        }
        self.after_append(&info, now_ms)?;
        Ok(info)
    }

    /// Appends batches fetched from the leader as they are: offsets and leader epochs kept. The
    /// first batch must start at the log end offset and the rest follow on; a torn last batch
    /// (a leader may cut a response mid-batch) is left for the next fetch.
    pub fn append_as_follower(
        &mut self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<(AppendInfo, Vec<BatchHeader>), LogError> {
        let first_offset = self.log_end_offset();
        let mut info = AppendInfo::empty_at(first_offset, -1);
        // Check every batch before writing any, so a bad one in the middle writes nothing.
        let spans = Self::batch_spans(batches, self.config.segment_bytes, true)?;
        let mut headers = Vec::with_capacity(spans.len());
        let mut next = first_offset;
        for &(start, end) in &spans {
            let header = batch::validate_batch(&batches[start..end], usize::MAX)?;
            if header.base_offset != next {
                return Err(LogError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!(
                        "fetched batch starts at offset {} but the log ends at {next}",
                        header.base_offset
                    ),
                });
            }
            next = header
                .base_offset
                .saturating_add(i64::from(header.last_offset_delta) + 1);
            headers.push(header);
        }
        for (&(start, end), header) in spans.iter().zip(&headers) {
            let base = self.log_end_offset();
            self.append_batch(&batches[start..end], header, base, now_ms, &mut info)?;
        }
        self.after_append(&info, now_ms)?;
        Ok((info, headers))
    }

    /// Writes one batch whose base offset is `base` (= the log end offset), rolling first when
    /// it does not fit the active segment.
    fn append_batch(
        &mut self,
        bytes: &[u8],
        header: &BatchHeader,
        base: i64,
        now_ms: i64,
        info: &mut AppendInfo,
    ) -> Result<(), LogError> {
        let last = base + i64::from(header.last_offset_delta);
        let should_roll = self.active_segment().should_roll(
            self.config.segment_bytes,
            self.config.segment_ms,
            bytes.len() as u64,
            header.max_timestamp,
            last,
            now_ms,
        );
        if should_roll {
            self.roll(now_ms)?;
        }
        self.active_segment_mut()
            .append(last, header.max_timestamp, last, bytes)?;
        info.last_offset = last;
        info.record_count += u64::from(header.record_count.max(0) as u32);
        if header.max_timestamp > info.max_timestamp {
            info.max_timestamp = header.max_timestamp;
            info.offset_of_max_timestamp = last;
        }
        Ok(())
    }

    /// Counts appended records toward `flush.messages` / `flush.ms`.
    fn after_append(&mut self, info: &AppendInfo, now_ms: i64) -> Result<(), LogError> {
        self.unflushed_records += info.record_count;
        if self.unflushed_records >= self.config.flush_messages
            || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.flush_at(now_ms)?;
        }
        Ok(())
    }

    /// Splits a blob into batch byte ranges, checking each length field (never trusting
    /// the caller's validation for memory safety). With `torn_tail_ok` (a fetched response,
    /// which a leader may cut mid-batch) a last batch running past the end is left out, and
    /// no batch at all is not an error.
    fn batch_spans(
        bytes: &[u8],
        segment_bytes: u64,
        torn_tail_ok: bool,
    ) -> Result<Vec<(usize, usize)>, LogError> {
        let mut spans = Vec::new();
        let mut position = 0;
        while position < bytes.len() {
            if torn_tail_ok && bytes.len() - position < batch::HEADER_SIZE {
                break;
            }
            let header = BatchHeader::parse(&bytes[position..])?;
            let size = header.total_size();
            let torn = size > bytes.len() - position;
            if header.batch_length < batch::BATCH_LENGTH_MIN as i32
                || header.last_offset_delta < 0
                || (torn && !torn_tail_ok)
            {
                return Err(BatchError::CorruptMessage(format!(
                    "malformed batch at byte {position}"
                ))
                .into());
            }
            if torn {
                break;
            }
            if size as u64 > segment_bytes {
                return Err(BatchError::RecordListTooLarge {
                    size,
                    max: segment_bytes as usize,
                }
                .into());
            }
            spans.push((position, position + size));
            position += size;
        }
        if spans.is_empty() && !torn_tail_ok {
            return Err(BatchError::CorruptMessage("no record batches".into()).into());
        }
        Ok(spans)
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    /// Reads whole batches from `offset` (starting at the batch containing it), up to
    /// `max_bytes` but at least one batch, never including batches at or beyond
    /// `max_offset_exclusive` (the high watermark). May span several segments.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<ReadResult, LogError> {
        self.read_batches(offset, max_bytes, max_offset_exclusive, true)
    }

    /// [`read`](Self::read), where `min_one_batch` says whether a first batch larger than
    /// `max_bytes` is returned whole (Kafka's `minOneMessage`, KIP-74: true for the first
    /// partition of a fetch response that returns data, so a consumer always progresses) or
    /// not at all (every later partition: the response stays within the fetch's `max_bytes`).
    pub fn read_batches(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        let mut result = ReadResult {
            regions: Vec::new(),
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        };
        let limit = max_offset_exclusive.min(self.log_end_offset());
        let first_base = self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(i64::MIN);
        let mut remaining = max_bytes as u64;
        for segment in self.segments.range(first_base..).map(|(_, s)| s) {
            let start = offset.max(segment.base_offset());
            if start >= limit {
                break;
            }
            let Some(region) = segment.read(start, remaining, limit)? else {
                continue;
            };
            if (!result.regions.is_empty() || !min_one_batch) && region.len > remaining {
                break; // only the very first batch may exceed max_bytes, if allowed to
            }
            let reached_end = region.position + region.len == segment.size_bytes();
            remaining = remaining.saturating_sub(region.len);
            result.regions.push(region);
            if !reached_end || remaining == 0 {
                break;
            }
        }
        Ok(result)
    }

    /// Headers of every batch with last offset >= `from_offset` (for rebuilding producer
    /// state on start), reading only the 61-byte headers.
    pub fn batch_headers(&self, from_offset: i64) -> Result<Vec<BatchHeader>, LogError> {
        let first_base = self
            .segments
            .range(..=from_offset)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(i64::MIN);
        let mut out = Vec::new();
        for segment in self.segments.range(first_base..).map(|(_, s)| s) {
            out.extend(
                segment
                    .batch_headers(from_offset)?
                    .into_iter()
                    .map(|(_, h)| h),
            );
        }
        Ok(out)
    }

    /// Decodes the records of the batch stored at `position` of `segment`.
    fn decode_batch_at(
        segment: &LogSegment,
        position: u64,
        header: &BatchHeader,
    ) -> Result<Vec<Record>, LogError> {
        let bytes = segment.read_batch_at(position, header)?;
        batch::validate_batch(&bytes, usize::MAX).map_err(|e| LogError::Corrupt {
            path: segment.log_path(),
            reason: e.to_string(),
        })?;
        let mut buf = Bytes::from(bytes);
        RecordBatchDecoder::decode(&mut buf)
            .map(|set| set.records)
            .map_err(|e| LogError::Corrupt {
                path: segment.log_path(),
                reason: format!("batch at position {position}: {e}"),
            })
    }

    /// ListOffsets by timestamp: the first record (offset at or above the log start) whose
    /// timestamp is at least `timestamp`, as (offset, timestamp). For log-append-time batches every record
    /// carries the batch's max timestamp.
    pub fn fetch_offset_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.next_offset() <= self.log_start_offset {
                continue;
            }
            let Some((position, header)) =
                segment.find_batch_by_timestamp(timestamp, self.log_start_offset)?
            else {
                continue;
            };
            let records = Self::decode_batch_at(segment, position, &header)?;
            let found = records.iter().find_map(|r| {
                let ts = if header.is_log_append_time() {
                    header.max_timestamp
                } else {
                    r.timestamp
                };
                (ts >= timestamp && r.offset >= self.log_start_offset).then_some((r.offset, ts))
            });
            return Ok(Some(
                found.unwrap_or((header.last_offset(), header.max_timestamp)),
            ));
        }
        Ok(None)
    }

    /// ListOffsets -3 (KIP-734): the record with the largest timestamp, as
    /// (offset, timestamp); the first such record when several share it.
    pub fn max_timestamp_and_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let best = self
            .segments
            .values()
            .filter(|s| !s.is_empty() && s.next_offset() > self.log_start_offset)
            .fold(None::<&LogSegment>, |best, s| match best {
                Some(b) if b.max_timestamp_so_far() >= s.max_timestamp_so_far() => Some(b),
                _ => Some(s),
            });
        let Some(segment) = best else { return Ok(None) };
        let max_ts = segment.max_timestamp_so_far();
        let Some((position, header)) =
            segment.find_batch_by_timestamp(max_ts, self.log_start_offset)?
        else {
            return Ok(None);
        };
        if header.is_log_append_time() {
            return Ok(Some((
                header.base_offset.max(self.log_start_offset),
                max_ts,
            )));
        }
        let records = Self::decode_batch_at(segment, position, &header)?;
        let found = records
            .iter()
            .find(|r| r.timestamp == max_ts && r.offset >= self.log_start_offset)
            .map(|r| (r.offset, max_ts));
        Ok(Some(found.unwrap_or((header.last_offset(), max_ts))))
    }

    /// DeleteRecords: raises the log start offset to `offset` and deletes the segments
    /// wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset > self.log_end_offset() || offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        checkpoint::write_offset(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
        self.delete_segments_below_log_start(now_wall_ms())?;
        self.check_invariants();
        Ok(self.log_start_offset)
    }

    /// Deletes segments whose every offset is below the log start offset, rolling the
    /// active segment first if it too is wholly below.
    fn delete_segments_below_log_start(&mut self, now_ms: i64) -> Result<usize, LogError> {
        if self.active_segment().next_offset() <= self.log_start_offset
            && !self.active_segment().is_empty()
        {
            self.roll(now_ms)?;
        }
        let doomed: Vec<i64> = self
            .segments
            .iter()
            .rev()
            .skip(1)
            .filter(|(_, s)| s.next_offset() <= self.log_start_offset)
            .map(|(b, _)| *b)
            .collect();
        for base in &doomed {
            self.delete_segment(*base)?;
        }
        Ok(doomed.len())
    }

    fn delete_segment(&mut self, base: i64) -> Result<(), LogError> {
        assert_ne!(
            Some(&base),
            self.segments.keys().next_back(),
            "never the active segment"
        );
        if let Some(segment) = self.segments.remove(&base) {
            segment.delete()?;
        }
        Ok(())
    }

    /// Removes every record at or after `offset` (cutting at the batch containing it), for
    /// follower truncation. Below the log start the log is emptied and restarts at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let offset = offset.max(0);
        if offset < self.log_start_offset || offset < self.first_segment().base_offset() {
            return self.truncate_fully_and_start_at(offset);
        } else {
            let later: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
            for base in later {
                if let Some(segment) = self.segments.remove(&base) {
                    segment.delete()?;
                }
            }
            self.active_segment_mut().truncate_to(offset)?;
            let start = self.log_start_offset.min(self.log_end_offset());
            if start != self.log_start_offset {
                self.log_start_offset = start;
                checkpoint::write_offset(&self.dir.join(LOG_START_OFFSET_FILE), start)?;
            }
        }
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        checkpoint::write_offset(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point)?;
        self.check_invariants();
        Ok(())
    }

    /// Deletes every segment and restarts the log, empty, at `offset` (a follower whose fetch
    /// offset fell below the leader's log start).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        let offset = offset.max(0);
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        let segment = LogSegment::create(
            &self.dir,
            offset,
            self.config.index_interval_bytes,
            now_wall_ms(),
        )?;
        self.segments.insert(offset, segment);
        self.log_start_offset = offset;
        self.recovery_point = offset;
        checkpoint::write_offset(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
        checkpoint::write_offset(&self.dir.join(RECOVERY_POINT_FILE), offset)?;
        self.check_invariants();
        Ok(())
    }

    /// Raises the log start offset to `offset` (a follower follows the leader's log start)
    /// and deletes the segments wholly below it.
    pub fn maybe_increment_log_start(&mut self, offset: i64) -> Result<(), LogError> {
        if offset <= self.log_start_offset || offset > self.log_end_offset() {
            return Ok(());
        }
        self.delete_records_before(offset).map(|_| ())
    }

    /// Fsyncs every segment above the recovery point and checkpoints it.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.flush_at(now_wall_ms())
    }

    /// `flush.ms` for an idle log: fsyncs when records are waiting and the last flush is at
    /// least `flush_ms` old. Returns whether it flushed. (Appends check the same rule.)
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if self.unflushed_records == 0
            || now_ms.saturating_sub(self.last_flush_ms) < self.config.flush_ms
        {
            return Ok(false);
        }
        self.flush_at(now_ms)?;
        Ok(true)
    }

    /// Records appended since the last fsync.
    pub fn unflushed_records(&self) -> u64 {
        self.unflushed_records
    }

    fn flush_at(&mut self, now_ms: i64) -> Result<(), LogError> {
        let floor = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(i64::MIN);
        for segment in self.segments.range(floor..).map(|(_, s)| s) {
            segment.flush()?;
        }
        self.recovery_point = self.log_end_offset();
        checkpoint::write_offset(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point)?;
        self.unflushed_records = 0;
        self.last_flush_ms = now_ms;
        Ok(())
    }

    /// Flushes and checkpoints; the next `open` need not recover.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()
    }

    fn cleaner_offset_path(&self) -> PathBuf {
        self.dir.join(CLEANER_OFFSET_FILE)
    }
}

#[cfg(test)]
mod tests;
