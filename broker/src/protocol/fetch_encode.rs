//! Fetch response encoding with record data as file regions (sent by `sendfile`).
//!
//! Byte map of the FetchResponse body, v4–v16 (v12+ is "flexible": compact strings/arrays with
//! length+1 as an unsigned varint, and a tagged-field section after each struct, empty here
//! because every tagged field holds its default and Kafka omits those):
//! ```text
//! throttle_time_ms i32
//! error_code i16                                   (v7+)
//! session_id i32                                   (v7+)
//! responses: array of
//!   topic string (v4–v12) | topic_id uuid (v13+)
//!   partitions: array of
//!     partition_index i32, error_code i16, high_watermark i64, last_stable_offset i64,
//!     log_start_offset i64                         (v5+)
//!     aborted_transactions: nullable array of (producer_id i64, first_offset i64)
//!     preferred_read_replica i32                   (v11+)
//!     records: nullable bytes (i32 length, or compact uvarint length+1)
//!     [tagged fields]                              (v12+)
//!   [tagged fields]                                (v12+)
//! [tagged fields]                                  (v12+)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::log::FileRegion;
use crate::net::{Chunk, FileSlice};

pub struct PartitionData {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Some(empty) for read_committed (no aborted transactions exist), None otherwise.
    pub aborted_transactions: Option<()>,
    pub records: Vec<FileRegion>,
}

pub struct TopicData {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionData>,
}

pub struct FetchResponseData {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicData>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u32 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Encodes the body; record regions become `Chunk::File` entries between byte chunks.
pub fn encode(resp: &FetchResponseData, version: i16) -> Vec<Chunk> {
    let flexible = version >= 12;
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(resp.error_code);
        buf.put_i32(resp.session_id);
    }
    put_array_len(&mut buf, flexible, resp.topics.len());
    for topic in &resp.topics {
        if version >= 13 {
            buf.put_slice(topic.topic_id.as_bytes());
        } else if flexible {
            put_uvarint(&mut buf, topic.name.len() as u32 + 1);
            buf.put_slice(topic.name.as_bytes());
        } else {
            buf.put_i16(topic.name.len() as i16);
            buf.put_slice(topic.name.as_bytes());
        }
        put_array_len(&mut buf, flexible, topic.partitions.len());
        for p in &topic.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            match p.aborted_transactions {
                None if flexible => put_uvarint(&mut buf, 0),
                None => buf.put_i32(-1),
                Some(()) => put_array_len(&mut buf, flexible, 0),
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica: none
            }
            let records_len: u64 = p.records.iter().map(|r| r.len).sum();
            // Records are never null: empty bytes when there is nothing (librdkafka rejects -1).
            if flexible {
                put_uvarint(&mut buf, records_len as u32 + 1);
            } else {
                buf.put_i32(records_len as i32);
            }
            for region in &p.records {
                if !buf.is_empty() {
                    chunks.push(Chunk::Bytes(buf.split().freeze()));
                }
                chunks.push(Chunk::File(FileSlice {
                    file: region.file.clone(),
                    position: region.position,
                    len: region.len,
                }));
            }
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    chunks.push(Chunk::Bytes(buf.freeze()));
    chunks
}

/// Flattens chunks into bytes (tests, and callers that cannot send files).
pub fn to_bytes(chunks: &[Chunk]) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut out = BytesMut::new();
    for c in chunks {
        match c {
            Chunk::Bytes(b) => out.extend_from_slice(b),
            Chunk::File(f) => {
                let start = out.len();
                out.resize(start + f.len as usize, 0);
                f.file.read_exact_at(&mut out[start..], f.position)?;
            }
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;
    use std::io::Write;
    use std::sync::Arc;

    /// The hand encoder must produce exactly what the crate's decoder reads, for every version.
    #[test]
    fn matches_the_crate_decoder_for_every_version() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789abcdef").unwrap();
        let file = Arc::new(file);
        let id = Uuid::new_v4();
        for version in 4..=16i16 {
            for read_committed in [false, true] {
                let resp = FetchResponseData {
                    throttle_time_ms: 7,
                    error_code: 0,
                    session_id: 0,
                    topics: vec![TopicData {
                        name: "orders".into(),
                        topic_id: id,
                        partitions: vec![
                            PartitionData {
                                partition_index: 0,
                                error_code: 0,
                                high_watermark: 10,
                                last_stable_offset: 10,
                                log_start_offset: 2,
                                aborted_transactions: read_committed.then_some(()),
                                records: vec![
                                    FileRegion {
                                        file: file.clone(),
                                        position: 2,
                                        len: 4,
                                    },
                                    FileRegion {
                                        file: file.clone(),
                                        position: 10,
                                        len: 3,
                                    },
                                ],
                            },
                            PartitionData {
                                partition_index: 1,
                                error_code: 1,
                                high_watermark: 0,
                                last_stable_offset: 0,
                                log_start_offset: 0,
                                aborted_transactions: None,
                                records: vec![],
                            },
                        ],
                    }],
                };
                let mut bytes = to_bytes(&encode(&resp, version)).unwrap();
                let decoded = FetchResponse::decode(&mut bytes, version).unwrap();
                assert!(bytes.is_empty(), "v{version}: trailing bytes");
                assert_eq!(decoded.throttle_time_ms, 7);
                let t = &decoded.responses[0];
                if version >= 13 {
                    assert_eq!(t.topic_id, id);
                } else {
                    assert_eq!(t.topic.as_str(), "orders");
                }
                assert_eq!(
                    t.partitions[0].records.as_deref(),
                    Some(&b"2345abc"[..]),
                    "v{version}"
                );
                assert_eq!(t.partitions[0].high_watermark, 10);
                assert_eq!(t.partitions[1].error_code, 1);
                assert_eq!(
                    t.partitions[1].records.as_deref(),
                    Some(&b""[..]),
                    "empty, not null"
                );
                if version >= 5 {
                    assert_eq!(t.partitions[0].log_start_offset, 2);
                }
            }
        }
    }
}
