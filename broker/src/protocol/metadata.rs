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

use crate::metadata::{codes, validate_topic_name, TopicInfo};
use crate::server::Broker;

const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_REQUEST: i16 = 42;

fn topic_entry(broker: &Broker, info: &TopicInfo) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let partitions = (0..info.partitions)
        .map(|i| {
            let leader_epoch = broker
                .replicas
                .get(&info.name, i)
                .map(|p| p.leader_epoch())
                .unwrap_or(-1);
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(node)
                .with_leader_epoch(leader_epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
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

pub fn metadata(broker: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let cfg = &broker.config;
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(cfg.node_id))
        .with_host(StrBytes::from_string(cfg.advertised_host.clone()))
        .with_port(cfg.advertised_port as i32)];
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create =
        (version < 4 || req.allow_auto_topic_creation) && cfg.auto_create_topics_enable;
    let topics = match requested {
        None => broker
            .topics
            .all()
            .iter()
            .map(|t| topic_entry(broker, t))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|t| {
                let name = t.name.map(|n| n.0.to_string());
                let info = match &name {
                    Some(n) => broker.topics.get(n),
                    None => broker.topics.get_by_id(t.topic_id),
                };
                match (info, name) {
                    (Some(info), _) => topic_entry(broker, &info),
                    (None, None) => error_entry(None, 100 /* UNKNOWN_TOPIC_ID */),
                    (None, Some(n)) => {
                        if let Err(e) = validate_topic_name(&n) {
                            return error_entry(Some(n), e.code);
                        }
                        if !allow_auto_create {
                            return error_entry(Some(n), codes::UNKNOWN_TOPIC_OR_PARTITION);
                        }
                        match broker.create_topic(&n, cfg.num_partitions, 1, Default::default()) {
                            Ok(info) => topic_entry(broker, &info),
                            // Lost a race with another creator: answer with what exists.
                            Err(e) if e.code == codes::TOPIC_ALREADY_EXISTS => {
                                match broker.topics.get(&n) {
                                    Some(info) => topic_entry(broker, &info),
                                    None => error_entry(Some(n), codes::UNKNOWN_TOPIC_OR_PARTITION),
                                }
                            }
                            Err(e) => {
                                tracing::warn!("auto-creating topic {n}: {}", e.message);
                                error_entry(Some(n), e.code)
                            }
                        }
                    }
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(
            broker.topics.cluster_id().to_string(),
        )))
        .with_controller_id(BrokerId(cfg.node_id))
        .with_topics(topics)
}

pub fn describe_cluster(
    broker: &Broker,
    req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let cfg = &broker.config;
    let resp = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(
            broker.topics.cluster_id().to_string(),
        ))
        .with_controller_id(BrokerId(cfg.node_id));
    if req.endpoint_type != 1 {
        // Only the broker endpoints exist (controller endpoints come with the Raft quorum).
        return resp
            .with_error_code(INVALID_REQUEST)
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints can be described",
            )));
    }
    resp.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(cfg.node_id))
        .with_host(StrBytes::from_string(cfg.advertised_host.clone()))
        .with_port(cfg.advertised_port as i32)])
}

pub fn find_coordinator(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let cfg = &broker.config;
    // Group coordinator: this node leads every __consumer_offsets partition. Transaction
    // coordinators (key_type 1) do not exist yet.
    let answer = |key: StrBytes| -> Coordinator {
        let c = Coordinator::default().with_key(key);
        if req.key_type != 0 {
            return c
                .with_error_code(COORDINATOR_NOT_AVAILABLE)
                .with_error_message(Some(StrBytes::from_static_str(
                    "transactions are not supported by Kairos yet",
                )))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
        }
        c.with_node_id(BrokerId(cfg.node_id))
            .with_host(StrBytes::from_string(cfg.advertised_host.clone()))
            .with_port(cfg.advertised_port as i32)
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
