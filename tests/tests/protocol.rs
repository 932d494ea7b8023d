//! Byte-level protocol tests against a real `kairos serve` process: requests are built with the
//! `kafka-protocol` crate (or by hand where the crate cannot express them), sent over raw TCP,
//! and the answers decoded and checked against Kafka's documented behaviour.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kairos_tests::{Broker, RawConn};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const CLIENT_ID: &str = "protocol-test";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Header + body of one request (without the size prefix).
fn encode_request<R: Request>(version: i16, correlation_id: i32, req: &R) -> Vec<u8> {
    let key = ApiKey::try_from(R::KEY).expect("known api key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s(CLIENT_ID)));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode header");
    req.encode(&mut buf, version).expect("encode request");
    buf.to_vec()
}

/// Decodes one response frame, checking the correlation id and that nothing is left over.
fn decode_response<R: Request>(version: i16, correlation_id: i32, frame: Vec<u8>) -> R::Response {
    let key = ApiKey::try_from(R::KEY).expect("known api key");
    let mut b = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut b, key.response_header_version(version))
        .expect("decode response header");
    assert_eq!(
        header.correlation_id, correlation_id,
        "{key:?} v{version}: correlation id"
    );
    let resp = <R::Response as Decodable>::decode(&mut b, version)
        .unwrap_or_else(|e| panic!("decode {key:?} v{version} response: {e}"));
    assert!(
        !b.has_remaining(),
        "{key:?} v{version}: {} trailing bytes in the response",
        b.remaining()
    );
    resp
}

/// A raw connection with a correlation-id counter.
struct Client {
    conn: RawConn,
    next_correlation: i32,
}

impl Client {
    fn connect(broker: &Broker) -> Client {
        Client {
            conn: RawConn::connect(broker.addr()),
            next_correlation: 1,
        }
    }

    fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let corr = self.next_correlation;
        self.next_correlation += 1;
        self.conn.send(&encode_request(version, corr, req));
        let frame = self
            .conn
            .recv()
            .unwrap_or_else(|| panic!("no answer to api {} v{version}", R::KEY));
        decode_response::<R>(version, corr, frame)
    }

    fn metadata(&mut self, topics: Option<&[&str]>, auto_create: bool) -> MetadataResponse {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        self.call(12, &req)
    }

    fn create_topic_with(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
        validate_only: bool,
    ) -> create_topics_response::CreatableTopicResult {
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only);
        let mut resp = self.call(7, &req);
        assert_eq!(resp.topics.len(), 1);
        resp.topics.remove(0)
    }

    fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let r = self.create_topic_with(name, partitions, 1, configs, false);
        assert_eq!(
            r.error_code,
            0,
            "creating {name}: {:?}",
            r.error_message.as_ref().map(|m| m.as_str())
        );
    }

    /// Produce v9 with acks=1 of one record set to one partition.
    fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> produce_response::PartitionProduceResponse {
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let mut resp = self.call(9, &req);
        assert_eq!(resp.responses.len(), 1);
        let mut t = resp.responses.remove(0);
        assert_eq!(t.name.0.as_str(), topic);
        assert_eq!(t.partition_responses.len(), 1);
        t.partition_responses.remove(0)
    }

    /// ListOffsets v7 for one partition and one timestamp query.
    fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> list_offsets_response::ListOffsetsPartitionResponse {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let mut resp = self.call(7, &req);
        assert_eq!(resp.topics.len(), 1);
        let mut t = resp.topics.remove(0);
        assert_eq!(t.partitions.len(), 1);
        t.partitions.remove(0)
    }

    fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])])
    }

    /// Fetch v12 (the first flexible version, topics by name) of one partition.
    fn fetch(&mut self, topic: &str, partition: i32, offset: i64) -> fetch_response::PartitionData {
        let resp = self.call(12, &Self::fetch_request(topic, partition, offset));
        single_fetch_partition(resp)
    }
}

fn single_fetch_partition(mut resp: FetchResponse) -> fetch_response::PartitionData {
    assert_eq!(resp.error_code, 0, "fetch top-level error");
    assert_eq!(resp.responses.len(), 1);
    let mut t = resp.responses.remove(0);
    assert_eq!(t.partitions.len(), 1);
    t.partitions.remove(0)
}

fn record(i: i64, ts: i64, pid: i64, epoch: i16, base_seq: i32) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: i,
        // The encoder starts a new batch when offset - sequence changes: keep it constant.
        sequence: if pid >= 0 {
            base_seq + i as i32
        } else {
            i as i32 - 1
        },
        timestamp: ts,
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(format!("value-{i}"))),
        headers: Default::default(),
    }
}

fn encode_batch(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// One uncompressed batch of records with the given timestamps (no producer id).
fn batch_with_timestamps(timestamps: &[i64]) -> Bytes {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| record(i as i64, *ts, -1, -1, -1))
        .collect();
    encode_batch(&records)
}

