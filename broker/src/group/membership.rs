//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the rebalance state machine of Kafka's
//! classic protocol (`GroupCoordinator.scala` before KIP-848), including static membership
//! (KIP-345), MEMBER_ID_REQUIRED (KIP-394) and the initial rebalance delay.
//!
//! ```text
//!            join (new group)                 all joined / timeout
//!   Empty ───────────────────▶ Preparing ───────────────────────────▶ Completing
//!     ▲                        Rebalance ◀────── join/leave/expiry ─── Rebalance
//!     │  all members gone          ▲                                      │ leader's
//!     └────────────────────────────┤                                      ▼ SyncGroup
//!                                  └───────── join/leave/expiry ──────  Stable
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::error_codes::*;
use super::metadata::{Group, GroupState, InitialDelay, JoinResult, Member, SyncResult};
use super::records::GroupMetadataValue;
use super::{
    group_metadata_append, GroupCoordinator, Now, PendingAppend, NEW_MEMBER_JOIN_TIMEOUT_MS,
};
use futures::future::BoxFuture;

/// The parts of a JoinGroup request the state machine uses.
struct JoinParams {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member must first ask for its id (MEMBER_ID_REQUIRED).
    require_known_member_id: bool,
}

/// How a JoinGroup is answered.
enum JoinOutcome {
    Ready(JoinResult),
    Held(oneshot::Receiver<JoinResult>),
    /// Answer once the group metadata is durable (static member replaced in a Stable group).
    AfterAppend(BoxFuture<'static, Result<(), i16>>, JoinResult),
}

/// How a SyncGroup is answered.
enum SyncOutcome {
    Ready(SyncResult),
    Held(oneshot::Receiver<SyncResult>),
    /// The leader's sync: persist the group with these assignments, then distribute them.
    LeaderAppend {
        append: BoxFuture<'static, Result<(), i16>>,
        assignments: HashMap<String, Bytes>,
        generation_id: i32,
        held: oneshot::Receiver<SyncResult>,
    },
}

/// Kafka's mapping of a failed group-metadata append to the error the client sees.
pub(super) fn store_error(code: i16) -> i16 {
    match code {
        // UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT
        3 | 19 | 20 | 7 => COORDINATOR_NOT_AVAILABLE,
        // NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR → NOT_COORDINATOR
        6 | 56 => 16,
        // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_FETCH_SIZE
        10 | 18 | 4 => UNKNOWN_SERVER_ERROR,
        other => other,
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn join_response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let protocol_name = match (version >= 7, result.protocol_name) {
        // Before v7 the protocol name is not nullable.
        (false, name) => Some(str_bytes(name.as_deref().unwrap_or(""))),
        (true, Some(name)) if !name.is_empty() => Some(str_bytes(&name)),
        (true, _) => None,
    };
    JoinGroupResponse::default()
        .with_error_code(result.error_code)
        .with_generation_id(result.generation_id)
        .with_protocol_type(if version >= 7 {
            result.protocol_type.as_deref().map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&result.leader))
        .with_skip_assignment(version >= 9 && result.skip_assignment)
        .with_member_id(str_bytes(&result.member_id))
        .with_members(result.members)
}

fn sync_response(result: SyncResult, version: i16) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default()
        .with_error_code(result.error_code)
        .with_assignment(result.assignment);
    if version >= 5 {
        response.protocol_type = result.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = result.protocol_name.as_deref().map(str_bytes);
    }
    response
}

fn heartbeat_response(error_code: i16) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(error_code)
}

