//! Producer ids for InitProducerId, unique across restarts.
//!
//! Ids are handed out from blocks of `BLOCK_SIZE`; the end of the current block is persisted in
//! `<log.dir>/kairos-producer-id-block` before any id of it is used, so a restart never reuses an
//! id (it skips the rest of the block, as Kafka's controller-allocated blocks do).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

const BLOCK_SIZE: i64 = 1000;

pub struct ProducerIdAllocator {
    path: PathBuf,
    state: Mutex<(i64, i64)>, // (next id, end of persisted block)
}

impl ProducerIdAllocator {
    pub fn open(log_dir: &Path) -> std::io::Result<Self> {
        let path = log_dir.join("kairos-producer-id-block");
        let start = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            state: Mutex::new((start, start)),
        })
    }

    pub fn next(&self) -> std::io::Result<i64> {
        let mut s = self.state.lock();
        if s.0 >= s.1 {
            let end = s.1 + BLOCK_SIZE;
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, end.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            s.1 = end;
        }
        let id = s.0;
        s.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        assert!(b.next().unwrap() >= BLOCK_SIZE);
    }
}