/// One uncompressed batch of `n` records (no producer id).
fn batch(n: usize) -> Bytes {
    let ts = now_ms();
    batch_with_timestamps(&vec![ts; n])
}

/// One idempotent batch of `n` records.
fn idempotent_batch(n: usize, pid: i64, epoch: i16, base_seq: i32) -> Bytes {
    let ts = now_ms();
    let records: Vec<Record> = (0..n as i64)
        .map(|i| record(i, ts, pid, epoch, base_seq))
        .collect();
    encode_batch(&records)
}

/// Base offset and record count of every batch in a record set (the batch headers).
fn batch_offsets(records: &[u8]) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 61 <= records.len() {
        let base = i64::from_be_bytes(records[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let count = i32::from_be_bytes(records[pos + 57..pos + 61].try_into().unwrap());
        out.push((base, count));
        pos += 12 + len;
    }
    assert_eq!(pos, records.len(), "record set ends inside a batch");
    out
}

/// Sends an ApiVersions v3 on a fresh connection and expects a correct answer: the broker is
/// alive and serving other clients.
fn assert_serving(broker: &Broker) {
    if let Some(pid) = broker.pid() {
        // SAFETY: signal 0 only checks that the process exists.
        assert_eq!(
            unsafe { libc::kill(pid as i32, 0) },
            0,
            "broker process gone"
        );
    }
    let stream = match TcpStream::connect(broker.addr()) {
        Ok(s) => s,
        Err(e) => panic!(
            "a new connection was refused ({e}); broker log:\n{}",
            broker.log()
        ),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = RawConn { stream };
    c.send(&encode_request(3, 1, &api_versions_v3_request()));
    let Some(frame) = c.recv() else {
        panic!(
            "a new connection got no ApiVersions answer; broker log:\n{}",
            broker.log()
        );
    };
    let resp = decode_response::<ApiVersionsRequest>(3, 1, frame);
    assert_eq!(resp.error_code, 0);
    assert!(!resp.api_keys.is_empty());
}

fn api_versions_v3_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(s("kairos-protocol-test"))
        .with_client_software_version(s("1.0"))
}

fn range_of(resp: &ApiVersionsResponse, key: ApiKey) -> Option<(i16, i16)> {
    resp.api_keys
        .iter()
        .find(|k| k.api_key == key as i16)
        .map(|k| (k.min_version, k.max_version))
}

fn assert_standard_ranges(resp: &ApiVersionsResponse, what: &str) {
    let produce = range_of(resp, ApiKey::Produce).expect("Produce advertised");
    assert_eq!(produce.0, 0, "{what}: Produce must be advertised from v0");
    assert!(produce.1 >= 9, "{what}: Produce max {}", produce.1);
    for key in [
        ApiKey::Fetch,
        ApiKey::Metadata,
        ApiKey::ListOffsets,
        ApiKey::ApiVersions,
        ApiKey::CreateTopics,
        ApiKey::InitProducerId,
        ApiKey::DeleteRecords,
    ] {
        let (min, max) = range_of(resp, key).unwrap_or_else(|| panic!("{what}: {key:?} missing"));
        assert!(min <= max, "{what}: {key:?} {min}..{max}");
    }
    assert_eq!(range_of(resp, ApiKey::ApiVersions).unwrap(), (0, 3));
    // Each API listed once.
    let mut keys: Vec<i16> = resp.api_keys.iter().map(|k| k.api_key).collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "{what}: duplicate api keys");
}

// ---------------------------------------------------------------------------------------------
// 1. ApiVersions
// ---------------------------------------------------------------------------------------------