impl Group {
    /// Rebuilds a group from its last metadata record: Empty without members, else Stable with
    /// the stored members, whose sessions start now (they must heartbeat or rejoin).
    pub(super) fn from_record(
        group_id: String,
        partition: i32,
        record: GroupMetadataValue,
        now: Now,
    ) -> Group {
        let mut group = Group::new(group_id, partition, now.wall_ms);
        group.protocol_type = Some(record.protocol_type).filter(|t| !t.is_empty());
        group.generation_id = record.generation_id;
        group.protocol_name = record.protocol;
        group.current_state_timestamp_ms =
            Some(record.current_state_timestamp_ms).filter(|t| *t >= 0);
        let protocol = group.protocol_name.clone().unwrap_or_default();
        for m in record.members {
            group.add_member(Member {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                join_waiter: None,
                sync_waiter: None,
                last_heartbeat: now.instant,
                is_new: false,
            });
        }
        if let Some(leader) = record.leader {
            if group.members.contains_key(&leader) {
                group.leader_id = Some(leader);
            }
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group
    }
}

impl GroupCoordinator {
    /// JoinGroup. `client_id` and `client_host` come from the request header and connection.
    pub async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let now = self.clock.now();
        let outcome = self.join_locked(&req, version, client_id, client_host, now);
        let result = match outcome {
            JoinOutcome::Ready(result) => result,
            JoinOutcome::Held(rx) => rx
                .await
                .unwrap_or_else(|_| JoinResult::error("", UNKNOWN_MEMBER_ID)),
            JoinOutcome::AfterAppend(append, result) => match append.await {
                Ok(()) => result,
                Err(code) => JoinResult::error(&result.member_id, store_error(code)),
            },
        };
        join_response(result, version)
    }

