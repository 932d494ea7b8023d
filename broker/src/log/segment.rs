//! `LogSegment`: one `<base>.log` file of record batches plus its `.index` and `.timeindex`.
//!
//! The `.log` file is the concatenation of v2 record batches exactly as produced (see
//! `batch.rs` for the header byte map), with base offset and leader epoch assigned by the
//! log. Nothing else is in the file: no segment header, no padding.
//!
//! Indexing follows Kafka's `LogSegment.append`: when more than `index_interval_bytes`
//! were appended since the last entry, the next batch written gets an offset index entry
//! (its LAST offset, its position) and the time index gets (max timestamp so far, offset
//! of that timestamp's batch) if that timestamp grew.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, BatchHeader, HEADER_SIZE};
use super::index::{OffsetIndex, TimeIndex};

/// A byte range of a segment file, handed to the network layer to send as-is.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

impl FileRegion {
    /// Reads the region into memory (tests, and callers without zero-copy send).
    pub fn read_to_vec(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

pub const CLEANED_SUFFIX: &str = ".cleaned";

pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}
pub fn index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}
pub fn time_index_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.timeindex")
}

/// Why recovery stopped reading a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub valid_bytes: u64,
    pub truncated_bytes: u64,
    pub batches: u64,
    pub reason: Option<String>,
}

/// Result of scanning the tail of a segment on open.
struct TailState {
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    consistent: bool,
}

#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    /// "" for a live segment, ".cleaned" while the cleaner builds its replacement.
    suffix: &'static str,
    log: Arc<File>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    size_bytes: u64,
    index_interval_bytes: u64,
    bytes_since_last_index_entry: u64,
    /// Largest batch max timestamp in the segment, -1 when empty.
    max_timestamp_so_far: i64,
    /// Last offset of the batch holding `max_timestamp_so_far`.
    offset_of_max_timestamp_so_far: i64,
    /// Offset after the last batch (== base_offset when empty).
    next_offset: i64,
    created_ms: i64,
    /// Max timestamp of the first batch: the clock for time-based rolls (Kafka's
    /// `rollingBasedTimestamp`).
    rolling_base_timestamp: Option<i64>,
}

