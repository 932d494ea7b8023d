//! Metadata (with topic auto-creation), DescribeCluster and FindCoordinator.

use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::metadata::{
    codes, validate_topic_name, ClusterImage, TopicInfo, NO_LEADER, OFFSETS_TOPIC,
};
use crate::server::Broker;

/// A topic as the cluster image has it: leaders, replicas, ISR and leader epochs. A partition
/// without a leader answers LEADER_NOT_AVAILABLE (retriable); replicas on fenced brokers are
/// listed as offline.
pub(super) fn topic_entry(image: &ClusterImage, info: &TopicInfo) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let partitions = info
        .assignment
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                .collect();
            MetadataResponsePartition::default()
                .with_error_code(if p.leader == NO_LEADER {
                    codes::LEADER_NOT_AVAILABLE
                } else {
                    codes::NONE
                })
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(info.name.clone()))))
        .with_topic_id(info.id)
        .with_is_internal(info.internal)
        .with_partitions(partitions)
}

fn error_entry(name: Option<String>, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
}

/// Registered, unfenced brokers (Kafka lists only those).
fn unfenced_brokers(image: &ClusterImage) -> impl Iterator<Item = &crate::metadata::BrokerInfo> {
    image.brokers.values().filter(|b| !b.fenced)
}

/// How long Metadata still lists a partition leader after it was fenced without a controlled
/// shutdown (leading nothing by then).
///
/// A dead broker is fenced and its partitions get new leaders in one metadata change. A
/// librdkafka (2.10+) client that sees both in one Metadata response decommissions the broker
/// first, which hands its partitions to no broker, and they wait for the next one-second leader
/// scan: a second more to produce again. Listed a little longer, the broker leads nothing when
/// clients see the new leaders (as after a controlled shutdown), and is dropped by a later
/// refresh. DescribeCluster lists only unfenced brokers.
const FENCED_LISTING: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn metadata(broker: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let cfg = &broker.config;
    let image = broker.topics.image();
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || broker.topics.fenced_within(b.id, FENCED_LISTING))
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port as i32)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create =
        (version < 4 || req.allow_auto_topic_creation) && cfg.auto_create_topics_enable;
    let topics = match requested {
        None => image
            .topics
            .values()
            .map(|t| topic_entry(&image, t))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                let name = t.name.map(|n| n.0.to_string());
                let info = match &name {
                    Some(n) => image.topic(n).cloned(),
                    None => image.topic_by_id(t.topic_id).cloned(),
                };
                let entry = match (info, name) {
                    (Some(info), _) => topic_entry(&image, &info),
                    (None, None) => error_entry(None, 100 /* UNKNOWN_TOPIC_ID */),
                    (None, Some(n)) => auto_create(broker, n, allow_auto_create).await,
                };
                out.push(entry);
            }
            out
        }
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.topics.controller_for_clients()))
        .with_topics(topics)
}

async fn auto_create(broker: &Broker, n: String, allowed: bool) -> MetadataResponseTopic {
    if let Err(e) = validate_topic_name(&n) {
        return error_entry(Some(n), e.code);
    }
    if !allowed {
        return error_entry(Some(n), codes::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let cfg = &broker.config;
    let live = broker.topics.image().live_brokers().count().max(1);
    let rf = (cfg.default_replication_factor.max(1) as usize).min(live) as i16;
    let created = broker
        .create_topic(&n, cfg.num_partitions, rf, Default::default(), None)
        .await;
    let image = broker.topics.image();
    match created {
        Ok(info) => topic_entry(&image, &info),
        // Lost a race with another creator: answer with what exists.
        Err(e) if e.code == codes::TOPIC_ALREADY_EXISTS => match image.topic(&n) {
            Some(info) => topic_entry(&image, info),
            None => error_entry(Some(n), codes::UNKNOWN_TOPIC_OR_PARTITION),
        },
        Err(e) => {
            tracing::warn!("auto-creating topic {n}: {}", e.message);
            error_entry(Some(n), e.code)
        }
    }
}

pub fn describe_cluster(
    broker: &Broker,
    req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let image = broker.topics.image();
    let resp = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(image.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.topics.controller_for_clients()));
    if req.endpoint_type != 1 {
        // Only the broker endpoints exist (controller endpoints come with the Raft quorum).
        return resp
            .with_error_code(codes::INVALID_REQUEST)
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints can be described",
            )));
    }
    resp.with_brokers(
        unfenced_brokers(&image)
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(b.port as i32)
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect(),
    )
}

pub async fn find_coordinator(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // Group coordinator: the leader of the group's __consumer_offsets partition (created on first
    // need). Transaction coordinators (key_type 1) do not exist yet.
    let offsets = if req.key_type == 0 {
        broker.ensure_offsets_topic().await
    } else {
        Ok(())
    };
    let image = broker.topics.image();
    let answer = |key: StrBytes| -> Coordinator {
        let partition = broker.groups.partition_for(key.as_str());
        let c = Coordinator::default().with_key(key);
        if req.key_type != 0 {
            return c
                .with_error_code(codes::COORDINATOR_NOT_AVAILABLE)
                .with_error_message(Some(StrBytes::from_static_str(
                    "transactions are not supported by Kairos yet",
                )))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
        }
        if let Err(e) = &offsets {
            return c
                .with_error_code(codes::COORDINATOR_NOT_AVAILABLE)
                .with_error_message(Some(StrBytes::from_string(e.message.clone())))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
        }
        let leader = image
            .partition(OFFSETS_TOPIC, partition)
            .map(|p| p.leader)
            .and_then(|l| image.brokers.get(&l).filter(|b| !b.fenced));
        match leader {
            Some(b) => c
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port as i32),
            None => c
                .with_error_code(codes::COORDINATOR_NOT_AVAILABLE)
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    if version >= 4 {
        let coordinators = req.coordinator_keys.into_iter().map(answer).collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let c = answer(req.key);
        FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_error_message(c.error_message)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port)
    }
}