#[test]
fn api_versions_v0_v3_and_unsupported_version() {
    // Proves ApiVersions v0 and v3 list the supported ranges (Produce from v0) with a v0 response
    // header, and a too-new ApiVersions gets a v0 body with error 35 and the full list (KIP-511)
    // on a connection that stays usable.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);

    let v0 = c.call(0, &ApiVersionsRequest::default());
    assert_eq!(v0.error_code, 0);
    assert_standard_ranges(&v0, "v0");

    // v3: flexible body, but the response header must be v0 (no tagged-field byte after the
    // correlation id). decode_response uses response_header_version(3) == 0, and any extra byte
    // would make the body decode fail or leave trailing bytes.
    assert_eq!(ApiKey::ApiVersions.response_header_version(3), 0);
    c.conn
        .send(&encode_request(3, 77, &api_versions_v3_request()));
    let frame = c.conn.recv().expect("ApiVersions v3 answer");
    // Kafka omits tagged fields holding their default: the body ends with an empty tag section.
    assert_eq!(
        *frame.last().unwrap(),
        0,
        "top-level tagged fields not empty"
    );
    let v3 = decode_response::<ApiVersionsRequest>(3, 77, frame);
    assert_eq!(v3.error_code, 0);
    assert_standard_ranges(&v3, "v3");
    assert_eq!(v3.api_keys.len(), v0.api_keys.len());
    assert!(v3.unknown_tagged_fields.is_empty());
    assert!(v3.supported_features.is_empty() && v3.finalized_features.is_empty());

    // Version 99: header v2 (what a newer client sends), a v3-shaped body.
    let mut req = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(4242)
        .with_client_id(Some(s(CLIENT_ID)))
        .encode(&mut req, 2)
        .unwrap();
    api_versions_v3_request().encode(&mut req, 3).unwrap();
    c.conn.send(&req);
    let frame = c
        .conn
        .recv()
        .expect("ApiVersions v99 must be answered, not dropped");
    let mut b = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut b, 0).unwrap();
    assert_eq!(header.correlation_id, 4242);
    let body = ApiVersionsResponse::decode(&mut b, 0).expect("v0-encoded body");
    assert!(!b.has_remaining(), "trailing bytes after the v0 body");
    assert_eq!(body.error_code, 35, "UNSUPPORTED_VERSION");
    assert_eq!(body.api_keys.len(), v0.api_keys.len(), "full api list");
    assert_standard_ranges(&body, "v99 fallback");

    // The connection is still usable.
    let again = c.call(3, &api_versions_v3_request());
    assert_eq!(again.error_code, 0);
    assert_eq!(again.api_keys.len(), v0.api_keys.len());
}

