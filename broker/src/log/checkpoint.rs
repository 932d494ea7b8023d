//! Kafka's checkpoint file format, shared by `recovery-point-offset-checkpoint`,
//! `replication-offset-checkpoint`, `log-start-offset-checkpoint`,
//! `cleaner-offset-checkpoint` and `leader-epoch-checkpoint`:
//!
//! ```text
//! <version>\n            always 0 in Kafka's files
//! <entry count N>\n
//! <entry 1>\n            space-separated fields, e.g. "topic partition offset"
//! ...                    or "epoch startOffset" for leader-epoch-checkpoint
//! <entry N>\n
//! ```
//!
//! Writes are atomic: write `<path>.tmp`, fsync, rename over `<path>`, fsync the directory.
//! A file that does not parse is a typed error, never a panic.
//!
//! Per-partition single-value files written by `Log` (Kairos' choice, documented here):
//! `log-start-offset`, `recovery-point`, `cleaner-offset` in the partition directory, each
//! a checkpoint with one entry holding one offset. Kafka keeps these per log.dir keyed by
//! topic-partition; these per-partition files avoid a cross-partition writer.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

pub const CHECKPOINT_VERSION: i32 = 0;
/// Bound on entries read from one checkpoint file.
pub const CHECKPOINT_ENTRIES_MAX: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint I/O: {0}")]
    Io(#[from] io::Error),
}

/// Atomically writes a checkpoint with the given entries (each a list of fields).
pub fn write_checkpoint<S: AsRef<str>>(
    path: &Path,
    version: i32,
    entries: &[Vec<S>],
) -> io::Result<()> {
    let mut text = format!("{version}\n{}\n", entries.len());
    for entry in entries {
        let fields: Vec<&str> = entry.iter().map(|f| f.as_ref()).collect();
        debug_assert!(fields
            .iter()
            .all(|f| !f.is_empty() && !f.contains(char::is_whitespace)));
        text.push_str(&fields.join(" "));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Replaces `path` with `bytes` atomically: write `<path>.tmp`, fsync, rename over `path`,
/// fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all()?;
        }
    }
    Ok(())
}

/// Reads a checkpoint; `Ok(None)` when the file does not exist.
pub fn read_checkpoint(
    path: &Path,
    expected_version: i32,
) -> Result<Option<Vec<Vec<String>>>, CheckpointError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(corrupt(path, "not UTF-8"));
        }
        Err(e) => return Err(e.into()),
    };
    let mut lines = text.lines();
    let version: i32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(path, "missing version line"))?;
    if version != expected_version {
        return Err(corrupt(path, &format!("unsupported version {version}")));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt(path, "missing entry count line"))?;
    if count > CHECKPOINT_ENTRIES_MAX {
        return Err(corrupt(path, &format!("entry count {count} too large")));
    }
    let entries: Vec<Vec<String>> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    if entries.len() != count {
        return Err(corrupt(
            path,
            &format!("expected {count} entries, found {}", entries.len()),
        ));
    }
    Ok(Some(entries))
}

fn corrupt(path: &Path, reason: &str) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

fn parse_field<T: std::str::FromStr>(
    path: &Path,
    field: Option<&String>,
) -> Result<T, CheckpointError> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| corrupt(path, "bad or missing field"))
}

/// Writes a per-partition single-offset checkpoint (`0\n1\n<offset>\n`).
pub fn write_offset(path: &Path, offset: i64) -> io::Result<()> {
    write_checkpoint(path, CHECKPOINT_VERSION, &[vec![offset.to_string()]])
}

/// Reads a file written by [`write_offset`]; `Ok(None)` if missing.
pub fn read_offset(path: &Path) -> Result<Option<i64>, CheckpointError> {
    let Some(entries) = read_checkpoint(path, CHECKPOINT_VERSION)? else {
        return Ok(None);
    };
    match entries.as_slice() {
        [entry] if entry.len() == 1 => Ok(Some(parse_field(path, entry.first())?)),
        _ => Err(corrupt(path, "expected exactly one offset")),
    }
}

/// Entries of a log.dir-level file such as `recovery-point-offset-checkpoint`:
/// `topic partition offset` per line.
pub fn write_partition_offsets(path: &Path, entries: &[(String, i32, i64)]) -> io::Result<()> {
    let lines: Vec<Vec<String>> = entries
        .iter()
        .map(|(t, p, o)| vec![t.clone(), p.to_string(), o.to_string()])
        .collect();
    write_checkpoint(path, CHECKPOINT_VERSION, &lines)
}

pub fn read_partition_offsets(path: &Path) -> Result<Vec<(String, i32, i64)>, CheckpointError> {
    let entries = read_checkpoint(path, CHECKPOINT_VERSION)?.unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            if e.len() != 3 {
                return Err(corrupt(path, "expected `topic partition offset`"));
            }
            Ok((
                e[0].clone(),
                parse_field(path, e.get(1))?,
                parse_field(path, e.get(2))?,
            ))
        })
        .collect()
}

/// `leader-epoch-checkpoint` entries: `epoch startOffset` per line.
pub fn write_leader_epochs(path: &Path, entries: &[(i32, i64)]) -> io::Result<()> {
    let lines: Vec<Vec<String>> = entries
        .iter()
        .map(|(e, o)| vec![e.to_string(), o.to_string()])
        .collect();
    write_checkpoint(path, CHECKPOINT_VERSION, &lines)
}

pub fn read_leader_epochs(path: &Path) -> Result<Vec<(i32, i64)>, CheckpointError> {
    let entries = read_checkpoint(path, CHECKPOINT_VERSION)?.unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            if e.len() != 2 {
                return Err(corrupt(path, "expected `epoch startOffset`"));
            }
            Ok((parse_field(path, e.first())?, parse_field(path, e.get(1))?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_files_have_kafkas_text_layout() {
        // Proves the written bytes match Kafka's format and read back; corrupt is an error.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery-point-offset-checkpoint");
        write_partition_offsets(&path, &[("orders".into(), 0, 42), ("orders".into(), 1, 7)])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0\n2\norders 0 42\norders 1 7\n"
        );
        assert_eq!(
            read_partition_offsets(&path).unwrap()[1],
            ("orders".into(), 1, 7)
        );
        let epochs = dir.path().join("leader-epoch-checkpoint");
        write_leader_epochs(&epochs, &[(0, 0), (3, 100)]).unwrap();
        assert_eq!(read_leader_epochs(&epochs).unwrap(), vec![(0, 0), (3, 100)]);
        let single = dir.path().join("log-start-offset");
        assert_eq!(read_offset(&single).unwrap(), None);
        write_offset(&single, 9).unwrap();
        assert_eq!(read_offset(&single).unwrap(), Some(9));
        std::fs::write(&single, "0\n3\n1\n").unwrap();
        assert!(matches!(
            read_offset(&single),
            Err(CheckpointError::Corrupt { .. })
        ));
        std::fs::write(&single, [0xff, 0xfe]).unwrap();
        assert!(read_offset(&single).is_err());
    }
}
