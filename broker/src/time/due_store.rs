//! `DueStore`: the on-disk due-time index of one delay partition.
//!
//! Every indexed pending record gets one 24-byte entry in the bucket file of its due minute,
//! `<partition dir>/kairos-delay-due/<bucket>.due` where `bucket = due_ms / BUCKET_MS`:
//!
//! ```text
//! 0        8        16       24
//! | due_ms | offset | keyhash |     all big-endian; keyhash = 0 for keyless records
//! ```
//!
//! Entries are appended in offset order (indexing reads the log in order), so a file is sorted
//! by offset; recovery cuts entries at or above the checkpointed indexing position (they are
//! indexed again). A file is deleted once every entry in it was delivered or cancelled. Only
//! buckets near the present are read into memory; the rest cost no RAM.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Default width of a bucket (`kairos.delay.bucket.ms`): one minute of due times.
pub const BUCKET_MS_DEFAULT: i64 = 60_000;
pub const ENTRY_BYTES: usize = 24;
const DIR: &str = "kairos-delay-due";
/// The bucket width the files were written with (decimal ms).
const WIDTH_FILE: &str = "WIDTH";

/// One entry: (due_ms, offset, keyhash).
pub type DueEntry = (i64, i64, u64);

pub struct DueStore {
    dir: PathBuf,
    bucket_ms: i64,
}

impl DueStore {
    /// Opens (creating) the store; files written with another bucket width are re-bucketed.
    pub fn open(partition_dir: &Path, bucket_ms: i64) -> std::io::Result<Self> {
        let dir = partition_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let width_path = dir.join(WIDTH_FILE);
        let written: Option<i64> = std::fs::read_to_string(&width_path)
            .ok()
            .and_then(|w| w.trim().parse().ok());
        let store = Self {
            dir,
            bucket_ms: bucket_ms.max(1),
        };
        if let Some(old) = written.filter(|w| *w != store.bucket_ms) {
            let old_store = Self {
                dir: store.dir.clone(),
                bucket_ms: old,
            };
            let mut all = Vec::new();
            for b in old_store.buckets()? {
                all.extend(old_store.read(b)?);
                old_store.delete(b)?;
            }
            all.sort_unstable_by_key(|e| e.1);
            store.append(&all)?;
        }
        if written != Some(store.bucket_ms) {
            std::fs::write(&width_path, store.bucket_ms.to_string())?;
        }
        Ok(store)
    }

    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    pub fn bucket_of(&self, due_ms: i64) -> i64 {
        due_ms.div_euclid(self.bucket_ms)
    }

    fn path(&self, bucket: i64) -> PathBuf {
        self.dir.join(format!("{bucket}.due"))
    }

    /// Appends entries, grouped per bucket file.
    pub fn append(&self, entries: &[DueEntry]) -> std::io::Result<()> {
        let mut by_bucket: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        for (due, offset, hash) in entries {
            let buf = by_bucket.entry(self.bucket_of(*due)).or_default();
            buf.extend_from_slice(&due.to_be_bytes());
            buf.extend_from_slice(&offset.to_be_bytes());
            buf.extend_from_slice(&hash.to_be_bytes());
        }
        for (bucket, bytes) in by_bucket {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(bucket))?
                .write_all(&bytes)?;
        }
        Ok(())
    }

    /// Bucket numbers with a file, ascending.
    pub fn buckets(&self) -> std::io::Result<Vec<i64>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(b) = name
                .strip_suffix(".due")
                .and_then(|n| n.parse::<i64>().ok())
            {
                out.push(b);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Entries of a bucket (a torn last entry is ignored).
    pub fn read(&self, bucket: i64) -> std::io::Result<Vec<DueEntry>> {
        let bytes = match std::fs::read(self.path(bucket)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(bytes
            .chunks_exact(ENTRY_BYTES)
            .map(|c| {
                let n = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&c[at..at + 8]);
                    b
                };
                (
                    i64::from_be_bytes(n(0)),
                    i64::from_be_bytes(n(8)),
                    u64::from_be_bytes(n(16)),
                )
            })
            .collect())
    }

    /// Drops entries with offset >= `offset` (and any torn tail); returns the entries kept.
    pub fn truncate_from(&self, bucket: i64, offset: i64) -> std::io::Result<Vec<DueEntry>> {
        let entries = self.read(bucket)?;
        let keep = entries.partition_point(|e| e.1 < offset);
        let len = std::fs::metadata(self.path(bucket))?.len();
        if (keep * ENTRY_BYTES) as u64 != len {
            if keep == 0 {
                self.delete(bucket)?;
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.path(bucket))?
                    .set_len((keep * ENTRY_BYTES) as u64)?;
            }
        }
        Ok(entries[..keep].to_vec())
    }

    pub fn delete(&self, bucket: i64) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(bucket)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_by_bucket_and_truncate_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let s = DueStore::open(dir.path(), BUCKET_MS_DEFAULT).unwrap();
        s.append(&[(10, 1, 7), (70_000, 2, 0), (20, 3, 9)]).unwrap();
        s.append(&[(30, 4, 1)]).unwrap();
        assert_eq!(s.buckets().unwrap(), vec![0, 1]);
        assert_eq!(s.read(0).unwrap(), vec![(10, 1, 7), (20, 3, 9), (30, 4, 1)]);
        assert_eq!(s.truncate_from(0, 3).unwrap(), vec![(10, 1, 7)]);
        assert_eq!(s.read(0).unwrap(), vec![(10, 1, 7)]);
        assert!(s.truncate_from(1, 0).unwrap().is_empty());
        assert_eq!(s.buckets().unwrap(), vec![0]);
        // A torn entry at the end is ignored and cut.
        std::fs::OpenOptions::new()
            .append(true)
            .open(s.path(0))
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        assert_eq!(s.read(0).unwrap(), vec![(10, 1, 7)]);
        assert_eq!(s.truncate_from(0, i64::MAX).unwrap(), vec![(10, 1, 7)]);
        assert_eq!(std::fs::metadata(s.path(0)).unwrap().len(), 24);
        assert_eq!(s.bucket_of(-1), -1);
        // Reopening with another width re-buckets the entries.
        drop(s);
        let s = DueStore::open(dir.path(), 5).unwrap();
        assert_eq!(s.buckets().unwrap(), vec![2]);
        assert_eq!(s.read(2).unwrap(), vec![(10, 1, 7)]);
    }
}