impl LogSegment {
    /// Creates a new empty segment. Fails if a non-empty `.log` already exists there.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<LogSegment> {
        let log_path = dir.join(log_file_name(base_offset));
        if std::fs::metadata(&log_path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("segment {} already exists", log_path.display()),
            ));
        }
        let (segment, _) = Self::open(dir, base_offset, index_interval_bytes, now_ms)?;
        Ok(segment)
    }

    /// Creates the cleaner's replacement for segment `base_offset`: the same three files
    /// with a `.cleaned` suffix (any left over from an interrupted clean are discarded).
    pub fn create_cleaned(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<LogSegment> {
        let (segment, _) = Self::open_with_suffix(
            dir,
            base_offset,
            CLEANED_SUFFIX,
            index_interval_bytes,
            now_ms,
        )?;
        segment.log.set_len(0)?;
        let mut segment = segment;
        segment.size_bytes = 0;
        segment.offset_index.reset()?;
        segment.time_index.reset()?;
        segment.load_tail_state()?;
        Ok(segment)
    }

    /// Replaces `old` by this cleaned segment, crash-safely: first the old indexes are
    /// removed, then `.log.cleaned` is renamed over `.log`, then the new indexes are
    /// renamed into place. Every intermediate state pairs a log with matching or missing
    /// (hence empty, rebuilt lazily by scanning) indexes. Returns the reopened segment.
    pub fn install_cleaned(mut self, old: LogSegment, now_ms: i64) -> io::Result<LogSegment> {
        assert_eq!(self.suffix, CLEANED_SUFFIX);
        assert_eq!(self.base_offset, old.base_offset);
        self.flush()?;
        let dir = old.dir.clone();
        let base = old.base_offset;
        std::fs::remove_file(old.offset_index.path())?;
        std::fs::remove_file(old.time_index.path())?;
        std::fs::rename(self.log_path(), dir.join(log_file_name(base)))?;
        self.offset_index.rename(&dir.join(index_file_name(base)))?;
        self.time_index
            .rename(&dir.join(time_index_file_name(base)))?;
        let interval = self.index_interval_bytes;
        drop(self);
        drop(old);
        let (segment, needs_recovery) = Self::open(&dir, base, interval, now_ms)?;
        if needs_recovery {
            return Err(io::Error::other("cleaned segment failed its sanity check"));
        }
        Ok(segment)
    }

    /// Opens an existing (or creates a missing) segment. The returned flag is true when the
    /// segment needs recovery: an index failed its sanity check or the tail of the log does
    /// not parse.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<(LogSegment, bool)> {
        Self::open_with_suffix(dir, base_offset, "", index_interval_bytes, now_ms)
    }

    fn open_with_suffix(
        dir: &Path,
        base_offset: i64,
        suffix: &'static str,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<(LogSegment, bool)> {
        let path = |name: String| dir.join(name + suffix);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path(log_file_name(base_offset)))?;
        let size_bytes = log.metadata()?.len();
        let (offset_index, offset_problem) =
            OffsetIndex::open(&path(index_file_name(base_offset)))?;
        let (time_index, time_problem) = TimeIndex::open(&path(time_index_file_name(base_offset)))?;
        let mut segment = LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            suffix,
            log: Arc::new(log),
            offset_index,
            time_index,
            size_bytes,
            index_interval_bytes,
            bytes_since_last_index_entry: 0,
            max_timestamp_so_far: -1,
            offset_of_max_timestamp_so_far: base_offset,
            next_offset: base_offset,
            created_ms: now_ms,
            rolling_base_timestamp: None,
        };
        let mut needs_recovery = offset_problem.is_some() || time_problem.is_some();
        if let Some(reason) = offset_problem.or(time_problem) {
            tracing::warn!(segment = base_offset, %reason, "corrupt index, will rebuild");
        }
        if !needs_recovery {
            needs_recovery = !segment.load_tail_state()?;
        }
        Ok((segment, needs_recovery))
    }

    /// Sets next offset, max timestamp and rolling base from the indexes plus a scan of the
    /// batches after the last offset index entry. Returns false if that scan found bytes
    /// that are not whole batches or indexes that point past the end.
    fn load_tail_state(&mut self) -> io::Result<bool> {
        let last = self.offset_index.last_entry();
        if let Some(entry) = last {
            if u64::from(entry.position) >= self.size_bytes {
                return Ok(false);
            }
        }
        let start = last.map(|e| u64::from(e.position)).unwrap_or(0);
        let tail = self.scan_tail(start)?;
        self.next_offset = tail.next_offset;
        self.max_timestamp_so_far = tail.max_timestamp;
        self.offset_of_max_timestamp_so_far = tail.offset_of_max_timestamp;
        if let Some(t) = self.time_index.last_entry() {
            if t.timestamp > self.max_timestamp_so_far {
                self.max_timestamp_so_far = t.timestamp;
                self.offset_of_max_timestamp_so_far =
                    self.base_offset + i64::from(t.relative_offset);
            }
            if self.base_offset + i64::from(t.relative_offset) >= self.next_offset {
                return Ok(false);
            }
        }
        self.bytes_since_last_index_entry = self.size_bytes - start;
        self.rolling_base_timestamp = self.read_header_at(0)?.map(|h| h.max_timestamp);
        Ok(tail.consistent)
    }

    fn scan_tail(&self, start: u64) -> io::Result<TailState> {
        let mut state = TailState {
            next_offset: self.base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: self.base_offset,
            consistent: true,
        };
        let mut position = start;
        while position < self.size_bytes {
            let header = match self.read_header_at(position)? {
                Some(h) if h.batch_length >= batch::BATCH_LENGTH_MIN as i32 => h,
                _ => {
                    state.consistent = false;
                    break;
                }
            };
            let end = position + header.total_size() as u64;
            if end > self.size_bytes
                || header.base_offset < state.next_offset
                || header.last_offset_delta < 0
                || !self.fits_offset(header.last_offset())
            {
                state.consistent = false;
                break;
            }
            state.next_offset = header.last_offset() + 1;
            if header.max_timestamp > state.max_timestamp {
                state.max_timestamp = header.max_timestamp;
                state.offset_of_max_timestamp = header.last_offset();
            }
            position = end;
        }
        Ok(state)
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
    pub fn max_timestamp_so_far(&self) -> i64 {
        self.max_timestamp_so_far
    }
    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }
    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(log_file_name(self.base_offset) + self.suffix)
    }
    pub fn set_index_interval_bytes(&mut self, bytes: u64) {
        self.index_interval_bytes = bytes;
    }

    /// Kafka's `largestTimestamp`: the max batch timestamp, or the file's mtime if none.
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp_so_far >= 0 {
            return self.max_timestamp_so_far;
        }
        self.log
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn relative(&self, offset: i64) -> u32 {
        let rel = offset - self.base_offset;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&rel),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        rel as u32
    }

    /// Can a batch ending at `last_offset` go in this segment without overflowing u32?
    pub fn fits_offset(&self, last_offset: i64) -> bool {
        let rel = last_offset - self.base_offset;
        (0..=i64::from(u32::MAX)).contains(&rel)
    }

    /// Kafka's `shouldRoll` for a batch of `batch_bytes` with these offsets/timestamp.
    pub fn should_roll(
        &self,
        segment_bytes: u64,
        segment_ms: i64,
        batch_bytes: u64,
        max_timestamp: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> bool {
        if self.is_empty() {
            return false;
        }
        let waited_ms = match self.rolling_base_timestamp {
            Some(base) if max_timestamp >= 0 => max_timestamp.saturating_sub(base),
            _ => now_ms.saturating_sub(self.created_ms),
        };
        self.size_bytes + batch_bytes > segment_bytes
            || self.size_bytes + batch_bytes > u64::from(u32::MAX)
            || waited_ms > segment_ms
            || !self.fits_offset(last_offset)
    }

    /// Appends one batch whose header already carries its final base offset.
    pub fn append(
        &mut self,
        last_offset: i64,
        max_timestamp: i64,
        offset_of_max_timestamp: i64,
        batch_bytes: &[u8],
    ) -> io::Result<()> {
        let header = BatchHeader::parse(batch_bytes).map_err(io::Error::other)?;
        assert!(header.base_offset >= self.next_offset, "offsets must grow");
        assert_eq!(header.last_offset(), last_offset);
        assert!(self.fits_offset(last_offset));
        let position = self.size_bytes;
        assert!(position + batch_bytes.len() as u64 <= u64::from(u32::MAX));
        self.log.write_all_at(batch_bytes, position)?;
        self.size_bytes += batch_bytes.len() as u64;
        self.after_batch(
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            position,
            batch_bytes.len() as u64,
        )?;
        self.next_offset = last_offset + 1;
        Ok(())
    }

    /// Index bookkeeping for a batch that now sits at `position`.
    fn after_batch(
        &mut self,
        last_offset: i64,
        max_timestamp: i64,
        offset_of_max_timestamp: i64,
        position: u64,
        len: u64,
    ) -> io::Result<()> {
        if position == 0 {
            self.rolling_base_timestamp = Some(max_timestamp);
        }
        if max_timestamp > self.max_timestamp_so_far {
            self.max_timestamp_so_far = max_timestamp;
            self.offset_of_max_timestamp_so_far = offset_of_max_timestamp;
        }
        if self.bytes_since_last_index_entry > self.index_interval_bytes {
            self.offset_index
                .append(self.relative(last_offset), position as u32)?;
            let ts_rel = self.relative(self.offset_of_max_timestamp_so_far);
            self.time_index
                .maybe_append(self.max_timestamp_so_far, ts_rel)?;
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += len;
        Ok(())
    }

    /// Reads the 61-byte header at `position`, or `None` if fewer bytes remain.
    pub fn read_header_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + HEADER_SIZE as u64 > self.size_bytes {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_SIZE];
        self.log.read_exact_at(&mut buf, position)?;
        Ok(BatchHeader::parse(&buf).ok())
    }

    /// Reads a whole batch whose header was read at `position`.
    pub fn read_batch_at(&self, position: u64, header: &BatchHeader) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; header.total_size()];
        self.log.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }

    /// Position and header of the first batch with last offset >= `offset`, scanning from
    /// the offset index's lower bound. `None` if no such batch.
    pub fn translate_offset(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let mut position = u64::from(self.offset_index.lookup(rel).position);
        while let Some(header) = self.read_header_at(position)? {
            if header.batch_length < batch::BATCH_LENGTH_MIN as i32 {
                return Ok(None);
            }
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_size() as u64;
        }
        Ok(None)
    }

    /// The region of whole batches starting at the batch that contains `start_offset`,
    /// growing while the next batch fits in `max_bytes` (the first batch is always whole,
    /// even if larger), and never including a batch whose last offset is >=
    /// `max_offset_exclusive` (the high watermark).
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: u64,
        max_offset_exclusive: i64,
    ) -> io::Result<Option<FileRegion>> {
        let Some((start, first)) = self.translate_offset(start_offset)? else {
            return Ok(None);
        };
        if first.last_offset() >= max_offset_exclusive {
            return Ok(None);
        }
        let mut end = start + first.total_size() as u64;
        while end < self.size_bytes {
            let Some(next) = self.read_header_at(end)? else {
                break;
            };
            let next_size = next.total_size() as u64;
            if next.batch_length < batch::BATCH_LENGTH_MIN as i32
                || next.last_offset() >= max_offset_exclusive
                || end - start + next_size > max_bytes
                || end + next_size > self.size_bytes
            {
                break;
            }
            end += next_size;
        }
        Ok(Some(FileRegion {
            file: Arc::clone(&self.log),
            position: start,
            len: end - start,
        }))
    }

    /// Headers of every batch with last offset >= `from_offset`.
    pub fn batch_headers(&self, from_offset: i64) -> io::Result<Vec<(u64, BatchHeader)>> {
        let mut out = Vec::new();
        let Some((mut position, _)) = self.translate_offset(from_offset)? else {
            return Ok(out);
        };
        while let Some(header) = self.read_header_at(position)? {
            if header.batch_length < batch::BATCH_LENGTH_MIN as i32 {
                break;
            }
            out.push((position, header));
            position += header.total_size() as u64;
        }
        Ok(out)
    }

    /// First batch whose max timestamp >= `timestamp` and last offset >= `min_offset`.
    pub fn find_batch_by_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        if self.max_timestamp_so_far < timestamp {
            return Ok(None);
        }
        let from =
            (self.base_offset + i64::from(self.time_index.lookup(timestamp))).max(min_offset);
        let Some((mut position, _)) = self.translate_offset(from)? else {
            return Ok(None);
        };
        while let Some(header) = self.read_header_at(position)? {
            if header.batch_length < batch::BATCH_LENGTH_MIN as i32 {
                break;
            }
            if header.max_timestamp >= timestamp && header.last_offset() >= min_offset {
                return Ok(Some((position, header)));
            }
            position += header.total_size() as u64;
        }
        Ok(None)
    }

    /// Rebuilds both indexes and the in-memory state by validating every batch from
    /// position 0; cuts the file at the first batch that is torn, corrupt, out of order or
    /// larger than `max_batch_bytes`.
    pub fn recover(&mut self, max_batch_bytes: usize) -> io::Result<RecoveryReport> {
        self.offset_index.reset()?;
        self.time_index.reset()?;
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp_so_far = -1;
        self.offset_of_max_timestamp_so_far = self.base_offset;
        self.next_offset = self.base_offset;
        self.rolling_base_timestamp = None;
        let mut position = 0u64;
        let mut batches = 0u64;
        let mut reason = None;
        let mut buf = Vec::new();
        while position < self.size_bytes {
            match self.recover_one(position, max_batch_bytes, &mut buf)? {
                Ok(header) => {
                    let len = header.total_size() as u64;
                    self.after_batch(
                        header.last_offset(),
                        header.max_timestamp,
                        header.last_offset(),
                        position,
                        len,
                    )?;
                    self.next_offset = header.last_offset() + 1;
                    position += len;
                    batches += 1;
                }
                Err(why) => {
                    reason = Some(why);
                    break;
                }
            }
        }
        let truncated_bytes = self.size_bytes - position;
        if truncated_bytes > 0 {
            tracing::warn!(
                segment = self.base_offset,
                position,
                truncated_bytes,
                reason = reason.as_deref().unwrap_or(""),
                "truncating invalid tail of log segment"
            );
            self.log.set_len(position)?;
            self.size_bytes = position;
        }
        Ok(RecoveryReport {
            valid_bytes: position,
            truncated_bytes,
            batches,
            reason,
        })
    }

    /// Validates the batch at `position`; the inner error says why it is not valid.
    fn recover_one(
        &self,
        position: u64,
        max_batch_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> io::Result<Result<BatchHeader, String>> {
        let Some(header) = self.read_header_at(position)? else {
            return Ok(Err("torn batch header".into()));
        };
        let remaining = self.size_bytes - position;
        if header.batch_length < batch::BATCH_LENGTH_MIN as i32
            || header.total_size() as u64 > remaining
            || header.total_size() > max_batch_bytes
        {
            return Ok(Err(format!("bad batch length {}", header.batch_length)));
        }
        if header.base_offset < self.next_offset || !self.fits_offset(header.last_offset()) {
            return Ok(Err(format!("offset {} out of order", header.base_offset)));
        }
        buf.resize(header.total_size(), 0);
        self.log.read_exact_at(buf, position)?;
        Ok(batch::validate_batch(buf, max_batch_bytes).map_err(|e| e.to_string()))
    }

    /// Removes every batch with last offset >= `offset` (cuts at the batch containing it).
    /// Returns the number of bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<u64> {
        let Some((position, _)) = self.translate_offset(offset)? else {
            return Ok(0);
        };
        let removed = self.size_bytes - position;
        self.log.set_len(position)?;
        self.size_bytes = position;
        self.offset_index.truncate_to_position(position as u32)?;
        let rel = (offset - self.base_offset).max(0) as u32;
        self.time_index.truncate_to(rel)?;
        if !self.load_tail_state()? {
            // The prefix was valid before the cut, so this is an I/O-level surprise.
            return Err(io::Error::other("segment inconsistent after truncation"));
        }
        Ok(removed)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.log.sync_data()?;
        self.offset_index.flush()?;
        self.time_index.flush()
    }

    /// Renames the three files with a `.deleted` suffix, then removes them (Kafka's
    /// two-step delete, without the asynchronous delay: readers holding the `Arc<File>`
    /// keep reading the unlinked inode).
    pub fn delete(mut self) -> io::Result<()> {
        let log_path = self.log_path();
        let deleted = |p: &Path| {
            let mut s = p.as_os_str().to_owned();
            s.push(".deleted");
            PathBuf::from(s)
        };
        let log_deleted = deleted(&log_path);
        std::fs::rename(&log_path, &log_deleted)?;
        let idx_deleted = deleted(self.offset_index.path());
        self.offset_index.rename(&idx_deleted)?;
        let time_deleted = deleted(self.time_index.path());
        self.time_index.rename(&time_deleted)?;
        for p in [log_deleted, idx_deleted, time_deleted] {
            std::fs::remove_file(p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::test_util::simple_batch;
    use super::*;

    fn append_at(seg: &mut LogSegment, offset: i64, mut bytes: Vec<u8>) -> Vec<u8> {
        batch::set_base_offset_and_epoch(&mut bytes, offset, 0);
        let h = BatchHeader::parse(&bytes).unwrap();
        seg.append(h.last_offset(), h.max_timestamp, h.last_offset(), &bytes)
            .unwrap();
        bytes
    }

    #[test]
    fn sparse_index_entries_follow_kafkas_crossing_rule() {
        // Proves an entry is written for the batch after > interval bytes accumulated,
        // indexed by that batch's last offset and position.
        let dir = tempfile::tempdir().unwrap();
        let mut seg = LogSegment::create(dir.path(), 100, 100, 0).unwrap();
        let b = simple_batch(2, 10, 20); // ~ 120 bytes
        let len = b.len() as u32;
        for i in 0..4 {
            append_at(&mut seg, 100 + 2 * i, b.clone());
        }
        let entries = seg.offset_index().entries().to_vec();
        assert_eq!(entries.len(), 3);
        assert_eq!((entries[0].relative_offset, entries[0].position), (3, len));
        assert_eq!(
            (entries[1].relative_offset, entries[1].position),
            (5, 2 * len)
        );
        let r = seg.read(105, 1, i64::MAX).unwrap().unwrap();
        assert_eq!((r.position, r.len), (2 * u64::from(len), u64::from(len)));
        // HW excludes batches whose last offset reaches it.
        assert!(seg.read(106, 1 << 20, 106).unwrap().is_none());
        let r = seg.read(100, 1 << 20, 106).unwrap().unwrap();
        assert_eq!(r.len, 3 * u64::from(len));
    }
}
