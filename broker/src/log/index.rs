//! Kafka's sparse segment indexes: `OffsetIndex` (`.index`) and `TimeIndex` (`.timeindex`).
//!
//! Both keep an in-memory mirror of every entry and append new entries to the file, which
//! holds exactly the entries (Kafka preallocates and trims on close; the trimmed file is the
//! same bytes). A file that fails the sanity check on load (length not a multiple of the
//! entry size, entries not increasing) is reset to empty and reported to the caller, who
//! rebuilds it from the log: a corrupt index is never fatal.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One `.index` entry.
///
/// Byte map (8 bytes, big-endian):
/// ```text
/// 0  4  relative offset u32  (absolute offset - segment base offset)
/// 4  4  physical position u32 (byte position of the batch in the .log file)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    pub relative_offset: u32,
    pub position: u32,
}

pub const OFFSET_INDEX_ENTRY_SIZE: usize = 8;

/// One `.timeindex` entry.
///
/// Byte map (12 bytes, big-endian):
/// ```text
/// 0  8  timestamp i64        (largest timestamp in the segment so far, ms)
/// 8  4  relative offset u32  (offset of the batch that holds that timestamp - base)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub relative_offset: u32,
}

pub const TIME_INDEX_ENTRY_SIZE: usize = 12;

fn open_and_read(path: &Path) -> io::Result<(File, Vec<u8>)> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((file, bytes))
}

/// Sparse map from offset to file position for one segment.
#[derive(Debug)]
pub struct OffsetIndex {
    path: PathBuf,
    file: File,
    entries: Vec<OffsetPosition>,
}

impl OffsetIndex {
    /// Opens (or creates) the index file. Returns `Some(reason)` when the file was corrupt;
    /// it has then been reset to empty and the caller must rebuild it.
    pub fn open(path: &Path) -> io::Result<(OffsetIndex, Option<String>)> {
        let (file, bytes) = open_and_read(path)?;
        let mut index = OffsetIndex {
            path: path.to_path_buf(),
            file,
            entries: Vec::with_capacity(bytes.len() / OFFSET_INDEX_ENTRY_SIZE),
        };
        let problem = index.load(&bytes);
        if problem.is_some() {
            index.reset()?;
        }
        Ok((index, problem))
    }

    fn load(&mut self, bytes: &[u8]) -> Option<String> {
        if !bytes.len().is_multiple_of(OFFSET_INDEX_ENTRY_SIZE) {
            return Some(format!("length {} is not a multiple of 8", bytes.len()));
        }
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_SIZE) {
            let entry = OffsetPosition {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            if let Some(last) = self.entries.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return Some(format!("entry {entry:?} does not follow {last:?}"));
                }
            }
            self.entries.push(entry);
        }
        None
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[OffsetPosition] {
        &self.entries
    }

    pub fn last_entry(&self) -> Option<OffsetPosition> {
        self.entries.last().copied()
    }

    /// Appends an entry; offsets and positions must grow (asserted: the segment guarantees it).
    pub fn append(&mut self, relative_offset: u32, position: u32) -> io::Result<()> {
        if let Some(last) = self.entries.last() {
            assert!(relative_offset > last.relative_offset && position > last.position);
        }
        let mut buf = [0u8; OFFSET_INDEX_ENTRY_SIZE];
        buf[0..4].copy_from_slice(&relative_offset.to_be_bytes());
        buf[4..8].copy_from_slice(&position.to_be_bytes());
        self.file.write_all(&buf)?;
        self.entries.push(OffsetPosition {
            relative_offset,
            position,
        });
        Ok(())
    }

    /// The largest entry with relative offset <= `relative_offset`, or (0, 0).
    pub fn lookup(&self, relative_offset: u32) -> OffsetPosition {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if n == 0 {
            OffsetPosition {
                relative_offset: 0,
                position: 0,
            }
        } else {
            self.entries[n - 1]
        }
    }

    /// Removes entries with relative offset >= `relative_offset`.
    pub fn truncate_to(&mut self, relative_offset: u32) -> io::Result<()> {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.truncate_entries(n)
    }

    /// Removes entries whose position is >= `position` (used when the log is cut).
    pub fn truncate_to_position(&mut self, position: u32) -> io::Result<()> {
        let n = self.entries.partition_point(|e| e.position < position);
        self.truncate_entries(n)
    }

    fn truncate_entries(&mut self, n: usize) -> io::Result<()> {
        if n < self.entries.len() {
            self.entries.truncate(n);
            self.file.set_len((n * OFFSET_INDEX_ENTRY_SIZE) as u64)?;
        }
        Ok(())
    }

    pub fn reset(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.file.set_len(0)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }
}

/// Sparse map from timestamp to offset for one segment.
#[derive(Debug)]
pub struct TimeIndex {
    path: PathBuf,
    file: File,
    entries: Vec<TimestampOffset>,
}

