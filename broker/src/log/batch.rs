//! Record batch (magic v2) header view and produce-time validation.
//!
//! Byte map of a v2 record batch header (all integers big-endian), as Kafka's
//! `DefaultRecordBatch` lays it out. The broker never rewrites anything but the first
//! two fields it is told to (base offset, partition leader epoch), which the CRC does
//! not cover, so stored batches stay exactly as the producer compressed them.
//!
//! ```text
//! offset size field
//!  0     8    baseOffset            i64
//!  8     4    batchLength           i32  bytes after this field (total = 12 + batchLength)
//! 12     4    partitionLeaderEpoch  i32
//! 16     1    magic                 i8   must be 2
//! 17     4    crc                   u32  CRC-32C over bytes [21, end)
//! 21     2    attributes            i16  bits 0-2 compression, 3 timestamp type,
//!                                        4 transactional, 5 control, 6 delete horizon
//! 23     4    lastOffsetDelta       i32
//! 27     8    baseTimestamp         i64
//! 35     8    maxTimestamp          i64
//! 43     8    producerId            i64
//! 51     2    producerEpoch         i16
//! 53     4    baseSequence          i32
//! 57     4    recordCount           i32
//! 61          records...
//! ```

use thiserror::Error;

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = BATCH_LENGTH_OFFSET + 4;
pub const MAGIC_OFFSET: usize = PARTITION_LEADER_EPOCH_OFFSET + 4;
pub const CRC_OFFSET: usize = MAGIC_OFFSET + 1;
pub const ATTRIBUTES_OFFSET: usize = CRC_OFFSET + 4;
pub const LAST_OFFSET_DELTA_OFFSET: usize = ATTRIBUTES_OFFSET + 2;
pub const BASE_TIMESTAMP_OFFSET: usize = LAST_OFFSET_DELTA_OFFSET + 4;
pub const MAX_TIMESTAMP_OFFSET: usize = BASE_TIMESTAMP_OFFSET + 8;
pub const PRODUCER_ID_OFFSET: usize = MAX_TIMESTAMP_OFFSET + 8;
pub const PRODUCER_EPOCH_OFFSET: usize = PRODUCER_ID_OFFSET + 8;
pub const BASE_SEQUENCE_OFFSET: usize = PRODUCER_EPOCH_OFFSET + 2;
pub const RECORD_COUNT_OFFSET: usize = BASE_SEQUENCE_OFFSET + 4;
/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = RECORD_COUNT_OFFSET + 4;
/// Bytes before the `batchLength` payload starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = BATCH_LENGTH_OFFSET + 4;
/// Smallest legal `batchLength`: a header with no records.
pub const BATCH_LENGTH_MIN: usize = HEADER_SIZE - LOG_OVERHEAD;
const _: () = assert!(HEADER_SIZE == 61);
const _: () = assert!(LOG_OVERHEAD == 12);
const _: () = assert!(BATCH_LENGTH_MIN == 49);

pub const MAGIC_V2: i8 = 2;
/// The smallest encoding of one v2 record: length, attributes, timestamp delta,
/// offset delta, key length, value length, header count — one byte each.
pub const RECORD_SIZE_MIN: usize = 7;
/// Bound on `recordCount` of a compressed batch, whose record bytes cannot be checked
/// against the batch length before decompression. Decoders allocate per record.
pub const RECORD_COUNT_MAX_COMPRESSED: i32 = 1 << 20;

pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
pub const ATTR_CONTROL: i16 = 1 << 5;
pub const ATTR_DELETE_HORIZON: i16 = 1 << 6;

/// Why a batch was refused. Each maps to the Kafka error code a produce response carries.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    #[error("unsupported magic {0} (only v2 record batches are supported)")]
    UnsupportedMagic(i8),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(i16),
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    /// Kafka's RecordBatchTooLargeException: the batch cannot fit in one segment.
    #[error("batch of {size} bytes is larger than the segment size {max} (segment.bytes)")]
    RecordListTooLarge { size: usize, max: usize },
}

impl BatchError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BatchError::CorruptMessage(_) => 2,
            BatchError::MessageTooLarge { .. } => 10,
            BatchError::RecordListTooLarge { .. } => 18,
            BatchError::UnsupportedMagic(_) => 43,
            BatchError::UnsupportedCompression(_) => 76,
            BatchError::InvalidRecord(_) => 87,
        }
    }
}

