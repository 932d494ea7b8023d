//! Record batches the broker writes itself (`__consumer_offsets` records, forwarded delayed
//! records, cancel markers): one uncompressed v2 batch, timestamped by the broker.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A record with the broker's defaults (no producer id, create time `timestamp`).
pub fn record(
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: indexmap::IndexMap<StrBytes, Option<Bytes>>,
    timestamp: i64,
) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key,
        value,
        headers,
        delete_horizon: false,
    }
}

/// Encodes `records` as ONE uncompressed v2 batch timestamped `now`. (The encoder starts a new
/// batch whenever `offset - sequence` changes, so both advance together here.)
pub fn encode_batch(records: Vec<Record>, now: i64) -> Result<Bytes, String> {
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.offset = i as i64;
            r.sequence = i as i32 - 1;
            r.producer_id = -1;
            r.producer_epoch = -1;
            r.transactional = false;
            r.control = false;
            r.partition_leader_epoch = 0;
            r.timestamp_type = TimestampType::Creation;
            r.timestamp = now;
            r
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_records_make_one_batch() {
        let records = (0..5)
            .map(|i| {
                record(
                    Some(Bytes::from(format!("k{i}"))),
                    None,
                    Default::default(),
                    0,
                )
            })
            .collect();
        let bytes = encode_batch(records, 42).unwrap();
        let headers = crate::log::batch::validate_batches(&bytes, usize::MAX).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].record_count, 5);
        assert_eq!(headers[0].max_timestamp, 42);
    }
}