// ---------------------------------------------------------------------------------------------
// 2. Pipelining
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Proves 20 requests written in one write are all answered, in order, each with its own
    // correlation id.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let corr = 1000 + i * 7;
        let frame = if i % 2 == 0 {
            encode_request(3, corr, &api_versions_v3_request())
        } else {
            encode_request(12, corr, &MetadataRequest::default().with_topics(None))
        };
        wire.extend_from_slice(&(frame.len() as i32).to_be_bytes());
        wire.extend_from_slice(&frame);
        expected.push((i % 2 == 0, corr));
    }
    c.conn.stream.write_all(&wire).unwrap();
    for (is_api_versions, corr) in expected {
        let frame = c
            .conn
            .recv()
            .unwrap_or_else(|| panic!("no answer for correlation {corr}"));
        if is_api_versions {
            let r = decode_response::<ApiVersionsRequest>(3, corr, frame);
            assert_eq!(r.error_code, 0);
        } else {
            let r = decode_response::<MetadataRequest>(12, corr, frame);
            assert_eq!(r.brokers.len(), 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Bad frames close the connection, and only that connection
// ---------------------------------------------------------------------------------------------

fn raw_stream(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(broker.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        // Any answer bytes mean the broker answered instead of closing.
        Ok(_) => false,
        // No answer and no close within the read timeout.
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            false
        }
        Err(_) => true, // reset
    }
}

#[test]
fn bad_frames_close_only_their_connection() {
    // Proves an unknown API key, a malformed body, an oversized and a negative frame size each
    // close the connection, while the broker keeps serving new connections.
    let broker = Broker::start(&["socket.request.max.bytes=1024"]);
    // A bystander connection opened before the bad ones must keep working too.
    let mut bystander = Client::connect(&broker);
    assert_eq!(bystander.call(3, &api_versions_v3_request()).error_code, 0);

    // Unknown API key 9999 (header v1 layout: key, version, correlation, client id).
    {
        let mut st = raw_stream(&broker);
        let mut f = BytesMut::new();
        f.put_i16(9999);
        f.put_i16(0);
        f.put_i32(1);
        f.put_i16(1);
        f.put_u8(b't');
        let mut w = (f.len() as i32).to_be_bytes().to_vec();
        w.extend_from_slice(&f);
        st.write_all(&w).unwrap();
        assert!(
            closed_by_peer(&mut st),
            "unknown api key: connection not closed"
        );
    }
    assert_serving(&broker);

    // Malformed Metadata bodies: a truncated topic array (v9), an i32 array count far beyond
    // the frame (v1), and garbage (an overlong varint array length, v9).
    for (version, body) in [
        (9i16, &[0x05u8][..]),
        (1, &[0x7f, 0xff, 0xff, 0xff][..]),
        (9, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..]),
    ] {
        let mut st = raw_stream(&broker);
        let mut f = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(version)
            .with_correlation_id(5)
            .with_client_id(Some(s(CLIENT_ID)))
            .encode(&mut f, ApiKey::Metadata.request_header_version(version))
            .unwrap();
        f.put_slice(body);
        let mut w = (f.len() as i32).to_be_bytes().to_vec();
        w.extend_from_slice(&f);
        st.write_all(&w).unwrap();
        assert!(
            closed_by_peer(&mut st),
            "malformed Metadata v{version} body {body:02x?}: connection not closed"
        );
        assert_serving(&broker);
    }

    // A size prefix above socket.request.max.bytes (1024).
    {
        let mut st = raw_stream(&broker);
        let mut w = 4096i32.to_be_bytes().to_vec();
        w.extend_from_slice(&[0u8; 100]);
        st.write_all(&w).unwrap();
        assert!(
            closed_by_peer(&mut st),
            "oversized frame: connection not closed"
        );
    }
    assert_serving(&broker);

    // A negative size.
    {
        let mut st = raw_stream(&broker);
        st.write_all(&(-16i32).to_be_bytes()).unwrap();
        assert!(
            closed_by_peer(&mut st),
            "negative size: connection not closed"
        );
    }
    assert_serving(&broker);
    assert_eq!(bystander.call(3, &api_versions_v3_request()).error_code, 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Produce validation
// ---------------------------------------------------------------------------------------------

#[test]
fn produce_rejects_bad_batches_without_appending() {
    // Proves corrupt, oversized, unknown-topic and unknown-partition produces fail with Kafka's
    // codes and append nothing: the next valid batch lands at offset 0.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    c.create_topic("small", 1, &[("max.message.bytes", "1000")]);

    // A flipped byte in the record payload (after the CRC): CRC32C mismatch.
    let good = batch(3);
    let mut bad = BytesMut::from(&good[..]);
    let last = bad.len() - 2;
    bad[last] ^= 0x5a;
    let r = c.produce("small", 0, bad.freeze());
    assert_eq!(r.error_code, 2, "flipped byte: CORRUPT_MESSAGE");

    // A batch larger than max.message.bytes=1000.
    let big: Vec<Record> = (0..4)
        .map(|i| {
            let mut r = record(i, now_ms(), -1, -1, -1);
            r.value = Some(Bytes::from(vec![b'x'; 400]));
            r
        })
        .collect();
    let big = encode_batch(&big);
    assert!(big.len() > 1000);
    let r = c.produce("small", 0, big);
    assert_eq!(r.error_code, 10, "MESSAGE_TOO_LARGE");

    let r = c.produce("no-such-topic", 0, batch(1));
    assert_eq!(r.error_code, 3, "unknown topic: UNKNOWN_TOPIC_OR_PARTITION");
    let r = c.produce("small", 7, batch(1));
    assert_eq!(r.error_code, 3, "partition 7: UNKNOWN_TOPIC_OR_PARTITION");

    let valid = batch(1);
    let r = c.produce("small", 0, valid.clone());
    assert_eq!(r.error_code, 0);
    assert_eq!(r.base_offset, 0, "nothing may have been appended before");

    let latest = c.list_offset("small", 0, -1);
    assert_eq!(latest.error_code, 0);
    assert_eq!(latest.offset, 1);

    let p = c.fetch("small", 0, 0);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    let records = p.records.expect("records");
    assert_eq!(batch_offsets(&records), vec![(0, 1)]);
    // The same batch, with only the base offset and partition leader epoch rewritten.
    assert_eq!(records.len(), valid.len());
    assert_eq!(&records[8..12], &valid[8..12], "batch length");
    assert_eq!(
        &records[16..],
        &valid[16..],
        "magic, crc, attributes .. records"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Legacy Produce v2
// ---------------------------------------------------------------------------------------------

#[test]
fn produce_v2_is_answered_with_unsupported_version() {
    // Proves a legacy Produce v2 (message set v1) gets a per-partition UNSUPPORTED_VERSION (35)
    // answer instead of a dropped connection.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    c.create_topic("legacy", 1, &[]);

    // One magic-1 message: offset, size, crc, magic, attributes, timestamp, key, value.
    let mut msg = BytesMut::new();
    msg.put_i8(1); // magic
    msg.put_i8(0); // attributes
    msg.put_i64(now_ms());
    msg.put_i32(-1); // null key
    msg.put_i32(5);
    msg.put_slice(b"hello");
    let crc = crc32fast_ieee(&msg);
    let mut set = BytesMut::new();
    set.put_i64(0);
    set.put_i32(msg.len() as i32 + 4);
    set.put_u32(crc);
    set.put_slice(&msg);

    let mut f = BytesMut::new();
    f.put_i16(0); // Produce
    f.put_i16(2);
    f.put_i32(31);
    f.put_i16(CLIENT_ID.len() as i16);
    f.put_slice(CLIENT_ID.as_bytes());
    f.put_i16(1); // acks
    f.put_i32(10_000);
    f.put_i32(1);
    f.put_i16(6);
    f.put_slice(b"legacy");
    f.put_i32(1);
    f.put_i32(0);
    f.put_i32(set.len() as i32);
    f.put_slice(&set);
    c.conn.send(&f);

    let frame = c
        .conn
        .recv()
        .expect("Produce v2 must be answered, not dropped");
    let mut b = Bytes::from(frame);
    assert_eq!(b.get_i32(), 31, "correlation id");
    assert_eq!(b.get_i32(), 1, "topics");
    let n = b.get_i16() as usize;
    assert_eq!(&b.split_to(n)[..], b"legacy");
    assert_eq!(b.get_i32(), 1, "partitions");
    assert_eq!(b.get_i32(), 0, "partition index");
    assert_eq!(b.get_i16(), 35, "UNSUPPORTED_VERSION");
    assert_eq!(b.get_i64(), -1, "base offset");
    assert_eq!(b.get_i64(), -1, "log append time (v2)");
    assert_eq!(b.get_i32(), 0, "throttle time");
    assert!(!b.has_remaining(), "trailing bytes");

    // Nothing was appended, and the connection still serves.
    assert_eq!(c.list_offset("legacy", 0, -1).offset, 0);
}

/// CRC-32 (IEEE), as used by magic 0/1 messages.
fn crc32fast_ieee(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------------
// 6. Topic administration
// ---------------------------------------------------------------------------------------------

fn describe_topic_configs(
    c: &mut Client,
    topic: &str,
) -> Vec<describe_configs_response::DescribeConfigsResourceResult> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configuration_keys(None)]);
    let mut resp = c.call(4, &req);
    assert_eq!(resp.results.len(), 1);
    let r = resp.results.remove(0);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.configs
}

fn config<'a>(
    configs: &'a [describe_configs_response::DescribeConfigsResourceResult],
    name: &str,
) -> &'a describe_configs_response::DescribeConfigsResourceResult {
    configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("config {name} not described"))
}

