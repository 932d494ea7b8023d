//! The leader-epoch cache of one replica (Kafka's `LeaderEpochFileCache`): the offset at which
//! each leader epoch began, kept in `leader-epoch-checkpoint` in the partition directory. Leaders
//! answer OffsetsForLeaderEpoch from it and followers use it to find where their log diverged.

use std::path::{Path, PathBuf};

use crate::log::batch::BatchHeader;
use crate::log::checkpoint;

pub const FILE: &str = "leader-epoch-checkpoint";

/// Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug)]
pub struct EpochCache {
    path: PathBuf,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Loads the checkpoint (an unreadable one is rebuilt from the log), then adds the epochs
    /// of batches the checkpoint does not cover and drops entries at or past the log end.
    pub fn load(dir: &Path, headers: &[BatchHeader], log_end: i64) -> Self {
        let path = dir.join(FILE);
        let entries = checkpoint::read_leader_epochs(&path).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}; rebuilding it from the log", path.display());
            Vec::new()
        });
        let mut cache = EpochCache {
            path,
            entries: Vec::new(),
        };
        for &(epoch, start) in &entries {
            cache.push(epoch, start);
        }
        for h in headers {
            cache.push(h.partition_leader_epoch, h.base_offset);
        }
        cache.entries.retain(|&(_, s)| s < log_end);
        // Written only when the log said more (or less) than the checkpoint.
        if cache.entries != entries {
            cache.persist();
        }
        cache
    }

    /// Records that `epoch` starts at `start` when it is newer than the latest epoch.
    fn push(&mut self, epoch: i32, start: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(e, _)) if e >= epoch => false,
            Some(&(_, s)) if s > start => {
                // A newer epoch cannot start before an older one: the entries above `start` are
                // stale (Kafka removes them the same way).
                self.entries.retain(|&(_, s)| s < start);
                self.entries.push((epoch, start));
                true
            }
            _ => {
                self.entries.push((epoch, start));
                true
            }
        }
    }

    /// [`push`](Self::push), written to the checkpoint when it changed the cache.
    pub fn assign(&mut self, epoch: i32, start: i64) {
        if self.push(epoch, start) {
            self.persist();
        }
    }

    /// Adds the epochs of appended batches (a follower keeps the leader's).
    pub fn assign_batches(&mut self, headers: &[BatchHeader]) {
        let mut changed = false;
        for h in headers {
            changed |= self.push(h.partition_leader_epoch, h.base_offset);
        }
        if changed {
            self.persist();
        }
    }

    /// Drops the epochs that start at or after `end` (the log was truncated to `end`).
    pub fn truncate_from_end(&mut self, end: i64) {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end);
        if self.entries.len() != before {
            self.persist();
        }
    }

    /// Forgets every epoch (the log was emptied).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.persist();
    }

    pub fn latest_epoch(&self) -> i32 {
        self.entries.last().map(|&(e, _)| e).unwrap_or(UNDEFINED)
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `requested` and the offset where it ended
    /// (the start of the next epoch, or `log_end` for the latest).
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested == UNDEFINED {
            return (UNDEFINED, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == requested {
            return (requested, log_end);
        }
        let Some(higher) = self.entries.iter().find(|&&(e, _)| e > requested) else {
            return (UNDEFINED, UNDEFINED_OFFSET);
        };
        match self.entries.iter().rev().find(|&&(e, _)| e <= requested) {
            Some(&(floor, _)) => (floor, higher.1),
            None => (requested, higher.1),
        }
    }

    fn persist(&self) {
        if let Err(e) = checkpoint::write_leader_epochs(&self.path, &self.entries) {
            tracing::warn!("writing {}: {e}", self.path.display());
        }
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path(), &[], 0);
        assert_eq!(c.end_offset_for(0, 0), (UNDEFINED, UNDEFINED_OFFSET));
        c.assign(1, 0);
        c.assign(3, 10);
        c.assign(2, 20); // older epoch: ignored
        c.assign(5, 25);
        assert_eq!(c.entries(), &[(1, 0), (3, 10), (5, 25)]);
        assert_eq!(c.end_offset_for(5, 40), (5, 40));
        assert_eq!(c.end_offset_for(4, 40), (3, 25));
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(c.end_offset_for(1, 40), (1, 10));
        assert_eq!(c.end_offset_for(0, 40), (0, 0));
        assert_eq!(c.end_offset_for(6, 40), (UNDEFINED, UNDEFINED_OFFSET));
        c.truncate_from_end(10);
        assert_eq!(c.entries(), &[(1, 0)]);
        // Reloaded from the checkpoint, then cut at the log end.
        c.assign(7, 12);
        let again = EpochCache::load(dir.path(), &[], 13);
        assert_eq!(again.entries(), &[(1, 0), (7, 12)]);
        let again = EpochCache::load(dir.path(), &[], 11);
        assert_eq!(again.entries(), &[(1, 0)]);
    }
}