/// A parsed copy of the 61-byte v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the fixed header; checks only that 61 bytes are present.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < HEADER_SIZE {
            return Err(BatchError::CorruptMessage(format!(
                "batch header needs {HEADER_SIZE} bytes, {} remain",
                bytes.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, BASE_OFFSET_OFFSET),
            batch_length: be_i32(bytes, BATCH_LENGTH_OFFSET),
            partition_leader_epoch: be_i32(bytes, PARTITION_LEADER_EPOCH_OFFSET),
            magic: bytes[MAGIC_OFFSET] as i8,
            crc: be_i32(bytes, CRC_OFFSET) as u32,
            attributes: be_i16(bytes, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: be_i64(bytes, BASE_TIMESTAMP_OFFSET),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(bytes, PRODUCER_ID_OFFSET),
            producer_epoch: be_i16(bytes, PRODUCER_EPOCH_OFFSET),
            base_sequence: be_i32(bytes, BASE_SEQUENCE_OFFSET),
            record_count: be_i32(bytes, RECORD_COUNT_OFFSET),
        })
    }

    /// Bytes the whole batch occupies (12 + batchLength). Negative lengths read as 0.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd; 5-7 invalid).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Sequence of the last record, wrapping at i32::MAX like Kafka's
    /// `DefaultRecordBatch.incrementSequence`; -1 when the batch has no sequence.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == -1 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
}

/// CRC-32C of a complete batch as stored in its `crc` field.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Marks one whole batch as `LogAppendTime` with `max_timestamp`, and re-seals its CRC (the
/// records are not touched, so nothing is recompressed).
pub fn set_log_append_time(batch: &mut [u8], max_timestamp: i64) {
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]])
        | ATTR_TIMESTAMP_TYPE;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Checks one complete batch (exactly `batch.len()` bytes) beyond what `parse` checks.
/// Used by produce validation and by recovery.
pub fn validate_batch(batch: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.magic != MAGIC_V2 {
        if (0..MAGIC_V2).contains(&header.magic) {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        return Err(BatchError::CorruptMessage(format!(
            "unknown magic {}",
            header.magic
        )));
    }
    if header.batch_length < BATCH_LENGTH_MIN as i32 {
        return Err(BatchError::CorruptMessage(format!(
            "batch length {} below the minimum {BATCH_LENGTH_MIN}",
            header.batch_length
        )));
    }
    if header.total_size() != batch.len() {
        return Err(BatchError::CorruptMessage(format!(
            "batch length field says {} bytes, {} present",
            header.total_size(),
            batch.len()
        )));
    }
    if header.total_size() > max_batch_bytes {
        return Err(BatchError::MessageTooLarge {
            size: header.total_size(),
            max: max_batch_bytes,
        });
    }
    let crc = compute_crc(batch);
    if crc != header.crc {
        return Err(BatchError::CorruptMessage(format!(
            "crc mismatch: stored {:#010x}, computed {crc:#010x}",
            header.crc
        )));
    }
    if header.compression() > 4 {
        return Err(BatchError::UnsupportedCompression(header.compression()));
    }
    if header.record_count < 1 {
        return Err(BatchError::InvalidRecord(format!(
            "record count {} (a batch holds at least one record)",
            header.record_count
        )));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::InvalidRecord(format!(
            "last offset delta {} with {} records",
            header.last_offset_delta, header.record_count
        )));
    }
    let records_bytes = batch.len() - HEADER_SIZE;
    let count = header.record_count as usize;
    let count_fits = if header.compression() == 0 {
        count.saturating_mul(RECORD_SIZE_MIN) <= records_bytes
    } else {
        header.record_count <= RECORD_COUNT_MAX_COMPRESSED
    };
    if !count_fits {
        return Err(BatchError::CorruptMessage(format!(
            "record count {count} cannot fit in {records_bytes} record bytes"
        )));
    }
    Ok(header)
}

/// Walks every batch of a produce request's records blob and validates each one.
/// Any trailing partial batch is an error (CORRUPT_MESSAGE): producers send whole batches.
pub fn validate_batches(
    bytes: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    let mut headers = Vec::new();
    let mut position = 0usize;
    if bytes.is_empty() {
        return Err(BatchError::CorruptMessage("no record batches".into()));
    }
    while position < bytes.len() {
        let rest = &bytes[position..];
        let header = BatchHeader::parse(rest)?;
        if header.batch_length < 0 || header.total_size() > rest.len() {
            return Err(BatchError::CorruptMessage(format!(
                "batch at byte {position} claims {} bytes, {} remain",
                i64::from(header.batch_length) + LOG_OVERHEAD as i64,
                rest.len()
            )));
        }
        let size = header.total_size();
        headers.push(validate_batch(&rest[..size], max_batch_bytes)?);
        position += size;
    }
    Ok(headers)
}