fn incremental_alter(c: &mut Client, topic: &str, op: i8, name: &str, value: Option<&str>) -> i16 {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_configs(vec![AlterableConfig::default()
                .with_name(s(name))
                .with_config_operation(op)
                .with_value(value.map(s))]),
    ]);
    let mut resp = c.call(1, &req);
    assert_eq!(resp.responses.len(), 1);
    resp.responses.remove(0).error_code
}

fn listed_topics(c: &mut Client) -> Vec<String> {
    c.metadata(None, false)
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

fn create_partitions(c: &mut Client, topic: &str, count: i32) -> i16 {
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(topic))
            .with_count(count)
            .with_assignments(None)]);
    let mut resp = c.call(3, &req);
    assert_eq!(resp.results.len(), 1);
    resp.results.remove(0).error_code
}

#[test]
fn create_topics_validation_and_configs() {
    // Proves CreateTopics, DescribeConfigs, IncrementalAlterConfigs and CreatePartitions
    // validate their input with Kafka's error codes and report config sources as Kafka does.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);

    let long = "x".repeat(250);
    for name in ["", "a b", "..", ".", long.as_str()] {
        let r = c.create_topic_with(name, 1, 1, &[], false);
        assert_eq!(r.error_code, 17, "name {name:?}: INVALID_TOPIC_EXCEPTION");
    }
    let ok249 = "y".repeat(249);
    assert_eq!(
        c.create_topic_with(&ok249, 1, 1, &[], true).error_code,
        0,
        "249 chars is legal"
    );

    let r = c.create_topic_with("cfg-unknown", 1, 1, &[("no.such.config", "1")], false);
    assert_eq!(r.error_code, 40, "unknown config key: INVALID_CONFIG");
    let r = c.create_topic_with("cfg-bad", 1, 1, &[("retention.ms", "abc")], false);
    assert_eq!(r.error_code, 40, "retention.ms=abc: INVALID_CONFIG");
    let r = c.create_topic_with("zero-parts", 0, 1, &[], false);
    assert_eq!(r.error_code, 37, "0 partitions: INVALID_PARTITIONS");
    let r = c.create_topic_with("rf3", 1, 3, &[], false);
    assert_eq!(
        r.error_code, 38,
        "rf 3 on one broker: INVALID_REPLICATION_FACTOR"
    );

    let r = c.create_topic_with("validated", 2, 1, &[("retention.ms", "1000")], true);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.num_partitions, 2);

    c.create_topic("admin", 1, &[("retention.ms", "123456")]);
    let r = c.create_topic_with("admin", 1, 1, &[], false);
    assert_eq!(r.error_code, 36, "TOPIC_ALREADY_EXISTS");

    let topics = listed_topics(&mut c);
    assert!(topics.contains(&"admin".to_string()), "{topics:?}");
    for absent in [
        "validated",
        "cfg-unknown",
        "cfg-bad",
        "zero-parts",
        "rf3",
        ok249.as_str(),
    ] {
        assert!(
            !topics.iter().any(|t| t == absent),
            "{absent} must not exist: {topics:?}"
        );
    }

    // DescribeConfigs: the set config is DYNAMIC_TOPIC_CONFIG, defaults DEFAULT_CONFIG.
    let configs = describe_topic_configs(&mut c, "admin");
    let retention = config(&configs, "retention.ms");
    assert_eq!(retention.value.as_ref().map(|v| v.as_str()), Some("123456"));
    assert_eq!(retention.config_source, 1);
    let mmb = config(&configs, "max.message.bytes");
    assert_eq!(mmb.config_source, 5);
    assert!(mmb
        .value
        .as_ref()
        .is_some_and(|v| v.as_str().parse::<i64>().is_ok()));
    assert_eq!(config(&configs, "cleanup.policy").config_source, 5);

    // IncrementalAlterConfigs: SET, then DELETE, and an invalid value.
    assert_eq!(
        incremental_alter(&mut c, "admin", 0, "max.message.bytes", Some("5000")),
        0
    );
    let configs = describe_topic_configs(&mut c, "admin");
    let mmb = config(&configs, "max.message.bytes");
    assert_eq!(mmb.value.as_ref().map(|v| v.as_str()), Some("5000"));
    assert_eq!(mmb.config_source, 1);
    assert_eq!(
        incremental_alter(&mut c, "admin", 1, "max.message.bytes", None),
        0
    );
    let configs = describe_topic_configs(&mut c, "admin");
    assert_eq!(config(&configs, "max.message.bytes").config_source, 5);
    assert_eq!(
        config(&configs, "retention.ms").config_source,
        1,
        "untouched"
    );
    assert_eq!(
        incremental_alter(&mut c, "admin", 0, "retention.ms", Some("abc")),
        40,
        "invalid value: INVALID_CONFIG"
    );
    let configs = describe_topic_configs(&mut c, "admin");
    assert_eq!(
        config(&configs, "retention.ms")
            .value
            .as_ref()
            .map(|v| v.as_str()),
        Some("123456"),
        "a rejected alter changes nothing"
    );

    // CreatePartitions: fewer is INVALID_PARTITIONS, more shows in Metadata.
    c.create_topic("growing", 2, &[]);
    assert_eq!(create_partitions(&mut c, "growing", 1), 37);
    assert_eq!(create_partitions(&mut c, "growing", 5), 0);
    let md = c.metadata(Some(&["growing"]), false);
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 5);
    // The new partitions are usable.
    assert_eq!(c.produce("growing", 4, batch(1)).error_code, 0);
}

