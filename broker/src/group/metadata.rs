//! In-memory state of one classic group: Kafka's `GroupMetadata` and `MemberMetadata`.
//!
//! Everything here is plain data plus the rules that need no clock or log (protocol selection,
//! member bookkeeping). The rebalance state machine that drives it lives in `membership.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::records::{GroupMetadataValue, MemberRecord};
use super::subscription::subscribed_topics;

/// The protocol type of Kafka's consumer groups (the Java consumer, librdkafka).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's classic group states, with their names as DescribeGroups/ListGroups report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a held (or immediate) JoinGroup answer carries, independent of the request version.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    pub members: Vec<JoinGroupResponseMember>,
}

impl JoinResult {
    /// An error answer, as Kafka's `JoinGroupResult(memberId, error)`: generation -1, no leader.
    pub fn error(member_id: &str, error_code: i16) -> Self {
        JoinResult {
            error_code,
            generation_id: -1,
            member_id: member_id.to_owned(),
            ..Default::default()
        }
    }
}

/// What a held (or immediate) SyncGroup answer carries.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error_code: i16) -> Self {
        SyncResult {
            error_code,
            ..Default::default()
        }
    }
}

/// A committed offset as cached in memory (and written as an offset commit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Set only by OffsetCommit v2..v4 with an explicit retention time (old expiry semantics).
    pub expire_timestamp_ms: Option<i64>,
    /// Order of the append that stored it (0 = loaded at start-up); a slower earlier append
    /// never replaces a later commit in the cache.
    pub append_sequence: u64,
}

/// One member of a classic group.
#[derive(Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Set while the member's JoinGroup is held for the rebalance to complete.
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    /// Set while the member's SyncGroup is held for the leader's assignment.
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// Last JoinGroup, SyncGroup or Heartbeat; the session expires `session_timeout_ms` later.
    pub last_heartbeat: Instant,
    /// Joined during the current rebalance and has not got a join answer yet.
    pub is_new: bool,
}

