//! DescribeTopicPartitions (KIP-966): Metadata's partition view with eligible leader replicas,
//! paged by a cursor. Kafka 4's kafka-topics --describe uses it (and prints "N/A" for the ELR
//! columns when a broker lacks it). Kairos has no ELR (KIP-966's eligible.leader.replicas
//! feature), so both lists are empty, as on a Kafka cluster with the feature off.

use kafka_protocol::messages::describe_topic_partitions_request::DescribeTopicPartitionsRequest;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponse, DescribeTopicPartitionsResponsePartition,
    DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::metadata::topic_entry;
use crate::metadata::codes;
use crate::server::Broker;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response holds.
const PARTITIONS_PER_RESPONSE_MAX: usize = 2000;

/// Authorized operations on a topic without an authorizer: every topic operation (READ, WRITE,
/// CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS as AclOperation bits).
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub fn describe_topic_partitions(
    broker: &Broker,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.topics.image();
    let limit = usize::try_from(req.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, PARTITIONS_PER_RESPONSE_MAX);
    // Asked topics in name order (all topics when none are named), unknown ones answered with
    // UNKNOWN_TOPIC_OR_PARTITION.
    let mut names: Vec<String> = if req.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut topics = Vec::new();
    let mut budget = limit;
    let mut next_cursor = None;
    for name in names {
        if cursor_topic.as_ref().is_some_and(|c| name < *c) {
            continue;
        }
        let first = if cursor_topic.as_ref() == Some(&name) {
            cursor_partition as usize
        } else {
            0
        };
        let Some(info) = image.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_name(Some(TopicName(StrBytes::from_string(name)))),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(0),
            );
            break;
        }
        let entry = topic_entry(&image, info);
        let all = entry.partitions.len();
        let partitions: Vec<DescribeTopicPartitionsResponsePartition> = entry
            .partitions
            .into_iter()
            .skip(first)
            .take(budget)
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(p.error_code)
                    .with_partition_index(p.partition_index)
                    .with_leader_id(p.leader_id)
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replica_nodes)
                    .with_isr_nodes(p.isr_nodes)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(p.offline_replicas)
            })
            .collect();
        budget -= partitions.len();
        let end = first + partitions.len();
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(entry.name)
                .with_topic_id(entry.topic_id)
                .with_is_internal(entry.is_internal)
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_OPERATIONS_ALL),
        );
        if end < all {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(info.name.clone())))
                    .with_partition_index(end as i32),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