// ---------------------------------------------------------------------------------------------
// 7. Fetch
// ---------------------------------------------------------------------------------------------

#[test]
fn fetch_empty_out_of_range_long_poll_mid_batch_and_sessions() {
    // Proves Fetch returns empty (not null) records, OFFSET_OUT_OF_RANGE past the end, wakes a
    // waiting fetch as soon as data arrives, returns the whole batch holding a mid-batch offset,
    // and rejects an unknown fetch session.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    c.create_topic("fetchme", 1, &[]);

    for version in [12i16, 13, 16] {
        let mut req = Client::fetch_request("fetchme", 0, 0);
        if version >= 13 {
            let id = c.metadata(Some(&["fetchme"]), false).topics[0].topic_id;
            req.topics[0].topic_id = id;
            req.topics[0].topic = TopicName::default();
        }
        let p = single_fetch_partition(c.call(version, &req));
        assert_eq!(p.error_code, 0, "v{version}");
        assert_eq!(
            p.records.as_deref(),
            Some(&b""[..]),
            "v{version}: empty records must be empty bytes, not null"
        );
        assert_eq!(p.preferred_read_replica, BrokerId(-1));
    }

    let p = c.fetch("fetchme", 0, 5);
    assert_eq!(p.error_code, 1, "fetch past LEO: OFFSET_OUT_OF_RANGE");

    // Long poll: fetch with max_wait 5 s on an empty partition, then produce from another
    // connection; the fetch must answer right away.
    let mut waiting = Client::connect(&broker);
    let req = Client::fetch_request("fetchme", 0, 0)
        .with_max_wait_ms(5000)
        .with_min_bytes(1);
    waiting.conn.send(&encode_request(12, 900, &req));
    // The fetch is parked: no answer within 300 ms.
    waiting
        .conn
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut peek = [0u8; 1];
    let parked = waiting.conn.stream.peek(&mut peek);
    assert!(
        matches!(&parked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "fetch with min_bytes=1 on an empty partition answered at once: {parked:?}"
    );
    waiting
        .conn
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let produced_at = Instant::now();
    let r = c.produce("fetchme", 0, batch_with_timestamps(&[now_ms(); 10]));
    assert_eq!(r.error_code, 0);
    assert_eq!(r.base_offset, 0);
    let frame = waiting.conn.recv().expect("long-poll answer");
    let waited = produced_at.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "waiting fetch answered {waited:?} after the produce (max_wait 5 s)"
    );
    let p = single_fetch_partition(decode_response::<FetchRequest>(12, 900, frame));
    assert_eq!(p.error_code, 0);
    assert_eq!(batch_offsets(p.records.as_deref().unwrap()), vec![(0, 10)]);

    // Mid-batch fetch offset: the whole batch that holds offset 5 comes back.
    let p = c.fetch("fetchme", 0, 5);
    assert_eq!(p.error_code, 0);
    let records = p.records.expect("records");
    assert_eq!(
        batch_offsets(&records),
        vec![(0, 10)],
        "whole batch from base offset 0"
    );
    let sets = RecordBatchDecoder::decode_all(&mut records.clone()).expect("decodable");
    assert_eq!(sets[0].records.len(), 10);
    assert_eq!(sets[0].records[5].offset, 5);

    // A session id the broker never handed out.
    let req = Client::fetch_request("fetchme", 0, 0)
        .with_session_id(123)
        .with_session_epoch(1);
    let resp = c.call(12, &req);
    assert_eq!(resp.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// 8. ListOffsets
// ---------------------------------------------------------------------------------------------

#[test]
fn list_offsets_latest_earliest_max_timestamp_and_by_time() {
    // Proves ListOffsets v7 answers -1, -2, -3 (KIP-734) and timestamp lookups as Kafka does,
    // with -1 for a timestamp past every record.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    c.create_topic("times", 1, &[]);

    let empty = c.list_offset("times", 0, -3);
    assert_eq!(empty.error_code, 0);
    assert_eq!(empty.offset, -1, "max timestamp of an empty partition");

    let base = now_ms() - 100_000;
    let big = now_ms() - 1_000;
    // offsets 0..=2, 3..=5 (offset 4 holds the largest timestamp), 6..=7
    for ts in [
        vec![base, base + 1, base + 2],
        vec![base + 3, big, base + 5],
        vec![base + 6, base + 7],
    ] {
        assert_eq!(
            c.produce("times", 0, batch_with_timestamps(&ts)).error_code,
            0
        );
    }

    let latest = c.list_offset("times", 0, -1);
    assert_eq!((latest.error_code, latest.offset), (0, 8));
    assert_eq!(latest.leader_epoch, 0);
    let earliest = c.list_offset("times", 0, -2);
    assert_eq!((earliest.error_code, earliest.offset), (0, 0));
    let max = c.list_offset("times", 0, -3);
    assert_eq!((max.error_code, max.offset, max.timestamp), (0, 4, big));

    let r = c.list_offset("times", 0, base + 1);
    assert_eq!((r.offset, r.timestamp), (1, base + 1));
    let r = c.list_offset("times", 0, base);
    assert_eq!(r.offset, 0);
    // base+4 is not in the log: the first record with ts >= base+4 is offset 4 (ts = big).
    let r = c.list_offset("times", 0, base + 4);
    assert_eq!((r.offset, r.timestamp), (4, big));
    let r = c.list_offset("times", 0, big + 1);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.offset, -1, "timestamp past all records");
    assert_eq!(r.timestamp, -1);
}

// ---------------------------------------------------------------------------------------------
// 9. Idempotent producer
// ---------------------------------------------------------------------------------------------

#[test]
fn idempotent_produce_dedup_gaps_and_restarts() {
    // Proves an idempotent producer's retried batch is answered with its original offset, a
    // sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER, and the state survives clean and unclean
    // restarts.
    let mut broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    c.create_topic("idem", 1, &[]);

    let init = c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    assert_eq!(init.producer_epoch, 0);

    let first = idempotent_batch(3, pid, 0, 0);
    let r = c.produce("idem", 0, first.clone());
    assert_eq!((r.error_code, r.base_offset), (0, 0));
    let r = c.produce("idem", 0, first);
    assert_eq!(r.error_code, 0, "duplicate must not be an error");
    assert_eq!(
        r.base_offset, 0,
        "duplicate answered with its original offset"
    );
    assert_eq!(
        c.list_offset("idem", 0, -1).offset,
        3,
        "duplicate not appended"
    );

    let r = c.produce("idem", 0, idempotent_batch(1, pid, 0, 10));
    assert_eq!(r.error_code, 45, "gap: OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_eq!(c.list_offset("idem", 0, -1).offset, 3);

    let second = idempotent_batch(3, pid, 0, 3);
    let r = c.produce("idem", 0, second.clone());
    assert_eq!((r.error_code, r.base_offset), (0, 3));

    // Clean restart.
    drop(c);
    broker.stop();
    broker.restart();
    let mut c = Client::connect(&broker);
    let r = c.produce("idem", 0, second.clone());
    assert_eq!(
        (r.error_code, r.base_offset),
        (0, 3),
        "after a clean restart the retry is a duplicate"
    );
    assert_eq!(c.list_offset("idem", 0, -1).offset, 6);

    // Crash.
    drop(c);
    broker.kill9();
    broker.restart();
    let mut c = Client::connect(&broker);
    let r = c.produce("idem", 0, second);
    assert_eq!(
        (r.error_code, r.base_offset),
        (0, 3),
        "after kill -9 the retry is a duplicate"
    );
    assert_eq!(c.list_offset("idem", 0, -1).offset, 6);
    let r = c.produce("idem", 0, idempotent_batch(1, pid, 0, 7));
    assert_eq!(r.error_code, 45, "the gap is still detected after restarts");
    let r = c.produce("idem", 0, idempotent_batch(2, pid, 0, 6));
    assert_eq!((r.error_code, r.base_offset), (0, 6));
}

// ---------------------------------------------------------------------------------------------
// 10. DeleteRecords
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_records_moves_the_log_start() {
    // Proves DeleteRecords to offset 2 moves the low watermark to 2 for ListOffsets and Fetch.
    let broker = Broker::start(&[]);
    let mut c = Client::connect(&broker);
    c.create_topic("trim", 1, &[]);
    for _ in 0..5 {
        assert_eq!(c.produce("trim", 0, batch(1)).error_code, 0);
    }
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name("trim"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(2)])]);
    let resp = c.call(2, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.low_watermark, 2);

    let earliest = c.list_offset("trim", 0, -2);
    assert_eq!((earliest.error_code, earliest.offset), (0, 2));
    assert_eq!(c.list_offset("trim", 0, -1).offset, 5);
    let p = c.fetch("trim", 0, 0);
    assert_eq!(
        p.error_code, 1,
        "fetch below the log start: OFFSET_OUT_OF_RANGE"
    );
    let p = c.fetch("trim", 0, 2);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.log_start_offset, 2);
    assert_eq!(batch_offsets(&p.records.unwrap())[0], (2, 1));
}

