//! ListGroups, DescribeGroups and DeleteGroups.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes::*;
use super::membership::store_error;
use super::metadata::{Group, GroupState};
use super::records;
use super::{GroupCoordinator, PendingAppend};

/// The group type ListGroups v5 reports for classic groups.
const CLASSIC_GROUP_TYPE: &str = "classic";

/// Operations on a group that are allowed without an authorizer: READ(3), DELETE(6),
/// DESCRIBE(8), DESCRIBE_CONFIGS(10), ALTER_CONFIGS(11), as a bit field.
const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 10) | (1 << 11);

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl GroupCoordinator {
    /// ListGroups: v4+ filters by state, v5+ by group type (both case-insensitive).
    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<String> = if version >= 4 {
            req.states_filter.iter().map(|s| s.to_lowercase()).collect()
        } else {
            Vec::new()
        };
        let types: Vec<String> = if version >= 5 {
            req.types_filter.iter().map(|s| s.to_lowercase()).collect()
        } else {
            Vec::new()
        };
        let groups = self.groups.lock();
        let mut listed: Vec<ListedGroup> = groups
            .values()
            .filter(|g| states.is_empty() || states.contains(&g.state.name().to_lowercase()))
            .filter(|_| types.is_empty() || types.iter().any(|t| t == CLASSIC_GROUP_TYPE))
            .map(|g| {
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&g.group_id)))
                    .with_protocol_type(str_bytes(g.protocol_type.as_deref().unwrap_or("")));
                if version >= 4 {
                    listed.group_state = str_bytes(g.state.name());
                }
                if version >= 5 {
                    listed.group_type = str_bytes(CLASSIC_GROUP_TYPE);
                }
                listed
            })
            .collect();
        listed.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
        ListGroupsResponse::default()
            .with_error_code(NONE)
            .with_groups(listed)
    }

    /// DescribeGroups. An unknown group is reported as state "Dead" with no error, as Kafka.
    pub async fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        _version: i16,
    ) -> DescribeGroupsResponse {
        let authorized_operations = if req.include_authorized_operations {
            GROUP_AUTHORIZED_OPERATIONS
        } else {
            i32::MIN
        };
        let groups = self.groups.lock();
        let described = req
            .groups
            .iter()
            .map(|group_id| {
                let not_coordinator = self.coordinator_error(group_id.0.as_str());
                let described = match groups.get(group_id.0.as_str()) {
                    _ if let Some(code) = not_coordinator => {
                        DescribedGroup::default().with_error_code(code)
                    }
                    Some(group) => describe(group),
                    None => DescribedGroup::default()
                        .with_group_state(str_bytes(GroupState::Dead.name())),
                };
                described
                    .with_group_id(group_id.clone())
                    .with_authorized_operations(authorized_operations)
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(described)
    }

    /// DeleteGroups: only Empty groups; their offsets and metadata get tombstones.
    pub async fn delete_groups(
        &self,
        req: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        let now = self.clock.now();
        let mut results: Vec<(GroupId, Option<i16>)> = Vec::with_capacity(req.groups_names.len());
        let append = {
            let mut groups = self.groups.lock();
            let mut by_partition: HashMap<i32, Vec<(Bytes, Option<Bytes>)>> = HashMap::new();
            for group_id in &req.groups_names {
                let not_coordinator = self.coordinator_error(group_id.0.as_str());
                let error = match groups.get_mut(group_id.0.as_str()) {
                    _ if not_coordinator.is_some() => not_coordinator,
                    None => Some(GROUP_ID_NOT_FOUND),
                    Some(group) => match group.state {
                        GroupState::Dead => Some(GROUP_ID_NOT_FOUND),
                        GroupState::Empty => {
                            group.transition(GroupState::Dead, now.wall_ms);
                            by_partition
                                .entry(group.partition)
                                .or_default()
                                .extend(group_tombstones(group));
                            None
                        }
                        _ => Some(NON_EMPTY_GROUP),
                    },
                };
                if error.is_none() {
                    groups.remove(group_id.0.as_str());
                }
                results.push((group_id.clone(), error));
            }
            let appends: Vec<PendingAppend> = by_partition
                .into_iter()
                .map(|(partition, records)| PendingAppend { partition, records })
                .collect();
            self.start_appends(appends)
        };
        let append_error = append.await.err().map(store_error);
        DeleteGroupsResponse::default().with_results(
            results
                .into_iter()
                .map(|(group_id, error)| {
                    DeletableGroupResult::default()
                        .with_group_id(group_id)
                        .with_error_code(error.unwrap_or(append_error.unwrap_or(NONE)))
                })
                .collect(),
        )
    }
}

/// Tombstones for every committed offset of the group and for its metadata.
fn group_tombstones(group: &Group) -> Vec<(Bytes, Option<Bytes>)> {
    let mut tombstones: Vec<(Bytes, Option<Bytes>)> = group
        .offsets
        .keys()
        .filter_map(|(topic, partition)| {
            records::encode_offset_commit_key(&group.group_id, topic, *partition).ok()
        })
        .map(|key| (key, None))
        .collect();
    if let Ok(key) = records::encode_group_metadata_key(&group.group_id) {
        tombstones.push((key, None));
    }
    tombstones
}

/// Kafka's `GroupMetadata.summary`: member metadata and assignments only when Stable.
fn describe(group: &Group) -> DescribedGroup {
    let stable = group.state == GroupState::Stable;
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = group
        .members
        .values()
        .map(|m| {
            let member = DescribedGroupMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                .with_client_id(str_bytes(&m.client_id))
                .with_client_host(str_bytes(&m.client_host));
            if stable {
                member
                    .with_member_metadata(m.metadata(&protocol))
                    .with_member_assignment(m.assignment.clone())
            } else {
                member
            }
        })
        .collect();
    DescribedGroup::default()
        .with_error_code(NONE)
        .with_group_state(str_bytes(group.state.name()))
        .with_protocol_type(str_bytes(group.protocol_type.as_deref().unwrap_or("")))
        .with_protocol_data(str_bytes(if stable { &protocol } else { "" }))
        .with_members(members)
}