impl Member {
    pub fn is_awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Same protocols with the same metadata in the same order (Kafka's `MemberMetadata.matches`).
    pub fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Answers a held JoinGroup, if any.
    pub fn complete_join(&mut self, result: JoinResult) {
        if let Some(tx) = self.join_waiter.take() {
            // The requester may be gone (connection closed); nothing to do then.
            let _ = tx.send(result);
        }
    }

    /// Answers a held SyncGroup, if any.
    pub fn complete_sync(&mut self, result: SyncResult) {
        if let Some(tx) = self.sync_waiter.take() {
            let _ = tx.send(result);
        }
    }
}

/// State of the initial rebalance delay of a new group (Kafka's `InitialDelayedJoin`).
#[derive(Debug, Clone, Copy)]
pub struct InitialDelay {
    /// What is left of the rebalance timeout to extend the delay by.
    pub remaining_ms: u64,
}

/// One classic group and its committed offsets.
#[derive(Debug)]
pub struct Group {
    pub group_id: String,
    /// `__consumer_offsets` partition holding this group's records.
    pub partition: i32,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader_id: Option<String>,
    /// Members in join order: the first is the next leader when the leader leaves.
    pub members: IndexMap<String, Member>,
    /// group.instance.id → member id of static members.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED → when they expire if not used.
    pub pending_members: HashMap<String, Instant>,
    /// Members that must still send SyncGroup for the current generation.
    pub pending_sync: HashSet<String>,
    /// When PreparingRebalance gives up waiting for members to rejoin.
    pub rebalance_deadline: Option<Instant>,
    pub initial_delay: Option<InitialDelay>,
    /// A member joined a new group (generation 0) during the initial delay.
    pub new_member_added: bool,
    /// When members still in `pending_sync` are removed.
    pub sync_deadline: Option<Instant>,
    /// Wall-clock ms of the last state change; offsets of an Empty group expire from it.
    pub current_state_timestamp_ms: Option<i64>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    pub fn new(group_id: String, partition: i32, now_ms: i64) -> Self {
        Group {
            group_id,
            partition,
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            rebalance_deadline: None,
            initial_delay: None,
            new_member_added: false,
            sync_deadline: None,
            current_state_timestamp_ms: Some(now_ms),
            offsets: BTreeMap::new(),
        }
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.current_state_timestamp_ms = Some(now_ms);
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if let Some(instance_id) = &member.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), member.member_id.clone());
        }
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member; the next member in join order becomes leader if it led.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.shift_remove(member_id)?;
        self.pending_sync.remove(member_id);
        if let Some(instance_id) = &member.group_instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance_id);
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        Some(member)
    }

    /// Kafka's `validateCurrentMember`: the instance id (if any) maps to `member_id`, and the
    /// member exists.
    pub fn validate_current_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Option<i16> {
        use super::error_codes::*;
        if let Some(instance_id) = group_instance_id {
            return match self.static_members.get(instance_id) {
                Some(current) if current != member_id => Some(FENCED_INSTANCE_ID),
                Some(_) if !self.members.contains_key(member_id) => Some(UNKNOWN_MEMBER_ID),
                Some(_) => None,
                None => Some(UNKNOWN_MEMBER_ID),
            };
        }
        if self.members.contains_key(member_id) {
            None
        } else {
            Some(UNKNOWN_MEMBER_ID)
        }
    }

    /// Protocols every member supports, in the first member's order of preference.
    fn candidate_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect()
    }

    /// Kafka's `supportsProtocols`: can a member with these protocols join this group?
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(name, _)| candidates.contains(name))
    }

    /// Kafka's `selectProtocol`: each member votes for its most preferred protocol among those
    /// all members support; the most votes wins (ties go to the first member's preference).
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for member in self.members.values() {
            if let Some(i) = member
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name))
            {
                votes[i] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|b| *v > votes[b]) {
                best = Some(i);
            }
        }
        best.map(|i| candidates[i].clone())
    }

    /// All known members have a held JoinGroup and no MEMBER_ID_REQUIRED member is outstanding.
    pub fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(Member::is_awaiting_join)
    }

    /// The rebalance timeout of the group: the largest of its members'.
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as u64)
            .max()
            .unwrap_or(0)
    }

    /// Members with their metadata for the selected protocol, as the leader's JoinGroup gets it.
    pub fn member_metadata(&self) -> Vec<JoinGroupResponseMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_group_instance_id(m.group_instance_id.clone().map(StrBytes::from_string))
                    .with_metadata(m.metadata(&protocol))
            })
            .collect()
    }

    /// Topics the members subscribe to; `None` if this is not a consumer group with a selected
    /// protocol or some member's metadata is not a consumer subscription.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            topics.extend(subscribed_topics(&member.metadata(protocol))?);
        }
        Some(topics)
    }

    /// Whether a member may be consuming `topic`. Conservative: when subscriptions cannot be
    /// read, every topic counts as subscribed.
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        match self.subscribed_topics() {
            Some(topics) => topics.contains(topic),
            None => !self.members.is_empty(),
        }
    }

    /// The group metadata record of the current generation.
    pub fn to_record(&self) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.current_state_timestamp_ms.unwrap_or(-1),
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Nothing left worth keeping: no members, no pending members, no offsets.
    pub fn is_removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 1000,
            session_timeout_ms: 1000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            last_heartbeat: Instant::now(),
            is_new: false,
        }
    }

    #[test]
    fn protocol_selection_takes_the_most_voted_common_protocol() {
        // Proves only protocols all members support are candidates and votes decide among them.
        let mut g = Group::new("g".into(), 0, 0);
        g.add_member(member("a", &["range", "roundrobin", "sticky"]));
        g.add_member(member("b", &["sticky", "roundrobin"]));
        g.add_member(member("c", &["sticky", "range", "roundrobin"]));
        assert_eq!(g.select_protocol().as_deref(), Some("sticky"));
        assert!(g.supports_protocols("consumer", &[("roundrobin".into(), Bytes::new())]));
        assert!(!g.supports_protocols("consumer", &[("other".into(), Bytes::new())]));
        assert!(!g.supports_protocols("connect", &[("sticky".into(), Bytes::new())]));
    }

    #[test]
    fn leader_passes_to_the_next_member_in_join_order() {
        // Proves removing the leader elects the earliest-joined remaining member.
        let mut g = Group::new("g".into(), 0, 0);
        for id in ["a", "b", "c"] {
            g.add_member(member(id, &["range"]));
        }
        assert!(g.is_leader("a"));
        g.remove_member("a");
        assert!(g.is_leader("b"));
        g.remove_member("c");
        g.remove_member("b");
        assert_eq!(g.leader_id, None);
    }
}
