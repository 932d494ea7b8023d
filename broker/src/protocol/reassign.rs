//! Replica placement: ElectLeaders (preferred or unclean election), AlterPartitionReassignments
//! and ListPartitionReassignments. Writes go through the metadata quorum from any broker;
//! the data a reassignment moves is throttled by `replication::quota`.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::metadata::{codes, Command, MetaError, Reply};
use crate::server::Broker;

const ELECTION_PREFERRED: i8 = 0;
const ELECTION_UNCLEAN: i8 = 1;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn brokers(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|i| BrokerId(*i)).collect()
}

pub async fn elect_leaders(
    broker: &Broker,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let unclean = match req.election_type {
        ELECTION_PREFERRED => false,
        ELECTION_UNCLEAN if version >= 1 => true,
        _ => {
            return ElectLeadersResponse::default().with_error_code(codes::INVALID_REQUEST);
        }
    };
    // Null = every partition; then partitions that need no election are left out, as Kafka.
    let all = req.topic_partitions.is_none();
    let partitions: Vec<(String, i32)> = req
        .topic_partitions
        .iter()
        .flatten()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
        .collect();
    if !all && partitions.is_empty() {
        return ElectLeadersResponse::default();
    }
    let results = match broker
        .topics
        .propose(Command::ElectLeaders {
            partitions: partitions.clone(),
            unclean,
        })
        .await
    {
        Ok(Reply::Partitions(results)) => {
            tokio::task::block_in_place(|| broker.sync_replicas());
            results
        }
        Ok(other) => {
            tracing::error!("ElectLeaders answered {other:?}");
            return ElectLeadersResponse::default()
                .with_error_code(crate::group::error_codes::UNKNOWN_SERVER_ERROR);
        }
        // No quorum, or no controller: the whole request failed with a retriable error.
        Err(e) if version >= 1 => return ElectLeadersResponse::default().with_error_code(e.code),
        Err(e) => partitions
            .into_iter()
            .map(|(t, p)| (t, p, e.code, e.message.clone()))
            .collect(),
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, code, message) in results {
        if all && code == codes::ELECTION_NOT_NEEDED {
            continue;
        }
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message((code != codes::NONE).then(|| s(message))),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, results)| {
                ReplicaElectionResult::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partition_result(results)
            })
            .collect(),
    )
}

/// Checks one target replica set the way Kafka's controller does before proposing it.
fn check_target(
    broker: &Broker,
    topic: &str,
    partition: i32,
    target: Option<&[BrokerId]>,
    allow_rf_change: bool,
) -> Result<Option<Vec<i32>>, MetaError> {
    let image = broker.topics.image();
    let Some(current) = image.partition(topic, partition) else {
        return Err(MetaError::new(
            codes::UNKNOWN_TOPIC_OR_PARTITION,
            format!("{topic}-{partition} does not exist"),
        ));
    };
    let Some(target) = target else {
        return Ok(None);
    };
    let target: Vec<i32> = target.iter().map(|b| b.0).collect();
    if target.is_empty() {
        return Err(MetaError::new(
            codes::INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes an empty replica list.",
        ));
    }
    let original = current.replicas.len().saturating_sub(current.adding.len());
    if !allow_rf_change && target.len() != original {
        return Err(MetaError::new(
            codes::INVALID_REPLICATION_FACTOR,
            format!(
                "The replication factor is changed from {original} to {} but allowReplicationFactorChange is false",
                target.len()
            ),
        ));
    }
    Ok(Some(target))
}

pub async fn alter_partition_reassignments(
    broker: &Broker,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(req.topics.len());
    let mut changed = false;
    for t in req.topics {
        let topic = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let outcome = match check_target(
                broker,
                &topic,
                p.partition_index,
                p.replicas.as_deref(),
                allow_rf_change,
            ) {
                Ok(replicas) => broker
                    .topics
                    .propose(Command::Reassign {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        replicas,
                    })
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            changed |= outcome.is_ok();
            let (code, message) = match outcome {
                Ok(()) => (codes::NONE, None),
                Err(e) => (e.code, Some(s(e.message))),
            };
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    if changed {
        tokio::task::block_in_place(|| broker.sync_replicas());
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(responses)
}

pub fn list_partition_reassignments(
    broker: &Broker,
    req: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    let image = broker.topics.image();
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let mut topics = Vec::new();
    for t in image.topics.values() {
        let asked = match &wanted {
            None => None,
            Some(w) => match w.get(&t.name) {
                Some(ps) => Some(ps),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = t
            .assignment
            .iter()
            .enumerate()
            .filter(|(i, p)| p.is_reassigning() && asked.is_none_or(|a| a.contains(&(*i as i32))))
            .map(|(i, p)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(i as i32)
                    .with_replicas(brokers(&p.replicas))
                    .with_adding_replicas(brokers(&p.adding))
                    .with_removing_replicas(brokers(&p.removing))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(s(t.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
