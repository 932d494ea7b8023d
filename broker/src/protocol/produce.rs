//! Produce and InitProducerId.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProducerId, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::Reply;
use crate::net::{Chunk, Outcome};
use crate::partition::codes;
use crate::server::Broker;

const INVALID_REQUIRED_ACKS: i16 = 21;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

fn partition_error(
    index: i32,
    code: i16,
    message: Option<String>,
    record_errors: Vec<(i32, String)>,
    version: i16,
) -> PartitionProduceResponse {
    let mut r = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    if version >= 8 {
        r.error_message = message.clone().map(StrBytes::from_string);
        r.record_errors = if record_errors.is_empty() && code == codes::INVALID_RECORD {
            vec![BatchIndexAndErrorMessage::default()
                .with_batch_index(0)
                .with_batch_index_error_message(message.map(StrBytes::from_string))]
        } else {
            record_errors
                .into_iter()
                .map(|(i, m)| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(i)
                        .with_batch_index_error_message(Some(StrBytes::from_string(m)))
                })
                .collect()
        };
    }
    r
}

pub async fn produce(broker: &Broker, req: ProduceRequest, version: i16) -> Reply {
    let acks = req.acks;
    if !matches!(acks, -1..=1) {
        let responses = req
            .topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                partition_error(
                                    p.index,
                                    INVALID_REQUIRED_ACKS,
                                    None,
                                    Vec::new(),
                                    version,
                                )
                            })
                            .collect(),
                    )
            })
            .collect();
        return Reply::msg(ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        ));
    }
    let transactional = req.transactional_id.is_some();
    let mut failed = false;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // acks=all: (topic index, partition index, partition, last offset, epoch, min ISR) of each
    // append to wait for in the purgatory.
    let mut waits = Vec::new();
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let info = broker.topics.get(&name);
        let min_isr: i32 = info
            .as_ref()
            .and_then(|i| i.configs.get("min.insync.replicas"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(broker.config.min_insync_replicas);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let part = broker.leader_replica(&name, pd.index);
            let resp = match (part, pd.records) {
                _ if transactional => partition_error(
                    pd.index,
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    Some("transactions are not supported by Kairos yet".into()),
                    Vec::new(),
                    version,
                ),
                (Err(code), _) => partition_error(pd.index, code, None, Vec::new(), version),
                (Ok(_), None) => partition_error(
                    pd.index,
                    codes::CORRUPT_MESSAGE,
                    Some("null record set".into()),
                    Vec::new(),                    version,
                ),
                (Ok(p), Some(_)) if acks == -1 && (p.isr_size() as i32) < min_isr => partition_error(
                    pd.index,
                    codes::NOT_ENOUGH_REPLICAS,
                    Some(format!("The size of the current ISR {} is insufficient to satisfy the min.isr requirement of {min_isr}", p.isr_size())),
                    Vec::new(),                    version,
                ),
                (Ok(p), Some(records)) => match p.append(records) {
                    Ok(r) => {
                        if acks == -1 {
                            waits.push((responses.len(), partitions.len(), p, r.last_offset, r.leader_epoch, min_isr));
                        }
                        PartitionProduceResponse::default()
                            .with_index(pd.index)
                            .with_base_offset(r.base_offset)
                            .with_log_append_time_ms(r.log_append_time_ms)
                            .with_log_start_offset(r.log_start_offset)
                    }
                    Err(e) => {
                        tracing::debug!("produce to {name}-{}: {}", pd.index, e.message);
                        // Kafka's RecordValidationException answers carry the log start offset.
                        let validation = matches!(e.code, codes::INVALID_RECORD | codes::INVALID_TIMESTAMP);
                        let mut r = partition_error(pd.index, e.code, Some(e.message), e.record_errors, version);
                        if validation {
                            r.log_start_offset = p.log_start_offset();
                        }
                        r
                    }
                },
            };
            failed |= resp.error_code != 0;
            partitions.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        // Kafka sends nothing for acks=0; on an error it closes the connection so the client
        // notices (it cannot learn the error otherwise).
        return if failed {
            Reply::Close("produce with acks=0 failed".into())
        } else {
            Reply::None
        };
    }
    let done = |responses: Vec<TopicProduceResponse>| {
        ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
    };
    if waits.is_empty() {
        return Reply::msg(done(responses));
    }
    // The produce purgatory: acks=all answers once the ISR holds every appended batch (the HW
    // passed it), or with an error at `timeout_ms` or when leadership moves. The wait is handed
    // to the connection, which reads and appends the next request meanwhile and writes the
    // answers in request order (see `net`).
    Reply::Later(Box::pin(async move {
        let waited = futures::future::join_all(
            waits
                .iter()
                .map(|(_, _, p, last, epoch, _)| p.wait_replicated(*last, *epoch, deadline)),
        )
        .await;
        for ((t, i, p, _, _, min_isr), result) in waits.iter().zip(waited) {
            let resp: &mut PartitionProduceResponse = &mut responses[*t].partition_responses[*i];
            let code = match result {
                Ok(()) if (p.isr_size() as i32) < *min_isr => {
                    codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                }
                Ok(()) => continue,
                Err(code) => code,
            };
            *resp = partition_error(resp.index, code, None, Vec::new(), version);
        }
        done(responses)
    }))
}

