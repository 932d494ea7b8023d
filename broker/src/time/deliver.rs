//! Appends the broker's own batches (forwarded delayed and retried records) to a partition
//! wherever its leader is: in place when this broker leads it, else with a Produce request to the
//! leader. Either way the call returns once the batch is committed (acks=all: the ISR holds it),
//! so a forward that is reported done survives the loss of any one replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::group::error_codes::UNKNOWN_SERVER_ERROR;
use crate::replication::client::Connection;
use crate::server::Broker;

/// Produce version used between brokers (flexible, Kafka 2.4+).
const PRODUCE_VERSION: i16 = 9;

/// How long a forward waits for its batch to be committed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The idempotent producer a forwarder stamps its batches with: one producer id (allocated
/// through the metadata quorum on first use) and the next sequence per target partition. After a
/// batch whose fate is unknown (a timeout), `reset` makes later batches use a new producer id,
/// so none of them can pass it; the unknown batch can still be sent again with its own stamp.
#[derive(Default)]
pub struct Stamper {
    producer: Option<(i64, i16)>,
    sequences: HashMap<(String, i32), i32>,
}

impl Stamper {
    /// The current producer (id, epoch), allocated on first use.
    pub async fn producer(&mut self, broker: &Broker) -> Result<(i64, i16), String> {
        // Kafka wraps a sequence from i32::MAX to 0; rather than ever get there, a producer near
        // the end of its sequences is replaced (the margin is more than any one batch).
        if self.sequences.values().any(|s| *s > i32::MAX - (1 << 20)) {
            self.reset();
        }
        if let Some(p) = self.producer {
            return Ok(p);
        }
        let id = broker
            .producer_ids
            .next(&broker.topics)
            .await
            .map_err(|e| format!("allocating a producer id: {}", e.message))?;
        self.producer = Some((id, 0));
        self.sequences.clear();
        Ok((id, 0))
    }

    /// Takes `count` sequences for `target`-`partition` (of the current producer); returns the
    /// first.
    pub fn take(&mut self, target: &str, partition: i32, count: usize) -> i32 {
        let next = self
            .sequences
            .entry((target.to_string(), partition))
            .or_insert(0);
        let base = *next;
        *next = next.wrapping_add(count as i32);
        base
    }

    pub fn reset(&mut self) {
        self.producer = None;
        self.sequences.clear();
    }
}

/// One forwarder's connections to other brokers (one per broker, opened on first use).
pub struct Deliverer {
    broker: Arc<Broker>,
    connections: HashMap<i32, Connection>,
}

impl Deliverer {
    pub fn new(broker: Arc<Broker>) -> Self {
        Deliverer {
            broker,
            connections: HashMap::new(),
        }
    }

    /// Appends `batch` to `topic`-`partition` and waits until it is committed. A batch stamped
    /// with an idempotent producer's sequence that the leader already holds counts as delivered
    /// (the leader answers a duplicate with the original offset).
    pub async fn deliver(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        if let Ok(p) = self.broker.leader_replica(topic, partition) {
            let r = p
                .append(batch)
                .map_err(|e| format!("appending to {topic}-{partition}: {}", e.message))?;
            return p
                .wait_replicated(r.last_offset, r.leader_epoch, deadline)
                .await
                .map_err(|code| {
                    format!("{topic}-{partition} did not commit the batch (error {code})")
                });
        }
        let (leader, addr) = self.broker.leader_addr(topic, partition)?;
        if !self.connections.contains_key(&leader) {
            let timeout = Duration::from_millis(self.broker.config.replica_socket_timeout_ms)
                .max(COMMIT_TIMEOUT + Duration::from_secs(5));
            let c = Connection::connect(
                &addr,
                format!("kairos-forwarder-{}", self.broker.node_id()),
                timeout,
            )
            .await
            .map_err(|e| format!("{topic}-{partition}: {e:#}"))?;
            self.connections.insert(leader, c);
        }
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(COMMIT_TIMEOUT.as_millis() as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let Some(conn) = self.connections.get_mut(&leader) else {
            return Err("connection vanished".into());
        };
        let resp = match conn.call(PRODUCE_VERSION, &req).await {
            Ok(r) => r,
            Err(e) => {
                // The connection's state is unknown after a failed call: open a new one next time.
                self.connections.remove(&leader);
                return Err(format!(
                    "producing to {topic}-{partition} on broker {leader}: {e:#}"
                ));
            }
        };
        let code = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .map(|p| p.error_code)
            .unwrap_or(UNKNOWN_SERVER_ERROR);
        if code == 0 {
            Ok(())
        } else {
            Err(format!(
                "broker {leader} answered produce to {topic}-{partition} with error {code}"
            ))
        }
    }
}
