//! OffsetCommit, OffsetFetch, OffsetDelete and offset retention (Kafka's
//! `GroupMetadataManager.storeOffsets`, `getOffsets`, `cleanupGroupMetadata`).
//!
//! Commits are appended to `__consumer_offsets` before the answer; the in-memory cache is
//! updated when the append succeeds, in append order (each commit carries a sequence number
//! taken under the lock, so a slower earlier append never overwrites a later commit).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes::*;
use super::membership::store_error;
use super::metadata::{CommittedOffset, Group, GroupState, CONSUMER_PROTOCOL_TYPE};
use super::records::{self, OffsetCommitValue};
use super::{GroupCoordinator, Now, PendingAppend};

/// A commit accepted for one partition, waiting for its append.
struct AcceptedCommit {
    topic: String,
    partition: i32,
    offset: CommittedOffset,
}

/// Per-request-topic, per-partition error codes; `None` = decided by the append's outcome.
type CommitErrors = Vec<(TopicName, Vec<(i32, Option<i16>)>)>;

/// An append started under the lock, with the commit sequence taken at the same time.
type StartedAppend = (BoxFuture<'static, Result<(), i16>>, u64);

/// One partition's answer in OffsetFetch: the committed offset, if any.
type FetchedTopics = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

impl GroupCoordinator {
    /// OffsetCommit (classic groups and simple/admin commits with generation -1).
    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        let now = self.clock.now();
        let group_id = req.group_id.0.to_string();
        let (errors, accepted, append) = self.commit_locked(&req, version, now);
        let append_error = match append {
            Some((fut, sequence)) => {
                let result = fut.await;
                if result.is_ok() {
                    self.cache_commits(&group_id, accepted, sequence);
                }
                result.err().map(store_error)
            }
            None => None,
        };
        let topics = errors
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(partition, error)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(partition)
                                    .with_error_code(error.unwrap_or(append_error.unwrap_or(NONE)))
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// Validates a commit and, under the lock, starts the append that makes the accepted
    /// partitions durable; returns the per-partition errors, the accepted commits and the
    /// append with its sequence number.
    fn commit_locked(
        &self,
        req: &OffsetCommitRequest,
        version: i16,
        now: Now,
    ) -> (CommitErrors, Vec<AcceptedCommit>, Option<StartedAppend>) {
        let group_id = req.group_id.0.as_str();
        let generation_id = req.generation_id_or_member_epoch;
        let member_id = req.member_id.as_str();
        let instance_id = req.group_instance_id.as_deref();
        // v2..v4 carry a retention time (-1 = broker default); v5+ use offsets.retention.minutes
        // counted from when the group became Empty.
        let expire_timestamp_ms = (version <= 4 && req.retention_time_ms >= 0)
            .then(|| now.wall_ms.saturating_add(req.retention_time_ms));

        let mut groups = self.groups.lock();
        // Checked under the groups lock, as in JoinGroup: a commit must not create a group for
        // a partition just resigned.
        let not_coordinator = self.coordinator_error(group_id);
        let group_error = match groups.get_mut(group_id) {
            _ if not_coordinator.is_some() => not_coordinator,
            None if generation_id < 0 => None,
            None => Some(ILLEGAL_GENERATION),
            Some(group) => {
                let error = validate_offset_commit(group, generation_id, member_id, instance_id);
                match (error, group.state) {
                    (Some(error), _) => Some(error),
                    (None, GroupState::CompletingRebalance) => Some(REBALANCE_IN_PROGRESS),
                    (None, _) => {
                        if let Some(member) = group.members.get_mut(member_id) {
                            member.last_heartbeat = now.instant;
                        }
                        None
                    }
                }
            }
        };

        let mut errors: CommitErrors = Vec::with_capacity(req.topics.len());
        let mut accepted = Vec::new();
        let mut records: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        for topic in &req.topics {
            let name = topic.name.0.as_str();
            let mut partition_errors = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                let error = if !(self.partition_exists)(name, p.partition_index) {
                    Some(UNKNOWN_TOPIC_OR_PARTITION)
                } else if let Some(error) = group_error {
                    Some(error)
                } else if metadata.len() > self.config.offset_metadata_max_bytes {
                    Some(OFFSET_METADATA_TOO_LARGE)
                } else {
                    let offset = CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: (p.committed_leader_epoch >= 0)
                            .then_some(p.committed_leader_epoch),
                        metadata: metadata.to_owned(),
                        commit_timestamp_ms: now.wall_ms,
                        expire_timestamp_ms,
                        append_sequence: 0,
                    };
                    match offset_record(group_id, name, p.partition_index, &offset) {
                        Ok(record) => {
                            records.push(record);
                            accepted.push(AcceptedCommit {
                                topic: name.to_owned(),
                                partition: p.partition_index,
                                offset,
                            });
                            None
                        }
                        Err(e) => {
                            tracing::warn!(group = group_id, error = %e, "cannot encode offset commit");
                            Some(INVALID_COMMIT_OFFSET_SIZE)
                        }
                    }
                };
                partition_errors.push((p.partition_index, error));
            }
            errors.push((topic.name.clone(), partition_errors));
        }
        if records.is_empty() {
            return (errors, accepted, None);
        }
        let partition = self.partition_for(group_id);
        // A commit outside group management creates a "simple" group, as Kafka does.
        groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id.to_owned(), partition, now.wall_ms));
        let sequence = self.commit_sequence.fetch_add(1, Ordering::Relaxed);
        let append = self.start_appends(vec![PendingAppend { partition, records }]);
        (errors, accepted, Some((append, sequence)))
    }

    /// Puts durable commits into the cache unless a later commit got there first.
    fn cache_commits(&self, group_id: &str, accepted: Vec<AcceptedCommit>, sequence: u64) {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return;
        };
        for mut commit in accepted {
            commit.offset.append_sequence = sequence;
            let key = (commit.topic, commit.partition);
            match group.offsets.get(&key) {
                Some(existing) if existing.append_sequence > sequence => {}
                _ => {
                    group.offsets.insert(key, commit.offset);
                }
            }
        }
    }

    /// OffsetFetch: v1..v7 one group (`topics == None` = all, v2+), v8+ a batch of groups.
    pub async fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        // No transactions exist, so `require_stable` never has unstable offsets to wait for.
        if version >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let topics = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                            .collect::<Vec<_>>()
                    });
                    let (error, fetched) = self.fetch_offsets(g.group_id.0.as_str(), topics);
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(error)
                        .with_topics(fetched.into_iter().map(fetch_topics_v8).collect())
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        let (error, fetched) = self.fetch_offsets(req.group_id.0.as_str(), topics);
        let topics = fetched
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(partition, offset)| {
                                let (o, epoch, metadata) = fetched_fields(offset);
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(partition)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(metadata))
                                    .with_error_code(NONE)
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut response = OffsetFetchResponse::default().with_topics(topics);
        if version >= 2 {
            response.error_code = error;
        }
        response
    }

    /// Committed offsets of the requested partitions (all of the group's if `topics` is None).
    fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> (i16, FetchedTopics) {
        if let Some(code) = self.coordinator_error(group_id) {
            return (code, Vec::new());
        }
        let groups = self.groups.lock();
        let group = groups.get(group_id);
        match topics {
            Some(topics) => {
                let fetched = topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let offsets = partitions
                            .into_iter()
                            .map(|p| {
                                let o = group
                                    .and_then(|g| g.offsets.get(&(topic.clone(), p)))
                                    .cloned();
                                (p, o)
                            })
                            .collect();
                        (topic, offsets)
                    })
                    .collect();
                (NONE, fetched)
            }
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                    BTreeMap::new();
                if let Some(group) = group {
                    for ((topic, partition), o) in &group.offsets {
                        by_topic
                            .entry(topic.clone())
                            .or_default()
                            .push((*partition, Some(o.clone())));
                    }
                }
                (NONE, by_topic.into_iter().collect())
            }
        }
    }

    /// OffsetDelete (v0): removes a group's offsets for partitions no member consumes.
    pub async fn offset_delete(
        &self,
        req: OffsetDeleteRequest,
        _version: i16,
    ) -> OffsetDeleteResponse {
        let now = self.clock.now();
        let (group_error, results, append) = self.offset_delete_locked(&req, now);
        if group_error != NONE {
            return OffsetDeleteResponse::default().with_error_code(group_error);
        }
        let append_error = match append {
            Some(append) => append.await.err().map(store_error),
            None => None,
        };
        let topics = results
            .into_iter()
            .map(|(name, partitions)| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(p, e)| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(e.unwrap_or(append_error.unwrap_or(NONE)))
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }

    fn offset_delete_locked(
        &self,
        req: &OffsetDeleteRequest,
        now: Now,
    ) -> (
        i16,
        CommitErrors,
        Option<BoxFuture<'static, Result<(), i16>>>,
    ) {
        let group_id = req.group_id.0.as_str();
        if group_id.is_empty() {
            return (INVALID_GROUP_ID, Vec::new(), None);
        }
        if let Some(code) = self.coordinator_error(group_id) {
            return (code, Vec::new(), None);
        }
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (GROUP_ID_NOT_FOUND, Vec::new(), None);
        };
        let consumer_group = group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE);
        match group.state {
            GroupState::Dead => return (GROUP_ID_NOT_FOUND, Vec::new(), None),
            GroupState::Empty => {}
            _ if consumer_group => {}
            _ => return (NON_EMPTY_GROUP, Vec::new(), None),
        }
        let mut results: CommitErrors = Vec::with_capacity(req.topics.len());
        let mut deleted = Vec::new();
        for topic in &req.topics {
            let name = topic.name.0.as_str();
            let subscribed = group.state != GroupState::Empty && group.is_subscribed_to_topic(name);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let error = if !(self.partition_exists)(name, p.partition_index) {
                        Some(UNKNOWN_TOPIC_OR_PARTITION)
                    } else if subscribed {
                        Some(GROUP_SUBSCRIBED_TO_TOPIC)
                    } else {
                        deleted.push((name.to_owned(), p.partition_index));
                        None
                    };
                    (p.partition_index, error)
                })
                .collect();
            results.push((topic.name.clone(), partitions));
        }
        let mut records = Vec::new();
        for key in &deleted {
            if group.offsets.remove(key).is_some() {
                if let Ok(k) = records::encode_offset_commit_key(group_id, &key.0, key.1) {
                    records.push((k, None));
                }
            }
        }
        let partition = group.partition;
        if group.state == GroupState::Empty
            && group.offsets.is_empty()
            && group.pending_members.is_empty()
        {
            // Kafka drops an Empty group with no offsets left (and its metadata record).
            group.transition(GroupState::Dead, now.wall_ms);
            if let Ok(k) = records::encode_group_metadata_key(group_id) {
                records.push((k, None));
            }
            groups.remove(group_id);
        }
        let append = (!records.is_empty())
            .then(|| self.start_appends(vec![PendingAppend { partition, records }]));
        (NONE, results, append)
    }

    /// Removes offsets past their retention (Kafka's `cleanupGroupMetadata` on its timer) and
    /// groups left Empty without offsets; returns the tombstones to append.
    pub(super) fn expire_offsets(&self, now: Now) -> Vec<PendingAppend> {
        let retention_ms = self.config.offsets_retention_ms();
        let mut by_partition: HashMap<i32, Vec<(Bytes, Option<Bytes>)>> = HashMap::new();
        let mut groups = self.groups.lock();
        let mut dead = Vec::new();
        for group in groups.values_mut() {
            let expired = expired_offsets(group, now.wall_ms, retention_ms);
            let tombstones = by_partition.entry(group.partition).or_default();
            for key in expired {
                group.offsets.remove(&key);
                if let Ok(k) = records::encode_offset_commit_key(&group.group_id, &key.0, key.1) {
                    tombstones.push((k, None));
                }
            }
            if group.is_removable() {
                group.transition(GroupState::Dead, now.wall_ms);
                if let Ok(k) = records::encode_group_metadata_key(&group.group_id) {
                    tombstones.push((k, None));
                }
                dead.push(group.group_id.clone());
            }
        }
        for group_id in dead {
            tracing::info!(group = %group_id, "removing expired group");
            groups.remove(&group_id);
        }
        by_partition
            .into_iter()
            .filter(|(_, records)| !records.is_empty())
            .map(|(partition, records)| PendingAppend { partition, records })
            .collect()
    }
}

