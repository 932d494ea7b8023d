//! The metadata quorum's storage: Raft log, vote and snapshots under
//! `<log.dir>/__cluster_metadata-0/` (the directory KRaft uses), and the state machine.
//!
//! - `raft-log.jsonl`: one JSON operation per line, appended and fsynced before openraft is told
//!   the entries are durable: `{"Append":entry}`, `{"Truncate":index}` (drop entries from index),
//!   `{"Purge":log_id}` (drop entries up to it; they are in the snapshot). A torn last line, left by
//!   a crash mid-write, is cut off on open. After a purge the file is rewritten (temporary file,
//!   fsync, rename), so it holds only what the snapshot does not.
//! - `raft-vote.json`, `raft-committed.json`: replaced atomically.
//! - `snapshot.json`: the last snapshot (meta + image), replaced atomically.
//!
//! Metadata changes are rare (topic admin, ISR changes, broker sessions), so JSON and an fsync per
//! append cost nothing that matters; the data path never goes through here.
//!
//! The state machine is the [`ClusterImage`] in memory, rebuilt on start from the snapshot plus
//! the committed log (openraft re-applies up to the saved committed index). Every applied batch
//! publishes the new image on a `watch` channel.

use std::collections::BTreeMap;
use std::io::{BufRead, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::{ClusterImage, Command, Reply};
use crate::log::checkpoint::write_atomic;

openraft::declare_raft_types!(
    /// Kairos' Raft types: commands in, replies out, nodes addressed by their controller endpoint.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type NodeId = u64;
pub type Entry = openraft::Entry<TypeConfig>;
type StoreError = StorageError<NodeId>;

/// The directory of the metadata log inside the first log dir.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: std::io::Error) -> StoreError {
    StorageError::from_io_error(subject, verb, e)
}

fn json_err(subject: ErrorSubject<NodeId>, e: serde_json::Error) -> StoreError {
    StorageError::from_io_error(subject, ErrorVerb::Read, std::io::Error::other(e))
}

#[derive(Serialize, Deserialize)]
enum LogOp {
    Append(Entry),
    Truncate(u64),
    Purge(LogId<NodeId>),
}

struct LogInner {
    dir: PathBuf,
    file: std::fs::File,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<NodeId>>,
}

impl LogInner {
    fn write_ops(&mut self, ops: &[LogOp]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for op in ops {
            serde_json::to_writer(&mut buf, op)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    /// Rewrites the log file with only what is left after a purge.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut buf = Vec::new();
        if let Some(p) = self.last_purged {
            serde_json::to_writer(&mut buf, &LogOp::Purge(p))?;
            buf.push(b'\n');
        }
        for e in self.entries.values() {
            serde_json::to_writer(&mut buf, &LogOp::Append(e.clone()))?;
            buf.push(b'\n');
        }
        let path = self.dir.join("raft-log.jsonl");
        write_atomic(&path, &buf)?;
        self.file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(())
    }
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft-log.jsonl");
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        let mut good_len = 0u64;
        if let Ok(f) = std::fs::File::open(&path) {
            let mut reader = std::io::BufReader::new(f);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    // A torn tail from a crash mid-append: it was never acknowledged.
                    break;
                }
                // A whole line that does not parse is damage, not a torn write: cutting there
                // could drop entries this node acknowledged, so start-up stops instead.
                let op: LogOp = serde_json::from_slice(&line).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is corrupt at byte {good_len}: {e}", path.display()),
                    )
                })?;
                good_len += n as u64;
                match op {
                    LogOp::Append(e) => {
                        entries.insert(e.log_id.index, e);
                    }
                    LogOp::Truncate(from) => {
                        entries.retain(|i, _| *i < from);
                    }
                    LogOp::Purge(id) => {
                        entries.retain(|i, _| *i > id.index);
                        last_purged = Some(id);
                    }
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if file.metadata()?.len() > good_len {
            tracing::warn!(
                "{}: cutting a torn tail after byte {good_len}",
                path.display()
            );
            file.set_len(good_len)?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                entries,
                last_purged,
            })),
        })
    }

    // openraft's StorageError is large; the storage traits return it anyway.
    #[allow(clippy::result_large_err)]
    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let path = self.inner.lock().dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| json_err(ErrorSubject::Store, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(ErrorSubject::Store, ErrorVerb::Read, e)),
        }
    }

    #[allow(clippy::result_large_err)]
    fn write_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StoreError> {
        let path = self.inner.lock().dir.join(name);
        let bytes = serde_json::to_vec(value).map_err(|e| json_err(subject.clone(), e))?;
        write_atomic(&path, &bytes).map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }

    /// True when this node has never written a vote or log entry (a fresh quorum member).
    pub fn is_empty(&self) -> bool {
        let inner = self.inner.lock();
        inner.entries.is_empty()
            && inner.last_purged.is_none()
            && !inner.dir.join("raft-vote.json").exists()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<
        RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + Send,
    >(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StoreError> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StoreError> {
        self.write_json("raft-vote.json", vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StoreError> {
        self.read_json("raft-vote.json")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StoreError> {
        self.write_json("raft-committed.json", &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StoreError> {
        Ok(self
            .read_json::<Option<LogId<NodeId>>>("raft-committed.json")?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = {
            let mut inner = self.inner.lock();
            let ops: Vec<LogOp> = entries.iter().cloned().map(LogOp::Append).collect();
            let r = inner.write_ops(&ops);
            if r.is_ok() {
                for e in entries {
                    inner.entries.insert(e.log_id.index, e);
                }
            }
            r
        };
        let failed = result
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner
            .write_ops(&[LogOp::Truncate(log_id.index)])
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        inner.entries.retain(|i, _| *i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.entries.retain(|i, _| *i > log_id.index);
        inner.last_purged = Some(log_id);
        inner
            .rewrite()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    image: ClusterImage,
}

struct SmInner {
    dir: PathBuf,
    image: Arc<ClusterImage>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    snapshot: Option<(SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>)>,
    publish: watch::Sender<Arc<ClusterImage>>,
    snapshot_seq: u64,
    fence_times: FenceTimes,
}

/// When this node saw each partition leader fenced without a controlled shutdown (a process that
/// died or was cut off), recorded as the fence is applied, before the image is published. Not
/// replicated: only this node's Metadata answers use it.
#[derive(Clone, Default)]
pub struct FenceTimes(Arc<Mutex<std::collections::HashMap<i32, std::time::Instant>>>);

impl FenceTimes {
    /// Whether fencing broker `id` of `image` is abrupt: it is live (not in a controlled
    /// shutdown) and leads a partition, whose leadership the fence moves.
    pub fn abrupt(image: &ClusterImage, id: i32) -> bool {
        image.is_live(id) && image.leads(id)
    }

    /// Records the brokers fenced abruptly between `before` and `after`.
    pub fn observe(&self, before: &ClusterImage, after: &ClusterImage) {
        let fenced: Vec<i32> = after
            .brokers
            .values()
            .filter(|b| b.fenced && Self::abrupt(before, b.id))
            .map(|b| b.id)
            .collect();
        self.record(&fenced, after);
    }

    /// Records `ids` as fenced now; forgets brokers no longer fenced in `after`.
    fn record(&self, ids: &[i32], after: &ClusterImage) {
        let mut times = self.0.lock();
        for id in ids {
            times.insert(*id, std::time::Instant::now());
        }
        times.retain(|id, _| after.brokers.get(id).is_some_and(|b| b.fenced));
    }

    /// Whether broker `id` was fenced abruptly less than `within` ago.
    pub fn within(&self, id: i32, within: std::time::Duration) -> bool {
        self.0
            .lock()
            .get(&id)
            .is_some_and(|at| at.elapsed() < within)
    }
}

/// The state machine: the cluster image.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
}

impl StateMachine {
    /// Opens the state machine from the last snapshot; returns it with a receiver of images.
    pub fn open(
        dir: &Path,
        fence_times: FenceTimes,
    ) -> std::io::Result<(Self, watch::Receiver<Arc<ClusterImage>>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("snapshot.json");
        let (image, last_applied, membership, snapshot) = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::other(format!("{} is corrupt: {e}", path.display()))
                })?;
                (
                    f.image,
                    f.meta.last_log_id,
                    f.meta.last_membership.clone(),
                    Some((f.meta, bytes)),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                ClusterImage::default(),
                None,
                StoredMembership::default(),
                None,
            ),
            Err(e) => return Err(e),
        };
        let image = Arc::new(image);
        let (publish, rx) = watch::channel(image.clone());
        Ok((
            StateMachine {
                inner: Arc::new(Mutex::new(SmInner {
                    dir: dir.to_path_buf(),
                    image,
                    last_applied,
                    membership,
                    snapshot,
                    publish,
                    snapshot_seq: 0,
                    fence_times,
                })),
            },
            rx,
        ))
    }

    pub fn image(&self) -> Arc<ClusterImage> {
        self.inner.lock().image.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let mut inner = self.inner.lock();
        inner.snapshot_seq += 1;
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshot_seq),
            None => format!("--{}", inner.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            image: (*inner.image).clone(),
        };
        let bytes =
            serde_json::to_vec(&file).map_err(|e| json_err(ErrorSubject::Snapshot(None), e))?;
        write_atomic(&inner.dir.join("snapshot.json"), &bytes)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StoreError,
    > {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StoreError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock();
        let mut image = (*inner.image).clone();
        let mut replies = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::Done,
                EntryPayload::Normal(ref command @ Command::FenceBroker { id, .. }) => {
                    // Judged entry by entry: a controlled shutdown and its fence may be applied
                    // in one batch.
                    let abrupt = FenceTimes::abrupt(&image, id);
                    let reply = image.apply(entry.log_id.index, command);
                    if abrupt && image.brokers.get(&id).is_some_and(|b| b.fenced) {
                        inner.fence_times.record(&[id], &image);
                    }
                    reply
                }
                EntryPayload::Normal(ref command) => image.apply(entry.log_id.index, command),
                EntryPayload::Membership(ref m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Reply::Done
                }
            };
            image.applied_index = entry.log_id.index;
            replies.push(reply);
        }
        let image = Arc::new(image);
        inner.image = image.clone();
        inner.publish.send_replace(image);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StoreError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes)
            .map_err(|e| json_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        let mut inner = self.inner.lock();
        write_atomic(&inner.dir.join("snapshot.json"), &bytes).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })?;
        let image = Arc::new(file.image);
        inner.image = image.clone();
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), bytes));
        inner.publish.send_replace(image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64, cmd: Command) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    #[tokio::test]
    async fn log_survives_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        {
            let mut inner = store.inner.lock();
            let ops: Vec<LogOp> = (1..=5)
                .map(|i| {
                    LogOp::Append(entry(
                        1,
                        i,
                        Command::SetClusterId {
                            id: format!("c{i}"),
                        },
                    ))
                })
                .collect();
            inner.write_ops(&ops).unwrap();
            inner.write_ops(&[LogOp::Truncate(4)]).unwrap();
            inner
                .write_ops(&[LogOp::Purge(LogId::new(CommittedLeaderId::new(1, 1), 1))])
                .unwrap();
        }
        drop(store);
        // A crash mid-append leaves half a line.
        let path = dir.path().join("raft-log.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"Append\":{\"log_id\":").unwrap();
        drop(f);
        let mut store = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.unwrap().index, 1);
        assert_eq!(state.last_log_id.unwrap().index, 3);
        let got = store.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "torn tail cut: {text:?}");
        drop(store);
        // A whole damaged line before good ones is not a torn tail: opening fails, nothing cut.
        let damaged = format!("{{\"Bogus\":1}}\n{text}");
        std::fs::write(&path, &damaged).unwrap();
        let e = LogStore::open(dir.path())
            .err()
            .expect("a corrupt log is refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
    }
}