    fn join_locked(
        &self,
        req: &JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
        now: Now,
    ) -> JoinOutcome {
        let group_id = req.group_id.0.to_string();
        let params = JoinParams {
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: client_id.to_owned(),
            client_host: client_host.to_owned(),
            session_timeout_ms: req.session_timeout_ms,
            // v0 has no rebalance timeout: the session timeout serves as one.
            rebalance_timeout_ms: if version == 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
        };
        if group_id.is_empty() {
            return JoinOutcome::Ready(JoinResult::error(&params.member_id, INVALID_GROUP_ID));
        }
        let is_unknown_member = params.member_id.is_empty();
        let partition = self.partition_for(&group_id);
        let mut groups = self.groups.lock();
        // Checked under the groups lock: a resignation (unload) in between cannot leave a group
        // created here for a partition this broker no longer coordinates.
        if let Some(code) = self.coordinator_error(&group_id) {
            return JoinOutcome::Ready(JoinResult::error(&params.member_id, code));
        }
        if params.session_timeout_ms < self.config.group_min_session_timeout_ms
            || params.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return JoinOutcome::Ready(JoinResult::error(
                &params.member_id,
                INVALID_SESSION_TIMEOUT,
            ));
        }
        let created = !groups.contains_key(&group_id);
        if created && !is_unknown_member {
            return JoinOutcome::Ready(JoinResult::error(&params.member_id, UNKNOWN_MEMBER_ID));
        }
        let group = groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(group_id.clone(), partition, now.wall_ms));
        let mut appends = Vec::new();
        let outcome = if is_unknown_member {
            self.join_unknown_member(group, params, now, &mut appends)
        } else {
            self.join_current_member(group, params, now, &mut appends)
        };
        self.advance_rebalance(group, now, &mut appends);
        if created && group.is_removable() {
            groups.remove(&group_id);
        }
        self.spawn_appends(appends);
        outcome
    }

    /// Kafka's `doUnknownJoinGroup`: a join without member id.
    fn join_unknown_member(
        &self,
        group: &mut Group,
        params: JoinParams,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) -> JoinOutcome {
        if group.state == GroupState::Dead {
            return JoinOutcome::Ready(JoinResult::error("", COORDINATOR_NOT_AVAILABLE));
        }
        if !group.supports_protocols(&params.protocol_type, &params.protocols) {
            return JoinOutcome::Ready(JoinResult::error("", INCONSISTENT_GROUP_PROTOCOL));
        }
        let prefix = params
            .group_instance_id
            .as_deref()
            .unwrap_or(&params.client_id);
        let new_member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance_id) = params.group_instance_id.clone() {
            if let Some(old_member_id) = group.static_members.get(&instance_id).cloned() {
                return self.replace_static_member(
                    group,
                    &old_member_id,
                    new_member_id,
                    params,
                    now,
                    appends,
                );
            }
            // A static member never needs MEMBER_ID_REQUIRED: its instance id identifies it.
            let held = self.add_member_and_rebalance(group, new_member_id, params, now, appends);
            return JoinOutcome::Held(held);
        }
        if params.require_known_member_id {
            // Remembered until it rejoins with this id or its session timeout passes.
            let deadline =
                now.instant + Duration::from_millis(params.session_timeout_ms.max(0) as u64);
            group
                .pending_members
                .insert(new_member_id.clone(), deadline);
            return JoinOutcome::Ready(JoinResult::error(&new_member_id, MEMBER_ID_REQUIRED));
        }
        let held = self.add_member_and_rebalance(group, new_member_id, params, now, appends);
        JoinOutcome::Held(held)
    }

    /// Kafka's `doCurrentMemberJoinGroup`: a join with a member id.
    fn join_current_member(
        &self,
        group: &mut Group,
        params: JoinParams,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) -> JoinOutcome {
        let member_id = params.member_id.clone();
        if group.state == GroupState::Dead {
            return JoinOutcome::Ready(JoinResult::error(&member_id, COORDINATOR_NOT_AVAILABLE));
        }
        if !group.supports_protocols(&params.protocol_type, &params.protocols) {
            return JoinOutcome::Ready(JoinResult::error(&member_id, INCONSISTENT_GROUP_PROTOCOL));
        }
        if group.pending_members.remove(&member_id).is_some() {
            let held = self.add_member_and_rebalance(group, member_id, params, now, appends);
            return JoinOutcome::Held(held);
        }
        if let Some(error) =
            group.validate_current_member(&member_id, params.group_instance_id.as_deref())
        {
            return JoinOutcome::Ready(JoinResult::error(&member_id, error));
        }
        let is_leader = group.is_leader(&member_id);
        let Some(member) = group.members.get_mut(&member_id) else {
            return JoinOutcome::Ready(JoinResult::error(&member_id, UNKNOWN_MEMBER_ID));
        };
        member.last_heartbeat = now.instant;
        let unchanged = member.matches(&params.protocols);
        match group.state {
            GroupState::PreparingRebalance => {
                JoinOutcome::Held(self.update_member_and_rebalance(group, params, now, appends))
            }
            // The member lost its join answer: send it again.
            GroupState::CompletingRebalance if unchanged => {
                JoinOutcome::Ready(current_generation_result(group, &member_id, is_leader))
            }
            // A follower rejoining unchanged keeps its generation; the leader rejoining forces
            // a rebalance (it may have seen a metadata change).
            GroupState::Stable if unchanged && !is_leader => {
                JoinOutcome::Ready(current_generation_result(group, &member_id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                JoinOutcome::Held(self.update_member_and_rebalance(group, params, now, appends))
            }
            GroupState::Empty | GroupState::Dead => {
                JoinOutcome::Ready(JoinResult::error(&member_id, UNKNOWN_MEMBER_ID))
            }
        }
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        member_id: String,
        params: JoinParams,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if group.state == GroupState::PreparingRebalance && group.generation_id == 0 {
            group.new_member_added = true;
        }
        group.add_member(Member {
            member_id,
            group_instance_id: params.group_instance_id,
            client_id: params.client_id,
            client_host: params.client_host,
            rebalance_timeout_ms: params.rebalance_timeout_ms,
            session_timeout_ms: params.session_timeout_ms,
            protocol_type: params.protocol_type,
            protocols: params.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            last_heartbeat: now.instant,
            is_new: true,
        });
        self.maybe_prepare_rebalance(group, now, appends);
        rx
    }

    fn update_member_and_rebalance(
        &self,
        group: &mut Group,
        params: JoinParams,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(member) = group.members.get_mut(&params.member_id) {
            member.protocols = params.protocols;
            member.rebalance_timeout_ms = params.rebalance_timeout_ms;
            member.session_timeout_ms = params.session_timeout_ms;
            // A previous held join of this member (duplicate request) is dropped; its task
            // answers UNKNOWN_MEMBER_ID.
            member.join_waiter = Some(tx);
        }
        self.maybe_prepare_rebalance(group, now, appends);
        rx
    }

    /// KIP-345: a known group.instance.id joins without member id. The old member id is fenced
    /// and replaced; a Stable group whose selected protocol does not change keeps its
    /// generation and assignments (no rebalance).
    fn replace_static_member(
        &self,
        group: &mut Group,
        old_member_id: &str,
        new_member_id: String,
        params: JoinParams,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) -> JoinOutcome {
        let Some(index) = group.members.get_index_of(old_member_id) else {
            return JoinOutcome::Ready(JoinResult::error("", UNKNOWN_MEMBER_ID));
        };
        let Some(mut member) = group.members.shift_remove(old_member_id) else {
            return JoinOutcome::Ready(JoinResult::error("", UNKNOWN_MEMBER_ID));
        };
        // Whoever still waits with the old id is a duplicate instance: fence it.
        member.complete_join(JoinResult::error(old_member_id, FENCED_INSTANCE_ID));
        member.complete_sync(SyncResult::error(FENCED_INSTANCE_ID));
        member.member_id = new_member_id.clone();
        member.last_heartbeat = now.instant;
        member.protocols = params.protocols;
        member.rebalance_timeout_ms = params.rebalance_timeout_ms;
        member.session_timeout_ms = params.session_timeout_ms;
        member.client_id = params.client_id;
        member.client_host = params.client_host;
        let (tx, rx) = oneshot::channel();
        member.join_waiter = Some(tx);
        group.members.insert(new_member_id.clone(), member);
        let last = group.members.len() - 1;
        group.members.move_index(last, index);
        if group.is_leader(old_member_id) {
            group.leader_id = Some(new_member_id.clone());
        }
        if group.pending_sync.remove(old_member_id) {
            group.pending_sync.insert(new_member_id.clone());
        }
        if let Some(instance_id) = params.group_instance_id {
            group
                .static_members
                .insert(instance_id, new_member_id.clone());
        }
        match group.state {
            GroupState::Stable if group.select_protocol() == group.protocol_name => {
                // Answer directly once the new member id is durable (no held join).
                if let Some(member) = group.members.get_mut(&new_member_id) {
                    member.join_waiter = None;
                }
                let is_leader = group.is_leader(&new_member_id);
                let mut result = current_generation_result(group, &new_member_id, is_leader);
                // KIP-814: a rejoining static leader gets the members but must not reassign.
                result.skip_assignment = is_leader;
                match group_metadata_append(group) {
                    Ok(append) => {
                        JoinOutcome::AfterAppend(self.start_appends(vec![append]), result)
                    }
                    Err(code) => JoinOutcome::Ready(JoinResult::error(&new_member_id, code)),
                }
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(group, now, appends);
                JoinOutcome::Held(rx)
            }
            GroupState::PreparingRebalance => JoinOutcome::Held(rx),
            // A static member exists, so the group cannot be Empty or Dead.
            GroupState::Empty | GroupState::Dead => {
                debug_assert!(false, "static member in an {:?} group", group.state);
                JoinOutcome::Ready(JoinResult::error("", UNKNOWN_SERVER_ERROR))
            }
        }
    }

    fn maybe_prepare_rebalance(
        &self,
        group: &mut Group,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) {
        if matches!(
            group.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(group, now, appends);
        }
    }

    fn prepare_rebalance(&self, group: &mut Group, now: Now, _appends: &mut Vec<PendingAppend>) {
        if group.state == GroupState::CompletingRebalance {
            reset_and_propagate_assignment_error(group, REBALANCE_IN_PROGRESS);
        }
        group.pending_sync.clear();
        group.sync_deadline = None;
        let rebalance_timeout_ms = group.rebalance_timeout_ms();
        if group.state == GroupState::Empty {
            // Kafka's InitialDelayedJoin: give other members of a new group time to arrive.
            let delay_ms = self.config.group_initial_rebalance_delay_ms;
            group.initial_delay = Some(InitialDelay {
                remaining_ms: rebalance_timeout_ms.saturating_sub(delay_ms),
            });
            group.new_member_added = false;
            group.rebalance_deadline = Some(now.instant + Duration::from_millis(delay_ms));
        } else {
            group.initial_delay = None;
            group.rebalance_deadline =
                Some(now.instant + Duration::from_millis(rebalance_timeout_ms));
        }
        group.transition(GroupState::PreparingRebalance, now.wall_ms);
        tracing::debug!(group = %group.group_id, generation = group.generation_id, "preparing rebalance");
        self.wake.notify_one();
    }

    /// Completes the join phase when it can: every member rejoined (outside the initial delay),
    /// or the deadline passed. The initial delay extends itself while new members arrive.
    fn advance_rebalance(&self, group: &mut Group, now: Now, appends: &mut Vec<PendingAppend>) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let expired = group.rebalance_deadline.is_some_and(|d| now.instant >= d);
        if let Some(initial) = group.initial_delay {
            if !expired {
                return;
            }
            if group.new_member_added && initial.remaining_ms > 0 {
                let delay_ms = self
                    .config
                    .group_initial_rebalance_delay_ms
                    .min(initial.remaining_ms);
                group.new_member_added = false;
                group.initial_delay = Some(InitialDelay {
                    remaining_ms: initial.remaining_ms - delay_ms,
                });
                group.rebalance_deadline = Some(now.instant + Duration::from_millis(delay_ms));
                return;
            }
        } else if !expired && !group.has_all_members_joined() {
            return;
        }
        self.complete_join(group, now, appends);
    }

    /// Kafka's `onCompleteJoin`: drop dynamic members that did not rejoin, start the next
    /// generation and answer every held JoinGroup (the leader gets all members' metadata).
    fn complete_join(&self, group: &mut Group, now: Now, appends: &mut Vec<PendingAppend>) {
        let not_rejoined: Vec<String> = group
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in not_rejoined {
            if let Some(mut member) = group.remove_member(&member_id) {
                member.complete_sync(SyncResult::error(UNKNOWN_MEMBER_ID));
            }
        }
        group.initial_delay = None;
        group.new_member_added = false;
        let rebalance_timeout = Duration::from_millis(group.rebalance_timeout_ms());
        if !group.members.is_empty() && !elect_joined_leader(group) {
            // Only silent static members are left: wait for their sessions to expire.
            group.rebalance_deadline = Some(now.instant + rebalance_timeout);
            return;
        }
        group.rebalance_deadline = None;
        group.generation_id += 1;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.transition(GroupState::Empty, now.wall_ms);
            if let Ok(append) = group_metadata_append(group) {
                appends.push(append);
            }
            tracing::debug!(group = %group.group_id, generation = group.generation_id, "group is empty");
            return;
        }
        group.protocol_name = group.select_protocol();
        group.transition(GroupState::CompletingRebalance, now.wall_ms);
        let leader = group.leader_id.clone().unwrap_or_default();
        let all_metadata = group.member_metadata();
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let generation_id = group.generation_id;
        for member in group.members.values_mut() {
            member.is_new = false;
            member.last_heartbeat = now.instant;
            let is_leader = member.member_id == leader;
            member.complete_join(JoinResult {
                error_code: NONE,
                generation_id,
                protocol_type: protocol_type.clone(),
                protocol_name: protocol_name.clone(),
                leader: leader.clone(),
                skip_assignment: false,
                member_id: member.member_id.clone(),
                members: if is_leader {
                    all_metadata.clone()
                } else {
                    Vec::new()
                },
            });
        }
        group.pending_sync = group.members.keys().cloned().collect();
        group.sync_deadline = Some(now.instant + rebalance_timeout);
        tracing::debug!(group = %group.group_id, generation_id, members = group.members.len(), "join phase complete");
    }

    /// Removes a member (leave, session expiry) and moves the group on as Kafka's
    /// `removeMemberAndUpdateGroup` does.
    fn remove_member_and_update_group(
        &self,
        group: &mut Group,
        member_id: &str,
        now: Now,
        appends: &mut Vec<PendingAppend>,
    ) {
        if let Some(mut member) = group.remove_member(member_id) {
            member.complete_join(JoinResult::error("", UNKNOWN_MEMBER_ID));
            member.complete_sync(SyncResult::error(UNKNOWN_MEMBER_ID));
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(group, now, appends);
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
        self.advance_rebalance(group, now, appends);
    }

    /// SyncGroup.
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let now = self.clock.now();
        let group_id = req.group_id.0.to_string();
        let result = match self.sync_locked(&req, now) {
            SyncOutcome::Ready(result) => result,
            SyncOutcome::Held(rx) => rx
                .await
                .unwrap_or_else(|_| SyncResult::error(UNKNOWN_MEMBER_ID)),
            SyncOutcome::LeaderAppend {
                append,
                assignments,
                generation_id,
                held,
            } => {
                let stored = append.await;
                self.finish_leader_sync(&group_id, generation_id, assignments, stored);
                held.await
                    .unwrap_or_else(|_| SyncResult::error(UNKNOWN_MEMBER_ID))
            }
        };
        sync_response(result, version)
    }

    fn sync_locked(&self, req: &SyncGroupRequest, now: Now) -> SyncOutcome {
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        if group_id.is_empty() {
            return SyncOutcome::Ready(SyncResult::error(INVALID_GROUP_ID));
        }
        if let Some(code) = self.coordinator_error(group_id) {
            return SyncOutcome::Ready(SyncResult::error(code));
        }
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return SyncOutcome::Ready(SyncResult::error(UNKNOWN_MEMBER_ID));
        };
        let instance_id = req.group_instance_id.as_deref();
        let error = if group.state == GroupState::Dead {
            Some(COORDINATOR_NOT_AVAILABLE)
        } else if let Some(error) = group.validate_current_member(member_id, instance_id) {
            Some(error)
        } else if req.generation_id != group.generation_id {
            Some(ILLEGAL_GENERATION)
        } else if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_deref() != Some(t.as_str()))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| group.protocol_name.as_deref() != Some(n.as_str()))
        {
            Some(INCONSISTENT_GROUP_PROTOCOL)
        } else {
            match group.state {
                GroupState::Empty | GroupState::Dead => Some(UNKNOWN_MEMBER_ID),
                GroupState::PreparingRebalance => Some(REBALANCE_IN_PROGRESS),
                GroupState::CompletingRebalance | GroupState::Stable => None,
            }
        };
        if let Some(error) = error {
            return SyncOutcome::Ready(SyncResult::error(error));
        }
        group.pending_sync.remove(member_id);
        let is_leader = group.is_leader(member_id);
        let state = group.state;
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let Some(member) = group.members.get_mut(member_id) else {
            return SyncOutcome::Ready(SyncResult::error(UNKNOWN_MEMBER_ID));
        };
        member.last_heartbeat = now.instant;
        if state == GroupState::Stable {
            return SyncOutcome::Ready(SyncResult {
                error_code: NONE,
                protocol_type,
                protocol_name,
                assignment: member.assignment.clone(),
            });
        }
        // CompletingRebalance: hold until the leader's assignment is durable.
        let (tx, rx) = oneshot::channel();
        member.sync_waiter = Some(tx);
        if !is_leader {
            return SyncOutcome::Held(rx);
        }
        let assignments: HashMap<String, Bytes> = req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        let mut record = group.to_record();
        for m in &mut record.members {
            m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
        }
        let append = super::records::encode_group_metadata_key(group_id).and_then(|key| {
            Ok(PendingAppend {
                partition: group.partition,
                records: vec![(
                    key,
                    Some(super::records::encode_group_metadata_value(&record)?),
                )],
            })
        });
        let append = match append {
            Ok(append) => self.start_appends(vec![append]),
            Err(e) => {
                tracing::warn!(group = group_id, error = %e, "cannot encode group metadata");
                Box::pin(async { Err(UNKNOWN_SERVER_ERROR) })
            }
        };
        SyncOutcome::LeaderAppend {
            append,
            assignments,
            generation_id: group.generation_id,
            held: rx,
        }
    }

    /// After the leader's group metadata append: distribute the assignments and become Stable,
    /// or on failure make everyone rejoin. Nothing happens if the group moved on meanwhile
    /// (its held syncs were answered by that transition).
    fn finish_leader_sync(
        &self,
        group_id: &str,
        generation_id: i32,
        mut assignments: HashMap<String, Bytes>,
        stored: Result<(), i16>,
    ) {
        let now = self.clock.now();
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return;
        };
        if group.state != GroupState::CompletingRebalance || group.generation_id != generation_id {
            return;
        }
        let mut appends = Vec::new();
        match stored {
            Ok(()) => {
                let protocol_type = group.protocol_type.clone();
                let protocol_name = group.protocol_name.clone();
                for member in group.members.values_mut() {
                    member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
                    member.last_heartbeat = now.instant;
                    let assignment = member.assignment.clone();
                    member.complete_sync(SyncResult {
                        error_code: NONE,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment,
                    });
                }
                group.transition(GroupState::Stable, now.wall_ms);
                tracing::debug!(group = group_id, generation_id, "group is stable");
            }
            Err(code) => {
                reset_and_propagate_assignment_error(group, store_error(code));
                self.maybe_prepare_rebalance(group, now, &mut appends);
                self.advance_rebalance(group, now, &mut appends);
            }
        }
        self.spawn_appends(appends);
    }

    /// Heartbeat.
    pub async fn heartbeat(&self, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
        let now = self.clock.now();
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        if group_id.is_empty() {
            return heartbeat_response(INVALID_GROUP_ID);
        }
        if let Some(code) = self.coordinator_error(group_id) {
            return heartbeat_response(code);
        }
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return heartbeat_response(UNKNOWN_MEMBER_ID);
        };
        if group.state == GroupState::Dead {
            return heartbeat_response(COORDINATOR_NOT_AVAILABLE);
        }
        if let Some(error) =
            group.validate_current_member(member_id, req.group_instance_id.as_deref())
        {
            return heartbeat_response(error);
        }
        if req.generation_id != group.generation_id {
            return heartbeat_response(ILLEGAL_GENERATION);
        }
        let state = group.state;
        if state == GroupState::Empty {
            return heartbeat_response(UNKNOWN_MEMBER_ID);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat = now.instant;
        }
        heartbeat_response(if state == GroupState::PreparingRebalance {
            REBALANCE_IN_PROGRESS
        } else {
            NONE
        })
    }

    /// LeaveGroup: v0-2 one `member_id`, v3+ a batch of members (by member id or, with an
    /// empty member id, by group.instance.id).
    pub async fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let now = self.clock.now();
        let leaving: Vec<(String, Option<String>)> = if version <= 2 {
            vec![(req.member_id.to_string(), None)]
        } else {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        };
        let (top_error, member_errors) = self.leave_locked(req.group_id.0.as_str(), &leaving, now);
        if version <= 2 {
            // Old versions carry a single error: the group's, else the member's.
            let error = if top_error != NONE {
                top_error
            } else {
                member_errors.first().copied().unwrap_or(NONE)
            };
            return LeaveGroupResponse::default().with_error_code(error);
        }
        let members = leaving
            .into_iter()
            .zip(member_errors)
            .map(|((member_id, instance_id), error)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_group_instance_id(instance_id.map(StrBytes::from_string))
                    .with_error_code(error)
            })
            .collect();
        LeaveGroupResponse::default()
            .with_error_code(top_error)
            .with_members(if top_error == NONE {
                members
            } else {
                Vec::new()
            })
    }

    fn leave_locked(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        now: Now,
    ) -> (i16, Vec<i16>) {
        if group_id.is_empty() {
            return (INVALID_GROUP_ID, Vec::new());
        }
        if let Some(code) = self.coordinator_error(group_id) {
            return (code, Vec::new());
        }
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return (NONE, vec![UNKNOWN_MEMBER_ID; leaving.len()]);
        };
        if group.state == GroupState::Dead {
            return (COORDINATOR_NOT_AVAILABLE, Vec::new());
        }
        let mut appends = Vec::new();
        let mut errors = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let error = if member_id.is_empty() && instance_id.is_some() {
                let current = instance_id
                    .as_ref()
                    .and_then(|i| group.static_members.get(i).cloned());
                match current {
                    Some(current) => {
                        self.remove_member_and_update_group(group, &current, now, &mut appends);
                        NONE
                    }
                    None => UNKNOWN_MEMBER_ID,
                }
            } else if group.pending_members.remove(member_id).is_some() {
                self.advance_rebalance(group, now, &mut appends);
                NONE
            } else if let Some(error) =
                group.validate_current_member(member_id, instance_id.as_deref())
            {
                error
            } else {
                self.remove_member_and_update_group(group, member_id, now, &mut appends);
                NONE
            };
            errors.push(error);
        }
        self.spawn_appends(appends);
        (NONE, errors)
    }

    /// Session, pending-member, pending-sync and rebalance deadlines; called by `run`.
    pub(super) fn expire_timers(&self, now: Now) -> Vec<PendingAppend> {
        let mut appends = Vec::new();
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            group
                .pending_members
                .retain(|_, deadline| now.instant < *deadline);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| !keep_alive(m, now))
                .map(|m| m.member_id.clone())
                .collect();
            for member_id in expired {
                tracing::info!(group = %group.group_id, member = %member_id, "member session expired");
                self.remove_member_and_update_group(group, &member_id, now, &mut appends);
            }
            if group.sync_deadline.is_some_and(|d| now.instant >= d) {
                group.sync_deadline = None;
                if matches!(
                    group.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                ) && !group.pending_sync.is_empty()
                {
                    let silent: Vec<String> = group.pending_sync.drain().collect();
                    for member_id in silent {
                        if let Some(mut member) = group.remove_member(&member_id) {
                            member.complete_sync(SyncResult::error(UNKNOWN_MEMBER_ID));
                        }
                    }
                    self.prepare_rebalance(group, now, &mut appends);
                }
            }
            self.advance_rebalance(group, now, &mut appends);
        }
        // Groups that only ever had an expired MEMBER_ID_REQUIRED member were never persisted.
        groups.retain(|_, g| !(g.is_removable() && g.generation_id == 0));
        appends
    }
}