/// Kafka's `validateOffsetCommit` for non-transactional commits.
fn validate_offset_commit(
    group: &Group,
    generation_id: i32,
    member_id: &str,
    instance_id: Option<&str>,
) -> Option<i16> {
    if group.state == GroupState::Dead {
        return Some(COORDINATOR_NOT_AVAILABLE);
    }
    if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
        return group
            .validate_current_member(member_id, instance_id)
            .or((generation_id != group.generation_id).then_some(ILLEGAL_GENERATION));
    }
    // generation -1 without member: only when no member could be committing.
    if group.state != GroupState::Empty {
        return Some(UNKNOWN_MEMBER_ID);
    }
    None
}

/// Offsets past retention under Kafka 2.1+ rules: an Empty group's offsets expire
/// `retention_ms` after it became Empty; a Stable consumer group's offsets of topics nobody
/// subscribes to expire `retention_ms` after their commit; a simple group's (no protocol type)
/// likewise; commits with an explicit expire timestamp (OffsetCommit v2..v4) expire then.
fn expired_offsets(group: &Group, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
    let subscribed = match (group.protocol_type.as_deref(), group.state) {
        (Some(_), GroupState::Empty) => None,
        (Some(CONSUMER_PROTOCOL_TYPE), GroupState::Stable) => match group.subscribed_topics() {
            Some(topics) => Some(topics),
            None => return Vec::new(),
        },
        (None, _) => None,
        _ => return Vec::new(),
    };
    let empty_since = match group.state {
        GroupState::Empty if group.protocol_type.is_some() => group.current_state_timestamp_ms,
        _ => None,
    };
    group
        .offsets
        .iter()
        .filter(|((topic, _), _)| subscribed.as_ref().is_none_or(|s| !s.contains(topic)))
        .filter(|(_, o)| match o.expire_timestamp_ms {
            Some(expire_ms) => now_ms >= expire_ms,
            // Saturating: the commit timestamp comes from disk.
            None => {
                now_ms.saturating_sub(empty_since.unwrap_or(o.commit_timestamp_ms)) >= retention_ms
            }
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// (key, value) of an offset commit record.
fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    offset: &CommittedOffset,
) -> Result<(Bytes, Option<Bytes>), records::RecordError> {
    let key = records::encode_offset_commit_key(group, topic, partition)?;
    let value = records::encode_offset_commit_value(&OffsetCommitValue {
        offset: offset.offset,
        leader_epoch: offset.leader_epoch,
        metadata: offset.metadata.clone(),
        commit_timestamp_ms: offset.commit_timestamp_ms,
        expire_timestamp_ms: offset.expire_timestamp_ms,
    })?;
    Ok((key, Some(value)))
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them; -1 / -1 / "" when none.
fn fetched_fields(offset: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match offset {
        Some(o) => (
            o.offset,
            o.leader_epoch.unwrap_or(-1),
            StrBytes::from_string(o.metadata),
        ),
        None => (-1, -1, StrBytes::from_static_str("")),
    }
}

fn fetch_topics_v8(
    (topic, partitions): (String, Vec<(i32, Option<CommittedOffset>)>),
) -> OffsetFetchResponseTopics {
    OffsetFetchResponseTopics::default()
        .with_name(TopicName(StrBytes::from_string(topic)))
        .with_partitions(
            partitions
                .into_iter()
                .map(|(partition, offset)| {
                    let (o, epoch, metadata) = fetched_fields(offset);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(partition)
                        .with_committed_offset(o)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(metadata))
                        .with_error_code(NONE)
                })
                .collect(),
        )
}
