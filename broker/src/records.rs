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
    encode_batch_as(records, now, None)
}

/// Who writes a batch as an idempotent producer: (producer id, epoch, first sequence).
pub type ProducerSeq = (i64, i16, i32);

/// Like [`encode_batch`], stamped with an idempotent producer's id, epoch and sequences, so the
/// leader it goes to deduplicates a resend (Kafka's idempotence, the last batches per producer).
pub fn encode_batch_as(
    records: Vec<Record>,
    now: i64,
    producer: Option<ProducerSeq>,
) -> Result<Bytes, String> {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.offset = i as i64;
            // The encoder keeps records in one batch while offset − sequence is constant; the
            // batch's base sequence is the first record's (-1: no producer).
            r.sequence = base_sequence.wrapping_add(i as i32);
            r.producer_id = producer_id;
            r.producer_epoch = producer_epoch;
            r.transactional = false;
            r.control = false;
            r.partition_leader_epoch = 0;
            r.timestamp_type = TimestampType::Creation;
            r.timestamp = now;
            r
        })
        .collect();
    encode(&records)
}

/// A control batch of one control record: key = version 0 and `control_type` (Kafka's control
/// record key), value `value`. Clients skip control batches (librdkafka ignores types it does
/// not know); Kairos writes its own with types Kafka does not use.
pub fn encode_control(control_type: i16, value: Bytes, now: i64) -> Result<Bytes, String> {
    let mut key = BytesMut::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control_type.to_be_bytes());
    let mut r = record(Some(key.freeze()), Some(value), Default::default(), now);
    r.control = true;
    encode(&[r])
}

/// The control type of a control record (Kafka's key: version i16, type i16).
pub fn control_type(record: &Record) -> Option<i16> {
    let key = record.key.as_ref()?;
    (record.control && key.len() == 4 && key[..2] == [0, 0])
        .then(|| i16::from_be_bytes([key[2], key[3]]))
}

fn encode(records: &[Record]) -> Result<Bytes, String> {
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

    #[test]
    fn control_batches_carry_the_control_flag_and_type() {
        let bytes = encode_control(0x4b01, Bytes::from_static(b"{}"), 7).unwrap();
        let headers = crate::log::batch::validate_batches(&bytes, usize::MAX).unwrap();
        assert!(headers[0].is_control());
        let mut b = bytes.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
        assert_eq!(control_type(&set.records[0]), Some(0x4b01));
        let plain = encode_batch(vec![record(None, None, Default::default(), 0)], 0).unwrap();
        let mut b = plain.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
        assert_eq!(control_type(&set.records[0]), None);
    }

    #[test]
    fn idempotent_batches_number_their_records() {
        let records = (0..3)
            .map(|_| record(None, None, Default::default(), 0))
            .collect();
        let bytes = encode_batch_as(records, 0, Some((42, 1, 10))).unwrap();
        let headers = crate::log::batch::validate_batches(&bytes, usize::MAX).unwrap();
        assert_eq!(headers.len(), 1, "one batch");
        assert_eq!(headers[0].record_count, 3);
        assert_eq!(headers[0].producer_id, 42);
        assert_eq!(headers[0].producer_epoch, 1);
        assert_eq!(headers[0].base_sequence, 10);
        let mut b = bytes.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
        let sequences: Vec<i32> = set.records.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [10, 11, 12]);
    }
}