/// Kafka's `MemberMetadata.shouldKeepAlive`: members waiting in a join or sync are kept (the
/// rebalance and sync deadlines bound those waits) except new members silent for 5 minutes.
fn keep_alive(member: &Member, now: Now) -> bool {
    if member.is_awaiting_join() {
        return !(member.is_new
            && now.instant
                >= member.last_heartbeat + Duration::from_millis(NEW_MEMBER_JOIN_TIMEOUT_MS));
    }
    if member.sync_waiter.is_some() {
        return true;
    }
    now.instant
        < member.last_heartbeat + Duration::from_millis(member.session_timeout_ms.max(0) as u64)
}

/// Makes a member that rejoined the leader if the current leader did not; false if none did.
fn elect_joined_leader(group: &mut Group) -> bool {
    let leader_joined = group
        .leader_id
        .as_ref()
        .and_then(|l| group.members.get(l))
        .is_some_and(Member::is_awaiting_join);
    if leader_joined {
        return true;
    }
    match group.members.values().find(|m| m.is_awaiting_join()) {
        Some(member) => {
            group.leader_id = Some(member.member_id.clone());
            true
        }
        None => false,
    }
}

/// The JoinGroup answer describing the current generation to `member_id`.
fn current_generation_result(group: &Group, member_id: &str, with_members: bool) -> JoinResult {
    JoinResult {
        error_code: NONE,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_id.clone().unwrap_or_default(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members: if with_members {
            group.member_metadata()
        } else {
            Vec::new()
        },
    }
}

/// Clears assignments and answers every held SyncGroup with `error`.
fn reset_and_propagate_assignment_error(group: &mut Group, error: i16) {
    for member in group.members.values_mut() {
        member.assignment = Bytes::new();
        member.complete_sync(SyncResult::error(error));
    }
}
