//! The requests scenarios send, each recording what a client would observe of the answer.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{error_name as e, Ctx};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A batch of records with the given (key, value, timestamp), no producer id.
pub fn batch(records: &[(&str, &str, i64)]) -> Bytes {
    batch_with(records, -1, -1, -1, Compression::None)
}

/// A batch with a producer id, epoch and base sequence (-1s: not idempotent).
pub fn batch_with(
    records: &[(&str, &str, i64)],
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v, ts))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes: keep it constant.
            sequence: if producer_id >= 0 {
                base_sequence + i as i32
            } else {
                i as i32 - 1
            },
            timestamp: *ts,
            key: (!k.is_empty()).then(|| Bytes::from(k.to_string())),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// The records of a fetched record set, and why decoding stopped early if it did.
fn decode(records: Option<Bytes>) -> (Vec<Record>, Option<String>) {
    let mut out = Vec::new();
    let Some(mut bytes) = records else {
        return (out, None);
    };
    while !bytes.is_empty() {
        match RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => out.extend(set.records),
            Err(err) => return (out, Some(err.to_string())),
        }
    }
    (out, None)
}

impl Ctx {
    pub fn create_topic(&mut self, name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) {
        self.create_topic_as(name, partitions, rf, configs, false);
    }

    pub fn create_topic_as(
        &mut self,
        name: &str,
        partitions: i32,
        rf: i16,
        configs: &[(&str, &str)],
        validate_only: bool,
    ) {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(s(k))
                    .with_value(Some(s(v)))
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(tn(name))
                .with_num_partitions(partitions)
                .with_replication_factor(rf)
                .with_configs(configs)])
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only);
        if let Some(r) = self.call(5, &req) {
            for t in r.topics {
                self.note(format!(
                    "CreateTopics {}{}: {} partitions={} rf={}",
                    t.name.0,
                    if validate_only {
                        " (validate only)"
                    } else {
                        ""
                    },
                    e(t.error_code),
                    t.num_partitions,
                    t.replication_factor
                ));
            }
        }
    }

    pub fn delete_topic(&mut self, name: &str) {
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![tn(name)])
            .with_timeout_ms(10_000);
        if let Some(r) = self.call(5, &req) {
            for t in r.responses {
                let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                self.note(format!("DeleteTopics {name}: {}", e(t.error_code)));
            }
        }
    }

    pub fn create_partitions(&mut self, name: &str, count: i32, validate_only: bool) {
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(tn(name))
                    .with_count(count),
            ])
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only);
        if let Some(r) = self.call(3, &req) {
            for t in r.results {
                self.note(format!(
                    "CreatePartitions {} to {count}: {}",
                    t.name.0,
                    e(t.error_code)
                ));
            }
        }
    }

    /// Metadata for named topics: per topic its error, partition count and per partition its
    /// error, leader and replica/ISR counts.
    pub fn metadata(&mut self, topics: &[&str], allow_auto_create: bool) {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        metadata_request::MetadataRequestTopic::default().with_name(Some(tn(t)))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(allow_auto_create);
        if let Some(r) = self.call(12, &req) {
            self.note(format!("Metadata brokers={}", r.brokers.len()));
            for t in r.topics {
                let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                let parts: Vec<String> = t
                    .partitions
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:{} leader={} replicas={} isr={}",
                            p.partition_index,
                            e(p.error_code),
                            p.leader_id.0,
                            p.replica_nodes.len(),
                            p.isr_nodes.len()
                        )
                    })
                    .collect();
                self.note(format!(
                    "Metadata {name}: {} internal={} [{}]",
                    e(t.error_code),
                    t.is_internal,
                    parts.join(", ")
                ));
            }
        }
    }

    /// Produces one batch; observes the partition's error, base offset, log start offset and
    /// per-record errors (indexes).
    pub fn produce(&mut self, topic: &str, partition: i32, records: Bytes, acks: i16) {
        let version = 9;
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(tn(topic))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ])]);
        if acks == 0 {
            self.send_unanswered(version, &req);
            self.note(format!("Produce {topic}-{partition} acks=0: sent"));
            return;
        }
        // Leadership can lag the metadata a client saw (Kafka answers NOT_LEADER_OR_FOLLOWER
        // for a moment after a topic is created): retry as a producer does, bounded.
        let mut answer = self.call(version, &req);
        for _ in 0..50 {
            let retriable = answer.as_ref().is_some_and(|r| {
                r.responses
                    .iter()
                    .flat_map(|t| &t.partition_responses)
                    .any(|p| p.error_code == 6 || p.error_code == 5)
            });
            if !retriable {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            answer = self.call(version, &req);
        }
        if let Some(r) = answer {
            for t in r.responses {
                for p in t.partition_responses {
                    let errs: Vec<String> = p
                        .record_errors
                        .iter()
                        .map(|re| re.batch_index.to_string())
                        .collect();
                    self.note(format!(
                        "Produce {}-{}: {} base_offset={} log_start={} record_errors=[{}]",
                        t.name.0,
                        p.index,
                        e(p.error_code),
                        p.base_offset,
                        p.log_start_offset,
                        errs.join(",")
                    ));
                }
            }
        }
    }

    /// Fetches one partition: error, high watermark, log start, and (offset, key, value,
    /// timestamp) of each record returned at or after `offset`.
    pub fn fetch(&mut self, topic: &str, partition: i32, offset: i64, max_bytes: i32) {
        self.fetch_epoch(topic, partition, offset, max_bytes, -1)
    }

    pub fn fetch_epoch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        epoch: i32,
    ) {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(tn(topic))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(epoch)
                    .with_partition_max_bytes(max_bytes)])]);
        if let Some(r) = self.call(12, &req) {
            if r.error_code != 0 {
                self.note(format!("Fetch: {}", e(r.error_code)));
            }
            for t in r.responses {
                for p in t.partitions {
                    let (records, undecodable) = decode(p.records.clone());
                    let text = |b: Option<Bytes>| {
                        b.map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default()
                    };
                    let mut recs: Vec<String> = records
                        .into_iter()
                        .filter(|r| r.offset >= offset)
                        .map(|r| {
                            format!(
                                "{}:{}={}@{}",
                                r.offset,
                                text(r.key),
                                text(r.value),
                                r.timestamp
                            )
                        })
                        .collect();
                    recs.extend(undecodable.map(|err| format!("undecodable: {err}")));
                    self.note(format!(
                        "Fetch {}-{} @{offset}: {} hw={} log_start={} records=[{}]",
                        t.topic.0,
                        p.partition_index,
                        e(p.error_code),
                        p.high_watermark,
                        p.log_start_offset,
                        recs.join(" ")
                    ));
                }
            }
        }
    }

    /// One Fetch of several partitions from offset 0 with a response `max_bytes` (and a large
    /// per-partition limit): how many records each partition returned (KIP-74's fill order).
    pub fn fetch_partitions(&mut self, topic: &str, partitions: &[i32], max_bytes: i32) {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(tn(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            fetch_request::FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(0)
                                .with_current_leader_epoch(-1)
                                .with_partition_max_bytes(20_000_000)
                        })
                        .collect(),
                )]);
        if let Some(r) = self.call(12, &req) {
            let mut counts = Vec::new();
            for t in r.responses {
                for p in t.partitions {
                    let n = decode(p.records.clone()).0.len();
                    counts.push(format!("{}:{}={n}", p.partition_index, e(p.error_code)));
                }
            }
            self.note(format!(
                "Fetch {topic} max_bytes={max_bytes}: records per partition [{}]",
                counts.join(" ")
            ));
        }
    }

    /// ListOffsets for one timestamp spec (-1 latest, -2 earliest, -3 max timestamp, or a time).
    pub fn list_offsets(&mut self, topic: &str, partition: i32, timestamp: i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(tn(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp)
                        .with_current_leader_epoch(-1),
                ])]);
        if let Some(r) = self.call(7, &req) {
            for t in r.topics {
                for p in t.partitions {
                    self.note(format!(
                        "ListOffsets {}-{} ts={timestamp}: {} offset={} timestamp={}",
                        t.name.0,
                        p.partition_index,
                        e(p.error_code),
                        p.offset,
                        p.timestamp
                    ));
                }
            }
        }
    }

    pub fn delete_records(&mut self, topic: &str, partition: i32, offset: i64) {
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(tn(topic))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(offset),
                ])]);
        if let Some(r) = self.call(2, &req) {
            for t in r.topics {
                for p in t.partitions {
                    self.note(format!(
                        "DeleteRecords {}-{} before {offset}: {} low_watermark={}",
                        t.name.0,
                        p.partition_index,
                        e(p.error_code),
                        p.low_watermark
                    ));
                }
            }
        }
    }

    /// DescribeConfigs of a topic (resource type 2) or broker (4) for the given keys: value,
    /// source, read-only and sensitive flags, and the synonyms' sources.
    pub fn describe_configs(&mut self, resource_type: i8, name: &str, keys: &[&str]) {
        let req = DescribeConfigsRequest::default()
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(s(name))
                    .with_configuration_keys(Some(keys.iter().map(|k| s(k)).collect())),
            ])
            .with_include_synonyms(true);
        if let Some(r) = self.call(4, &req) {
            for res in r.results {
                self.note(format!("DescribeConfigs {name}: {}", e(res.error_code)));
                let mut configs = res.configs;
                configs.sort_by(|a, b| a.name.cmp(&b.name));
                for c in configs {
                    let syn: Vec<String> = c
                        .synonyms
                        .iter()
                        .map(|y| format!("{}:{}", y.source, y.name))
                        .collect();
                    self.note(format!(
                        "  {}={} source={} read_only={} sensitive={} type={} synonyms=[{}]",
                        c.name,
                        c.value
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "null".into()),
                        c.config_source,
                        c.read_only,
                        c.is_sensitive,
                        c.config_type,
                        syn.join(",")
                    ));
                }
            }
        }
    }

    /// IncrementalAlterConfigs on a topic: ops are (name, op 0 SET/1 DELETE/2 APPEND/3
    /// SUBTRACT, value).
    pub fn incremental_alter(
        &mut self,
        topic: &str,
        ops: &[(&str, i8, Option<&str>)],
        validate_only: bool,
    ) {
        let configs = ops
            .iter()
            .map(|(k, op, v)| {
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(*op)
                    .with_value(v.map(s))
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))
                    .with_configs(configs),
            ])
            .with_validate_only(validate_only);
        if let Some(r) = self.call(1, &req) {
            for res in r.responses {
                self.note(format!(
                    "IncrementalAlterConfigs {}: {}",
                    res.resource_name,
                    e(res.error_code)
                ));
            }
        }
    }

    /// AlterConfigs (the whole set) on a topic.
    pub fn alter_configs(&mut self, topic: &str, configs: &[(&str, &str)]) {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                alter_configs_request::AlterableConfig::default()
                    .with_name(s(k))
                    .with_value(Some(s(v)))
            })
            .collect();
        let req = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(topic))
                .with_configs(configs),
        ]);
        if let Some(r) = self.call(2, &req) {
            for res in r.responses {
                self.note(format!(
                    "AlterConfigs {}: {}",
                    res.resource_name,
                    e(res.error_code)
                ));
            }
        }
    }

    /// A group request, retried (bounded) while the coordinator is still loading or moving,
    /// as clients retry COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE and
    /// NOT_COORDINATOR; the last answer is what the scenario observes.
    pub fn call_group<R: kafka_protocol::protocol::Request>(
        &mut self,
        version: i16,
        req: &R,
        error: impl Fn(&R::Response) -> i16,
    ) -> Option<R::Response> {
        let mut answer = self.call(version, req);
        for _ in 0..50 {
            match &answer {
                Some(r) if matches!(error(r), 14..=16) => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    answer = self.call(version, req);
                }
                _ => break,
            }
        }
        answer
    }

    /// Waits (bounded, unobserved) until the group's coordinator answers FindCoordinator with
    /// no error, as a client does before its first group request.
    pub fn await_coordinator(&mut self, group: &str) {
        if group.is_empty() || !self.coordinators_ready.insert(group.to_string()) {
            return;
        }
        let req = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s(group)]);
        let ready = self.wait_for(|c| {
            c.call(4, &req)
                .is_some_and(|r| r.coordinators.iter().all(|c| c.error_code == 0))
        });
        if ready {
            // A coordinator that just loaded the offsets partition may still answer
            // NOT_COORDINATOR to group requests for a moment.
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn find_coordinator(&mut self, group: &str) {
        let req = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s(group)]);
        if let Some(r) = self.call(4, &req) {
            for c in r.coordinators {
                self.note(format!(
                    "FindCoordinator {}: {} node={}",
                    c.key,
                    e(c.error_code),
                    c.node_id.0
                ));
            }
        }
    }

    /// JoinGroup (v5) with one "range" protocol; returns (error, generation, member id). The
    /// observation hides the generated member id (it differs by nature) but says whether one
    /// came and whether this member leads.
    pub fn join_group(
        &mut self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: &str,
        session_timeout_ms: i32,
    ) -> (i16, i32, String) {
        self.await_coordinator(group);
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(session_timeout_ms)
            .with_rebalance_timeout_ms(5_000)
            .with_member_id(s(member_id))
            .with_group_instance_id(instance_id.map(s))
            .with_protocol_type(s(protocol_type))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(
                b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            ))]);
        match self.call_group(5, &req, |r: &JoinGroupResponse| r.error_code) {
            Some(r) => {
                let leads = !r.member_id.is_empty() && r.leader == r.member_id;
                self.note(format!(
                    "JoinGroup {group}: {} generation={} protocol={} member_id={} leader={} members={}",
                    e(r.error_code),
                    r.generation_id,
                    r.protocol_name.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "null".into()),
                    if r.member_id.is_empty() { "empty" } else { "given" },
                    leads,
                    r.members.len()
                ));
                (r.error_code, r.generation_id, r.member_id.to_string())
            }
            None => (-1, -1, String::new()),
        }
    }

    /// A member that joins (answering MEMBER_ID_REQUIRED) and syncs as the leader, assigning
    /// itself nothing. Returns (generation, member id).
    pub fn join_and_sync(&mut self, group: &str) -> (i32, String) {
        let (code, _, member) = self.join_group(group, "", None, "consumer", 10_000);
        let (_, generation, member) = if code == 79 {
            self.join_group(group, &member, None, "consumer", 10_000)
        } else {
            (code, -1, member)
        };
        self.sync_group(group, generation, &member, true);
        (generation, member)
    }

    pub fn sync_group(&mut self, group: &str, generation: i32, member_id: &str, leader: bool) {
        self.await_coordinator(group);
        let assignments = if leader {
            vec![sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s(member_id))
                .with_assignment(Bytes::from_static(
                    b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
                ))]
        } else {
            vec![]
        };
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member_id))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(assignments);
        if let Some(r) = self.call_group(5, &req, |r: &SyncGroupResponse| r.error_code) {
            self.note(format!(
                "SyncGroup {group} gen={generation}: {} assignment_bytes={}",
                e(r.error_code),
                r.assignment.len()
            ));
        }
    }

    pub fn heartbeat(&mut self, group: &str, generation: i32, member_id: &str) {
        self.await_coordinator(group);
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member_id));
        if let Some(r) = self.call_group(4, &req, |r: &HeartbeatResponse| r.error_code) {
            self.note(format!(
                "Heartbeat {group} gen={generation}: {}",
                e(r.error_code)
            ));
        }
    }

    pub fn leave_group(&mut self, group: &str, member_id: &str) {
        self.await_coordinator(group);
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s(member_id))
            ]);
        if let Some(r) = self.call_group(4, &req, |r: &LeaveGroupResponse| r.error_code) {
            let members: Vec<String> = r.members.iter().map(|m| e(m.error_code)).collect();
            self.note(format!(
                "LeaveGroup {group}: {} members=[{}]",
                e(r.error_code),
                members.join(",")
            ));
        }
    }

    pub fn offset_commit(
        &mut self,
        group: &str,
        (generation, member_id): (i32, &str),
        topic: &str,
        partition: i32,
        offset: i64,
        metadata: Option<&str>,
    ) {
        self.await_coordinator(group);
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member_id))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(metadata.map(s)),
                    ]),
            ]);
        if let Some(r) = self.call_group(8, &req, |r: &OffsetCommitResponse| {
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code)
                .find(|c| *c != 0)
                .unwrap_or(0)
        }) {
            for t in r.topics {
                for p in t.partitions {
                    self.note(format!(
                        "OffsetCommit {group} {}-{} = {offset}: {}",
                        t.name.0,
                        p.partition_index,
                        e(p.error_code)
                    ));
                }
            }
        }
    }

    /// OffsetFetch (v7) of the given partitions, or of all the group's (None).
    pub fn offset_fetch(&mut self, group: &str, topic: Option<(&str, &[i32])>) {
        self.await_coordinator(group);
        let topics = topic.map(|(t, ps)| {
            vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(tn(t))
                .with_partition_indexes(ps.to_vec())]
        });
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics);
        if let Some(r) = self.call_group(7, &req, |r: &OffsetFetchResponse| r.error_code) {
            let mut rows = Vec::new();
            for t in r.topics {
                for p in t.partitions {
                    rows.push(format!(
                        "{}-{}={}({}) {}",
                        t.name.0,
                        p.partition_index,
                        p.committed_offset,
                        p.metadata
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "null".into()),
                        e(p.error_code)
                    ));
                }
            }
            rows.sort();
            self.note(format!(
                "OffsetFetch {group}: {} [{}]",
                e(r.error_code),
                rows.join(", ")
            ));
        }
    }

    pub fn describe_group(&mut self, group: &str) {
        self.await_coordinator(group);
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
        if let Some(r) = self.call_group(5, &req, |r: &DescribeGroupsResponse| {
            r.groups.first().map_or(0, |g| g.error_code)
        }) {
            for g in r.groups {
                self.note(format!(
                    "DescribeGroups {}: {} state={} protocol_type={} protocol={} members={}",
                    g.group_id.0,
                    e(g.error_code),
                    g.group_state,
                    g.protocol_type,
                    g.protocol_data,
                    g.members.len()
                ));
            }
        }
    }

    pub fn delete_group(&mut self, group: &str) {
        self.await_coordinator(group);
        let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
        if let Some(r) = self.call_group(2, &req, |r: &DeleteGroupsResponse| {
            r.results.first().map_or(0, |g| g.error_code)
        }) {
            for g in r.results {
                self.note(format!(
                    "DeleteGroups {}: {}",
                    g.group_id.0,
                    e(g.error_code)
                ));
            }
        }
    }

    pub fn offset_delete(&mut self, group: &str, topic: &str, partition: i32) {
        self.await_coordinator(group);
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(partition),
                    ]),
            ]);
        if let Some(r) = self.call_group(0, &req, |r: &OffsetDeleteResponse| r.error_code) {
            let parts: Vec<String> = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| e(p.error_code)))
                .collect();
            self.note(format!(
                "OffsetDelete {group} {topic}-{partition}: {} [{}]",
                e(r.error_code),
                parts.join(",")
            ));
        }
    }

    /// InitProducerId without a transactional id; returns (producer id, epoch).
    pub fn init_producer_id(&mut self) -> (i64, i16) {
        let req = InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        match self.call(4, &req) {
            Some(r) => {
                self.note(format!(
                    "InitProducerId: {} epoch={} id_assigned={}",
                    e(r.error_code),
                    r.producer_epoch,
                    r.producer_id.0 >= 0
                ));
                (r.producer_id.0, r.producer_epoch)
            }
            None => (-1, -1),
        }
    }

    pub fn elect_preferred(&mut self, topic: &str, partition: i32) {
        let req = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![elect_leaders_request::TopicPartitions::default(
            )
            .with_topic(tn(topic))
            .with_partitions(vec![partition])]));
        if let Some(r) = self.call(2, &req) {
            let parts: Vec<String> = r
                .replica_election_results
                .iter()
                .flat_map(|t| {
                    t.partition_result.iter().map(move |p| {
                        format!("{}-{}:{}", t.topic.0, p.partition_id, e(p.error_code))
                    })
                })
                .collect();
            self.note(format!(
                "ElectLeaders: {} [{}]",
                e(r.error_code),
                parts.join(",")
            ));
        }
    }

    pub fn reassign(&mut self, topic: &str, partition: i32, replicas: Option<Vec<i32>>) {
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(partition)
                            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect())),
                    ]),
            ]);
        if let Some(r) = self.call(0, &req) {
            let parts: Vec<String> = r
                .responses
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        format!("{}-{}:{}", t.name.0, p.partition_index, e(p.error_code))
                    })
                })
                .collect();
            self.note(format!(
                "AlterPartitionReassignments: {} [{}]",
                e(r.error_code),
                parts.join(",")
            ));
        }
    }

    pub fn list_reassignments(&mut self) {
        let req = ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000);
        if let Some(r) = self.call(0, &req) {
            self.note(format!(
                "ListPartitionReassignments: {} topics={}",
                e(r.error_code),
                r.topics.len()
            ));
        }
    }

    /// Metadata of one topic (no auto-creation), unobserved: for the waits below.
    fn topic_metadata(&mut self, topic: &str) -> Option<metadata_response::MetadataResponseTopic> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(tn(topic)))]))
            .with_allow_auto_topic_creation(false);
        self.call(12, &req)?.topics.into_iter().next()
    }

    /// Waits until Metadata no longer knows `topic` (deletion is asynchronous on both brokers).
    pub fn await_gone(&mut self, topic: &str) {
        self.wait_for(|c| c.topic_metadata(topic).is_some_and(|t| t.error_code == 3));
    }

    /// Waits until Metadata shows `count` partitions of `topic`, each with a leader.
    pub fn await_partitions(&mut self, topic: &str, count: usize) {
        self.wait_for(|c| {
            c.topic_metadata(topic).is_some_and(|t| {
                t.partitions.len() == count && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
            })
        });
    }

    /// Waits until every partition of `topic` has a leader, so a scenario does not race the
    /// creation; noted when it never happens.
    pub fn await_leader(&mut self, topic: &str) {
        let led = self.wait_for(|c| {
            c.topic_metadata(topic).is_some_and(|t| {
                t.error_code == 0 && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
            })
        });
        if !led {
            self.note(format!("{topic}: no leader after 5 s"));
        }
    }

    /// Waits until no partition reassignment is in progress.
    pub fn await_no_reassignment(&mut self) {
        let req = ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000);
        self.wait_for(|c| c.call(0, &req).is_some_and(|r| r.topics.is_empty()));
    }

    /// Waits until the partition's log end offset reaches `offset`.
    pub fn await_end_offset(&mut self, topic: &str, partition: i32, offset: i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(tn(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(-1)
                        .with_current_leader_epoch(-1),
                ])]);
        self.wait_for(|c| {
            c.call(7, &req).is_some_and(|r| {
                r.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|p| p.offset >= offset)
            })
        });
    }
}