/// Rewrites a batch's base offset and partition leader epoch in place (not CRC-covered).
pub fn set_base_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    debug_assert!(batch.len() >= HEADER_SIZE);
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod test_util {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    pub fn record(offset: i64, ts: i64, key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1 + offset as i32,
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        }
    }

    /// One batch of `records` with offsets 0.. (the log assigns real ones on append).
    pub fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode test batch");
        buf.to_vec()
    }

    /// A batch of `count` records with timestamps `ts`, `ts+1`, ... and values `v{i}`.
    pub fn simple_batch(count: usize, ts: i64, value_size: usize) -> Vec<u8> {
        let value = "x".repeat(value_size);
        let records: Vec<Record> = (0..count as i64)
            .map(|i| record(i, ts + i, Some(&format!("k{i}")), Some(&value)))
            .collect();
        encode(&records, Compression::None)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use kafka_protocol::records::Compression;

    #[test]
    fn parse_reads_every_field_of_an_encoded_batch() {
        // Proves the header byte map matches what kafka-protocol's encoder writes.
        let bytes = simple_batch(3, 1000, 5);
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.total_size(), bytes.len());
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1002);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.crc, compute_crc(&bytes));
        assert_eq!(validate_batches(&bytes, 1 << 20).unwrap(), vec![h]);
    }

    #[test]
    fn validate_accepts_compressed_and_multiple_batches() {
        // Proves back-to-back batches with every codec pass validation.
        let mut all = Vec::new();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let recs: Vec<_> = (0..4).map(|i| record(i, 5, Some("k"), Some("v"))).collect();
            all.extend(encode(&recs, c));
        }
        let headers = validate_batches(&all, 1 << 20).unwrap();
        assert_eq!(headers.len(), 5);
        assert_eq!(headers[4].compression(), 4);
    }

    #[test]
    fn validate_rejects_each_kind_of_bad_batch_with_its_code() {
        // Proves each validation rule maps to the Kafka error code the brief names.
        let good = simple_batch(2, 0, 3);
        let mut torn = good.clone();
        torn.pop();
        assert_eq!(
            validate_batches(&torn, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            2
        );

        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert_eq!(
            validate_batches(&bad_crc, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            2
        );

        let mut magic1 = good.clone();
        magic1[MAGIC_OFFSET] = 1;
        assert_eq!(
            validate_batches(&magic1, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            43
        );

        assert_eq!(
            validate_batches(&good, 10).unwrap_err().kafka_error_code(),
            10
        );

        let mut codec = good.clone();
        codec[ATTRIBUTES_OFFSET + 1] |= 7;
        let crc = compute_crc(&codec);
        codec[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_batches(&codec, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            76
        );

        let mut delta = good.clone();
        delta[LAST_OFFSET_DELTA_OFFSET + 3] = 5;
        let crc = compute_crc(&delta);
        delta[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_batches(&delta, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            87
        );
    }

    #[test]
    fn last_sequence_wraps_like_kafka() {
        // Proves sequence arithmetic wraps at i32::MAX to 0.
        let mut h = BatchHeader::parse(&simple_batch(3, 0, 1)).unwrap();
        h.base_sequence = i32::MAX - 1;
        assert_eq!(h.last_sequence(), 0);
        h.base_sequence = 10;
        assert_eq!(h.last_sequence(), 12);
        h.base_sequence = -1;
        assert_eq!(h.last_sequence(), -1);
    }

    #[test]
    fn random_bytes_never_panic_validation() {
        // Proves validate_batches returns errors, never panics, on arbitrary input.
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let good = simple_batch(3, 0, 4);
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let mut bytes: Vec<u8> = if rng.random_bool(0.5) {
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut g = good.clone();
                let i = rng.random_range(0..g.len());
                g[i] = rng.random();
                g.truncate(rng.random_range(0..=g.len()));
                g
            };
            if rng.random_bool(0.3) && bytes.len() > 12 {
                bytes[8..12].copy_from_slice(&rng.random::<i32>().to_be_bytes());
            }
            let _ = validate_batches(&bytes, 1 << 20);
        }
    }
}
