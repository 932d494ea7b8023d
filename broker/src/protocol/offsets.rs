//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords.

use kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};

use crate::partition::codes;
use crate::server::Broker;

pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let part = match broker.leader_replica(&name, p.partition_index) {
                        Ok(part) => part,
                        Err(code) => return resp.with_error_code(code),
                    };
                    let epoch_error = part.check_current_epoch(p.current_leader_epoch);
                    if epoch_error != 0 {
                        return resp.with_error_code(epoch_error);
                    }
                    // The leader epoch field exists from v4; the codec rejects it earlier.
                    let epoch = if version >= 4 {
                        part.leader_epoch()
                    } else {
                        -1
                    };
                    // Kafka: a negative spec it does not know is UNSUPPORTED_VERSION.
                    if p.timestamp < -5 {
                        return resp.with_error_code(codes::UNSUPPORTED_VERSION);
                    }
                    let found = match p.timestamp {
                        // -1 latest (high watermark; LSO = HW without transactions)
                        -1 => Ok(Some((part.high_watermark(), -1))),
                        // -2 earliest, -4 earliest local (no tiered storage: the same)
                        -2 | -4 => Ok(Some((part.log_start_offset(), -1))),
                        // -3 max timestamp (KIP-734)
                        -3 => part.max_timestamp_and_offset(),
                        ts if ts >= 0 => part.offset_for_timestamp(ts),
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some((offset, ts))) => resp
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(epoch),
                        Ok(None) => resp,
                        Err(e) => resp.with_error_code(e.code),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

pub fn offset_for_leader_epoch(
    broker: &Broker,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let part = match broker.leader_replica(&name, p.partition) {
                        Ok(part) => part,
                        Err(code) => return resp.with_error_code(code),
                    };
                    let epoch_error = part.check_current_epoch(p.current_leader_epoch);
                    if epoch_error != 0 {
                        return resp.with_error_code(epoch_error);
                    }
                    // From the leader-epoch cache: the largest epoch <= the requested one and
                    // where it ended; (-1, -1) for an epoch above every known one.
                    let (epoch, end) = part.end_offset_for_epoch(p.leader_epoch);
                    resp.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub fn delete_records(
    broker: &Broker,
    req: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let part = match broker.leader_replica(&name, p.partition_index) {
                        Ok(part) => part,
                        Err(code) => return resp.with_error_code(code),
                    };
                    // -1 means "up to the high watermark".
                    let offset = if p.offset == -1 {
                        part.high_watermark()
                    } else {
                        p.offset
                    };
                    if offset < 0 || offset > part.high_watermark() {
                        return resp.with_error_code(codes::OFFSET_OUT_OF_RANGE);
                    }
                    match part.delete_records_before(offset) {
                        Ok(low) => resp.with_low_watermark(low),
                        Err(e) => resp.with_error_code(e.code),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