/// Produce v0–v2 (magic v0/v1 message sets): advertised, as Kafka does, but answered with
/// UNSUPPORTED_VERSION per partition. The crate does not model these versions, so the request is
/// walked and the answer written by hand:
/// request  = header v1 (api_key i16, version i16, correlation_id i32, client_id string),
///            acks i16, timeout i32, [topic string, [partition i32, records bytes]]
/// response = [topic string, [partition i32, error_code i16, base_offset i64,
///            log_append_time i64 (v2)]], throttle_time_ms i32 (v1+)
pub fn legacy_unsupported(frame: Bytes, version: i16, correlation_id: i32) -> Outcome {
    /// (acks, [(topic name, [partition])]).
    type Parsed = (i16, Vec<(Bytes, Vec<i32>)>);
    fn parse(mut b: Bytes) -> Option<Parsed> {
        fn string(b: &mut Bytes) -> Option<Bytes> {
            if b.remaining() < 2 {
                return None;
            }
            let n = b.get_i16();
            if n < 0 {
                return Some(Bytes::new());
            }
            (b.remaining() >= n as usize).then(|| b.split_to(n as usize))
        }
        fn count(b: &mut Bytes, min_item: usize) -> Option<usize> {
            if b.remaining() < 4 {
                return None;
            }
            let n = b.get_i32();
            // Every item takes at least `min_item` bytes: bound the count by what is left.
            (n >= 0 && (n as usize) * min_item <= b.remaining()).then_some(n as usize)
        }
        b.advance(8);
        string(&mut b)?; // client id
        if b.remaining() < 6 {
            return None;
        }
        let acks = b.get_i16();
        b.get_i32();
        let mut topics = Vec::new();
        for _ in 0..count(&mut b, 6)? {
            let name = string(&mut b)?;
            let mut parts = Vec::new();
            for _ in 0..count(&mut b, 8)? {
                if b.remaining() < 8 {
                    return None;
                }
                parts.push(b.get_i32());
                let len = b.get_i32();
                if len > 0 {
                    if b.remaining() < len as usize {
                        return None;
                    }
                    b.advance(len as usize);
                }
            }
            topics.push((name, parts));
        }
        Some((acks, topics))
    }
    let Some((acks, topics)) = parse(frame) else {
        return Outcome::Close(format!("malformed Produce v{version} request"));
    };
    if acks == 0 {
        return Outcome::Close(format!("Produce v{version} is not supported"));
    }
    let mut out = BytesMut::new();
    out.put_i32(correlation_id);
    out.put_i32(topics.len() as i32);
    for (name, parts) in topics {
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        out.put_i32(parts.len() as i32);
        for p in parts {
            out.put_i32(p);
            out.put_i16(codes::UNSUPPORTED_VERSION);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    Outcome::Respond(vec![Chunk::Bytes(out.freeze())], None)
}

pub async fn init_producer_id(
    broker: &Broker,
    req: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        return resp
            .with_error_code(codes::INVALID_REQUEST)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // KIP-360: an idempotent producer may ask to bump the epoch of the id it already holds.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match broker.producer_ids.next(&broker.topics).await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::warn!("allocating a producer id: {}", e.message);
            resp.with_error_code(e.code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