impl TimeIndex {
    /// Opens (or creates) the index file; see [`OffsetIndex::open`] for the corrupt case.
    pub fn open(path: &Path) -> io::Result<(TimeIndex, Option<String>)> {
        let (file, bytes) = open_and_read(path)?;
        let mut index = TimeIndex {
            path: path.to_path_buf(),
            file,
            entries: Vec::with_capacity(bytes.len() / TIME_INDEX_ENTRY_SIZE),
        };
        let problem = index.load(&bytes);
        if problem.is_some() {
            index.reset()?;
        }
        Ok((index, problem))
    }

    fn load(&mut self, bytes: &[u8]) -> Option<String> {
        if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_SIZE) {
            return Some(format!("length {} is not a multiple of 12", bytes.len()));
        }
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_SIZE) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[0..8]);
            let entry = TimestampOffset {
                timestamp: i64::from_be_bytes(ts),
                relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            if let Some(last) = self.entries.last() {
                if entry.timestamp <= last.timestamp || entry.relative_offset < last.relative_offset
                {
                    return Some(format!("entry {entry:?} does not follow {last:?}"));
                }
            }
            self.entries.push(entry);
        }
        None
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[TimestampOffset] {
        &self.entries
    }

    pub fn last_entry(&self) -> Option<TimestampOffset> {
        self.entries.last().copied()
    }

    /// Appends an entry if `timestamp` is larger than the last one (Kafka's rule);
    /// returns whether it was written.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) -> io::Result<bool> {
        if let Some(last) = self.entries.last() {
            if timestamp <= last.timestamp {
                return Ok(false);
            }
            assert!(relative_offset >= last.relative_offset);
        }
        let mut buf = [0u8; TIME_INDEX_ENTRY_SIZE];
        buf[0..8].copy_from_slice(&timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&relative_offset.to_be_bytes());
        self.file.write_all(&buf)?;
        self.entries.push(TimestampOffset {
            timestamp,
            relative_offset,
        });
        Ok(true)
    }

    /// Where a search for the first record with timestamp >= `timestamp` may start: the
    /// relative offset of the last entry whose timestamp is below the target (every batch
    /// before it has a smaller max timestamp), or 0. This is Kafka's "largest lower bound"
    /// lookup; the first entry with timestamp >= target is `first_at_or_after`.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].relative_offset
        }
    }

    /// Relative offset of the first entry with timestamp >= `timestamp`, if any.
    pub fn first_at_or_after(&self, timestamp: i64) -> Option<u32> {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        self.entries.get(n).map(|e| e.relative_offset)
    }

    /// Removes entries with relative offset >= `relative_offset`.
    pub fn truncate_to(&mut self, relative_offset: u32) -> io::Result<()> {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        if n < self.entries.len() {
            self.entries.truncate(n);
            self.file.set_len((n * TIME_INDEX_ENTRY_SIZE) as u64)?;
        }
        Ok(())
    }

    pub fn reset(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.file.set_len(0)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_round_trips_through_its_file() {
        // Proves entries are written as 8-byte big-endian pairs and reload identically.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.index");
        let (mut idx, problem) = OffsetIndex::open(&path).unwrap();
        assert!(problem.is_none());
        idx.append(3, 100).unwrap();
        idx.append(9, 5000).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0, 3, 0, 0, 0, 100, 0, 0, 0, 9, 0, 0, 0x13, 0x88]
        );
        assert_eq!(idx.lookup(2).position, 0);
        assert_eq!(idx.lookup(3).position, 100);
        assert_eq!(idx.lookup(100).position, 5000);
        drop(idx);
        let (mut idx, problem) = OffsetIndex::open(&path).unwrap();
        assert!(problem.is_none());
        assert_eq!(idx.entries().len(), 2);
        idx.truncate_to(9).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
        idx.append(10, 200).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
    }

    #[test]
    fn corrupt_indexes_are_reset_not_fatal() {
        // Proves a torn or unordered index file loads as empty with a reason.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.index");
        std::fs::write(&path, [0u8; 7]).unwrap();
        let (idx, problem) = OffsetIndex::open(&path).unwrap();
        assert!(problem.is_some() && idx.entries().is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let tpath = dir.path().join("a.timeindex");
        let mut bytes = Vec::new();
        for (ts, off) in [(10i64, 1u32), (5, 2)] {
            bytes.extend(ts.to_be_bytes());
            bytes.extend(off.to_be_bytes());
        }
        std::fs::write(&tpath, bytes).unwrap();
        let (tidx, problem) = TimeIndex::open(&tpath).unwrap();
        assert!(problem.is_some() && tidx.entries().is_empty());
    }

    #[test]
    fn time_index_only_grows_and_looks_up_lower_bound() {
        // Proves entries are 12 bytes, only larger timestamps are added, and lookups bound.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.timeindex");
        let (mut t, _) = TimeIndex::open(&path).unwrap();
        assert!(t.maybe_append(100, 0).unwrap());
        assert!(!t.maybe_append(100, 5).unwrap());
        assert!(t.maybe_append(200, 10).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        assert_eq!(t.lookup(50), 0);
        assert_eq!(t.lookup(150), 0);
        assert_eq!(t.lookup(201), 10);
        assert_eq!(t.first_at_or_after(150), Some(10));
        assert_eq!(t.first_at_or_after(201), None);
    }
}