// ---------------------------------------------------------------------------------------------
// 11. Metadata auto-creation
// ---------------------------------------------------------------------------------------------

#[test]
fn metadata_auto_creates_topics_when_allowed() {
    // Proves Metadata v12 auto-creates an unknown topic with num.partitions partitions only when
    // the request and the broker allow it, with leader epochs that agree with ListOffsets.
    let broker = Broker::start(&["num.partitions=3"]);
    let mut c = Client::connect(&broker);

    let md = c.metadata(Some(&["auto-no"]), false);
    assert_eq!(md.topics.len(), 1);
    assert_eq!(
        md.topics[0].error_code, 3,
        "allow_auto_topic_creation=false"
    );
    assert!(!listed_topics(&mut c).contains(&"auto-no".to_string()));

    let md = c.metadata(Some(&["auto-yes"]), true);
    assert_eq!(md.topics.len(), 1);
    let t = &md.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!(t.name.as_ref().map(|n| n.0.as_str()), Some("auto-yes"));
    assert_eq!(t.partitions.len(), 3, "num.partitions=3");
    assert!(!t.topic_id.is_nil());
    let epochs: Vec<i32> = t.partitions.iter().map(|p| p.leader_epoch).collect();
    for (i, p) in t.partitions.iter().enumerate() {
        assert_eq!(p.error_code, 0);
        assert!(
            p.leader_epoch >= 0,
            "partition {i}: leader epoch {}",
            p.leader_epoch
        );
        assert_eq!(p.leader_id, md.brokers[0].node_id);
        // The epoch agrees with what ListOffsets reports for the same partition.
        let lo = c.list_offset("auto-yes", i as i32, -1);
        assert_eq!(lo.error_code, 0);
        assert_eq!(lo.leader_epoch, p.leader_epoch, "partition {i}");
    }
    assert!(listed_topics(&mut c).contains(&"auto-yes".to_string()));
    // Asking again returns the same topic (same id, same epochs), not a re-creation.
    let again = c.metadata(Some(&["auto-yes"]), true);
    assert_eq!(again.topics[0].topic_id, t.topic_id);
    let epochs2: Vec<i32> = again.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_epoch)
        .collect();
    assert_eq!(epochs, epochs2);

    // With auto.create.topics.enable=false nothing is created, whatever the request says.
    let off = Broker::start(&["auto.create.topics.enable=false"]);
    let mut c = Client::connect(&off);
    let md = c.metadata(Some(&["auto-off"]), true);
    assert_eq!(md.topics[0].error_code, 3);
    assert!(!listed_topics(&mut c).contains(&"auto-off".to_string()));
}
