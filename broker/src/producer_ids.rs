//! Producer ids for InitProducerId, unique across the cluster and across restarts.
//!
//! Ids are handed out from blocks of `BLOCK_SIZE` that the controller allocates through the
//! metadata log (Kafka's AllocateProducerIds): a block is never handed out twice, and a restart
//! skips the rest of its block.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::metadata::quorum::Metadata;
use crate::metadata::{Command, MetaError, Reply};

const BLOCK_SIZE: i64 = 1000;

#[derive(Default)]
pub struct ProducerIdAllocator {
    state: Mutex<(i64, i64)>, // (next id, end of the current block)
}

impl ProducerIdAllocator {
    pub async fn next(&self, metadata: &Arc<Metadata>) -> Result<i64, MetaError> {
        loop {
            {
                let mut s = self.state.lock();
                if s.0 < s.1 {
                    let id = s.0;
                    s.0 += 1;
                    return Ok(id);
                }
            }
            let reply = metadata
                .propose(Command::AllocateProducerIds {
                    broker: metadata.node_id(),
                    count: BLOCK_SIZE,
                })
                .await?;
            match reply {
                Reply::ProducerIds { first, count } => {
                    let mut s = self.state.lock();
                    if s.0 >= s.1 {
                        *s = (first, first + count);
                    }
                }
                other => {
                    return Err(MetaError::new(
                        crate::metadata::codes::INVALID_REQUEST,
                        format!("unexpected reply {other:?}"),
                    ))
                }
            }
        }
    }
}
