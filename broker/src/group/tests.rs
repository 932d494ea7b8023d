//! Scenario tests of the coordinator over an in-memory stand-in for `__consumer_offsets`, with
//! tokio's paused clock so session and rebalance timeouts run instantly and deterministically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use super::error_codes::*;
use super::subscription::encode_subscription_v0;
use super::*;

/// Test double for the broker's `__consumer_offsets` partition logs: records are kept per
/// partition in call order; appends can be made to fail.
#[derive(Default)]
struct InMemoryOffsetsLog {
    partitions: Mutex<HashMap<i32, OffsetsRecords>>,
    fail_appends: AtomicBool,
}

impl InMemoryOffsetsLog {
    fn record_count(&self) -> usize {
        self.partitions.lock().values().map(Vec::len).sum()
    }
    fn tombstone_count(&self) -> usize {
        self.partitions
            .lock()
            .values()
            .flatten()
            .filter(|(_, v)| v.is_none())
            .count()
    }
}

impl OffsetsLog for InMemoryOffsetsLog {
    fn append(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> BoxFuture<'static, Result<(), i16>> {
        if self.fail_appends.load(Ordering::SeqCst) {
            return Box::pin(async { Err(19) }); // NOT_ENOUGH_REPLICAS
        }
        self.partitions
            .lock()
            .entry(partition)
            .or_default()
            .extend(records);
        Box::pin(async { Ok(()) })
    }

    fn read_all(&self, partition: i32) -> Result<Vec<(Bytes, Option<Bytes>)>, i16> {
        Ok(self
            .partitions
            .lock()
            .get(&partition)
            .cloned()
            .unwrap_or_default())
    }
}

const INITIAL_DELAY_MS: u64 = 200;
const SESSION_MS: i32 = 6000;
const REBALANCE_MS: i32 = 10_000;

fn config() -> GroupConfig {
    GroupConfig {
        group_initial_rebalance_delay_ms: INITIAL_DELAY_MS,
        ..GroupConfig::default()
    }
}

/// Topics "t0".."t9" exist with 4 partitions each.
fn partition_exists() -> PartitionExists {
    Arc::new(|topic: &str, partition: i32| {
        topic.starts_with('t') && topic.len() == 2 && (0..4).contains(&partition)
    })
}

struct Harness {
    coordinator: Arc<GroupCoordinator>,
    log: Arc<InMemoryOffsetsLog>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Harness {
    fn start() -> Harness {
        Harness::over(Arc::new(InMemoryOffsetsLog::default()))
    }

    /// A coordinator over `log`, loaded from it, with its timer loop running.
    fn over(log: Arc<InMemoryOffsetsLog>) -> Harness {
        let coordinator = GroupCoordinator::new(config(), log.clone(), partition_exists());
        coordinator.load().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(coordinator.clone().run(async move {
            let _ = rx.await;
        }));
        Harness {
            coordinator,
            log,
            shutdown: Some(tx),
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn join_request(
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    metadata: &[u8],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::copy_from_slice(metadata))])
}

/// Starts a JoinGroup on its own task (it may be held for a rebalance).
fn spawn_join(
    c: &Arc<GroupCoordinator>,
    req: JoinGroupRequest,
    version: i16,
) -> tokio::task::JoinHandle<JoinGroupResponse> {
    let c = c.clone();
    tokio::spawn(async move { c.join_group(req, version, "client", "/10.0.0.1").await })
}

/// A v5 join of a dynamic member: asks for a member id, then joins with it (held).
async fn spawn_dynamic_join(
    c: &Arc<GroupCoordinator>,
    group: &str,
    metadata: &[u8],
) -> tokio::task::JoinHandle<JoinGroupResponse> {
    let first = c
        .join_group(
            join_request(group, "", None, metadata),
            5,
            "client",
            "/10.0.0.1",
        )
        .await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    spawn_join(c, join_request(group, &first.member_id, None, metadata), 5)
}

fn sync_request(
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

fn spawn_sync(
    c: &Arc<GroupCoordinator>,
    req: SyncGroupRequest,
) -> tokio::task::JoinHandle<SyncGroupResponse> {
    let c = c.clone();
    tokio::spawn(async move { c.sync_group(req, 3).await })
}

async fn heartbeat(c: &GroupCoordinator, group: &str, generation: i32, member_id: &str) -> i16 {
    c.heartbeat(
        HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member_id)),
        4,
    )
    .await
    .error_code
}

async fn describe(c: &GroupCoordinator, group: &str) -> DescribedGroup {
    let mut r = c
        .describe_groups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
            5,
        )
        .await;
    r.groups.remove(0)
}

/// Two dynamic members "a" (leader) and "b" in a Stable group "g" at generation 1.
struct StableGroup {
    leader: String,
    follower: String,
    generation: i32,
}

async fn two_member_stable_group(c: &Arc<GroupCoordinator>, group: &str) -> StableGroup {
    let a = spawn_dynamic_join(c, group, &encode_subscription_v0(&["t1"])).await;
    let b = spawn_dynamic_join(c, group, &encode_subscription_v0(&["t1", "t2"])).await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.error_code, b.error_code), (NONE, NONE));
    let follower_sync = spawn_sync(c, sync_request(group, b.generation_id, &b.member_id, &[]));
    let leader_sync = spawn_sync(
        c,
        sync_request(
            group,
            a.generation_id,
            &a.member_id,
            &[(&a.member_id, b"for-a"), (&b.member_id, b"for-b")],
        ),
    );
    assert_eq!(
        leader_sync.await.unwrap().assignment,
        Bytes::from_static(b"for-a")
    );
    assert_eq!(
        follower_sync.await.unwrap().assignment,
        Bytes::from_static(b"for-b")
    );
    StableGroup {
        leader: a.member_id.to_string(),
        follower: b.member_id.to_string(),
        generation: a.generation_id,
    }
}

#[tokio::test(start_paused = true)]
async fn two_members_join_a_new_group_and_sync_distributes_assignments() {
    // Proves the initial delay gathers both members into generation 1, the first joiner leads
    // and gets all metadata, and SyncGroup hands each member the leader's assignment.
    let h = Harness::start();
    let c = &h.coordinator;
    let a = spawn_dynamic_join(c, "g", b"meta-a").await;
    let b = spawn_dynamic_join(c, "g", b"meta-b").await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.error_code, b.error_code), (NONE, NONE));
    assert_eq!(a.generation_id, 1);
    assert_eq!(b.generation_id, 1);
    assert_eq!(a.leader, a.member_id);
    assert_eq!(b.leader, a.member_id);
    assert_eq!(a.protocol_name.as_deref(), Some("range"));
    assert_eq!(a.members.len(), 2);
    let metadata: Vec<_> = a.members.iter().map(|m| m.metadata.clone()).collect();
    assert_eq!(
        metadata,
        vec![Bytes::from_static(b"meta-a"), Bytes::from_static(b"meta-b")]
    );
    assert!(b.members.is_empty());
    assert!(a.member_id.starts_with("client-"));

    // The follower's sync waits for the leader's.
    let follower = spawn_sync(c, sync_request("g", 1, &b.member_id, &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!follower.is_finished());
    assert_eq!(
        describe(c, "g").await.group_state.as_str(),
        "CompletingRebalance"
    );
    let leader = c
        .sync_group(
            sync_request(
                "g",
                1,
                &a.member_id,
                &[(&a.member_id, b"A"), (&b.member_id, b"B")],
            ),
            3,
        )
        .await;
    assert_eq!(leader.error_code, NONE);
    assert_eq!(leader.assignment, Bytes::from_static(b"A"));
    assert_eq!(follower.await.unwrap().assignment, Bytes::from_static(b"B"));

    let d = describe(c, "g").await;
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.protocol_type.as_str(), "consumer");
    assert_eq!(d.protocol_data.as_str(), "range");
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.members[1].member_assignment, Bytes::from_static(b"B"));
    assert_eq!(d.members[0].client_host.as_str(), "/10.0.0.1");
    // The group metadata was written when the leader synced.
    assert_eq!(h.log.record_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_third_member_makes_heartbeats_answer_rebalance_in_progress() {
    // Proves a new join moves a Stable group to PreparingRebalance, existing members learn it
    // from heartbeats, and rejoining members form generation 2 with all three.
    let h = Harness::start();
    let c = &h.coordinator;
    let g = two_member_stable_group(c, "g").await;
    assert_eq!(heartbeat(c, "g", g.generation, &g.follower).await, NONE);

    let third = spawn_dynamic_join(c, "g", b"meta-c").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        heartbeat(c, "g", g.generation, &g.leader).await,
        REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        heartbeat(c, "g", g.generation, &g.follower).await,
        REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        heartbeat(c, "g", g.generation + 5, &g.follower).await,
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(c, "g", g.generation, "nobody").await,
        UNKNOWN_MEMBER_ID
    );
    // A sync during the rebalance is refused.
    let sync = c
        .sync_group(sync_request("g", g.generation, &g.follower, &[]), 3)
        .await;
    assert_eq!(sync.error_code, REBALANCE_IN_PROGRESS);

    let a = spawn_join(c, join_request("g", &g.leader, None, b"meta-a"), 5);
    let b = spawn_join(c, join_request("g", &g.follower, None, b"meta-b"), 5);
    let (a, b, third) = (a.await.unwrap(), b.await.unwrap(), third.await.unwrap());
    assert_eq!(a.generation_id, 2);
    assert_eq!(b.generation_id, 2);
    assert_eq!(third.generation_id, 2);
    assert_eq!(a.leader.as_str(), g.leader);
    assert_eq!(a.members.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn session_expiry_removes_a_silent_member_and_triggers_a_rebalance() {
    // Proves a member without heartbeats for session.timeout.ms is removed, the survivor sees
    // REBALANCE_IN_PROGRESS, and its rejoin completes generation 2 without the dead member.
    let h = Harness::start();
    let c = &h.coordinator;
    let g = two_member_stable_group(c, "g").await;
    let mut saw_rebalance = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if heartbeat(c, "g", g.generation, &g.leader).await == REBALANCE_IN_PROGRESS {
            saw_rebalance = true;
            break;
        }
    }
    assert!(saw_rebalance, "the follower's session never expired");
    let d = describe(c, "g").await;
    assert_eq!(d.group_state.as_str(), "PreparingRebalance");
    assert_eq!(d.members.len(), 1);
    let a = c
        .join_group(
            join_request("g", &g.leader, None, b"meta-a"),
            5,
            "client",
            "h",
        )
        .await;
    assert_eq!(a.error_code, NONE);
    assert_eq!(a.generation_id, 2);
    assert_eq!(a.members.len(), 1);
    assert_eq!(heartbeat(c, "g", 2, &g.follower).await, UNKNOWN_MEMBER_ID);
}

#[tokio::test(start_paused = true)]
async fn member_id_required_only_from_join_group_v4() {
    // Proves v4+ joins without member id get MEMBER_ID_REQUIRED and a remembered id, v3 joins
    // become members at once, and an unused pending id expires with its session timeout.
    let h = Harness::start();
    let c = &h.coordinator;
    let v3 = spawn_join(c, join_request("old", "", None, b"m"), 3)
        .await
        .unwrap();
    assert_eq!(v3.error_code, NONE);
    assert_eq!(v3.generation_id, 1);
    assert!(!v3.member_id.is_empty());

    let first = c
        .join_group(join_request("new", "", None, b"m"), 4, "cli", "h")
        .await;
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(first.member_id.starts_with("cli-"));
    assert_eq!(first.generation_id, -1);
    let second = spawn_join(c, join_request("new", &first.member_id, None, b"m"), 4)
        .await
        .unwrap();
    assert_eq!(second.error_code, NONE);
    assert_eq!(second.member_id, first.member_id);

    // A pending id that never comes back is forgotten after the session timeout.
    let pending = c
        .join_group(join_request("p", "", None, b"m"), 9, "cli", "h")
        .await;
    assert_eq!(pending.error_code, MEMBER_ID_REQUIRED);
    tokio::time::sleep(Duration::from_millis(SESSION_MS as u64 + 200)).await;
    let late = c
        .join_group(
            join_request("p", &pending.member_id, None, b"m"),
            9,
            "cli",
            "h",
        )
        .await;
    assert_eq!(late.error_code, UNKNOWN_MEMBER_ID);
}

#[tokio::test(start_paused = true)]
async fn join_validation_errors() {
    // Proves bad session timeouts, protocol mismatches and unknown member ids are refused.
    let h = Harness::start();
    let c = &h.coordinator;
    let bad_timeout = join_request("g", "", None, b"m").with_session_timeout_ms(10);
    assert_eq!(
        c.join_group(bad_timeout, 5, "c", "h").await.error_code,
        INVALID_SESSION_TIMEOUT
    );
    let no_type = join_request("g", "", None, b"m").with_protocol_type(s(""));
    assert_eq!(
        c.join_group(no_type, 5, "c", "h").await.error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(
        c.join_group(join_request("g", "ghost", None, b"m"), 5, "c", "h")
            .await
            .error_code,
        UNKNOWN_MEMBER_ID
    );
    let empty_id = join_request("", "", None, b"m");
    assert_eq!(
        c.join_group(empty_id, 5, "c", "h").await.error_code,
        INVALID_GROUP_ID
    );
    // Failed joins leave no group behind.
    let listed = c.list_groups(ListGroupsRequest::default(), 4).await;
    assert!(listed.groups.is_empty());

    let _g = two_member_stable_group(c, "g").await;
    let other = join_request("g", "", None, b"m").with_protocols(vec![
        JoinGroupRequestProtocol::default().with_name(s("roundrobin")),
    ]);
    assert_eq!(
        c.join_group(other, 5, "c", "h").await.error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
}

#[tokio::test(start_paused = true)]
async fn static_member_rejoins_without_rebalance_and_the_old_id_is_fenced() {
    // Proves KIP-345: a known group.instance.id rejoining with unchanged protocols gets a new
    // member id in the same generation without a rebalance, keeps its assignment, and the
    // replaced member id is fenced.
    let h = Harness::start();
    let c = &h.coordinator;
    let a = spawn_join(c, join_request("s", "", Some("inst-a"), b"ma"), 5);
    let b = spawn_join(c, join_request("s", "", Some("inst-b"), b"mb"), 5);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.error_code, b.error_code), (NONE, NONE));
    assert!(a.member_id.starts_with("inst-a-"));
    let follower = spawn_sync(c, sync_request("s", 1, &b.member_id, &[]));
    let leader = c
        .sync_group(
            sync_request(
                "s",
                1,
                &a.member_id,
                &[(&a.member_id, b"A"), (&b.member_id, b"B")],
            ),
            3,
        )
        .await;
    assert_eq!(leader.error_code, NONE);
    assert_eq!(follower.await.unwrap().assignment, Bytes::from_static(b"B"));

    // The follower restarts: same instance id, no member id.
    let rejoin = c
        .join_group(
            join_request("s", "", Some("inst-b"), b"mb"),
            5,
            "client",
            "h",
        )
        .await;
    assert_eq!(rejoin.error_code, NONE);
    assert_eq!(rejoin.generation_id, 1);
    assert_ne!(rejoin.member_id, b.member_id);
    assert_eq!(rejoin.leader, a.member_id);
    assert!(rejoin.members.is_empty());
    assert_eq!(describe(c, "s").await.group_state.as_str(), "Stable");
    assert_eq!(heartbeat(c, "s", 1, &a.member_id).await, NONE);

    let sync = c
        .sync_group(
            sync_request("s", 1, &rejoin.member_id, &[]).with_group_instance_id(Some(s("inst-b"))),
            3,
        )
        .await;
    assert_eq!(sync.error_code, NONE);
    assert_eq!(sync.assignment, Bytes::from_static(b"B"));

    // The old incarnation is fenced.
    let fenced = c
        .heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("s")))
                .with_generation_id(1)
                .with_member_id(b.member_id.clone())
                .with_group_instance_id(Some(s("inst-b"))),
            4,
        )
        .await;
    assert_eq!(fenced.error_code, FENCED_INSTANCE_ID);
    let fenced_join = c
        .join_group(
            join_request("s", &b.member_id, Some("inst-b"), b"mb"),
            5,
            "c",
            "h",
        )
        .await;
    assert_eq!(fenced_join.error_code, FENCED_INSTANCE_ID);

    // The static leader rejoining gets the members but must skip the assignment (KIP-814).
    let leader_rejoin = c
        .join_group(
            join_request("s", "", Some("inst-a"), b"ma"),
            9,
            "client",
            "h",
        )
        .await;
    assert_eq!(leader_rejoin.error_code, NONE);
    assert_eq!(leader_rejoin.leader, leader_rejoin.member_id);
    assert!(leader_rejoin.skip_assignment);
    assert_eq!(leader_rejoin.members.len(), 2);
    assert_eq!(describe(c, "s").await.group_state.as_str(), "Stable");
}

#[tokio::test(start_paused = true)]
async fn leave_group_v0_and_v3_remove_members() {
    // Proves LeaveGroup v0 (single member) and v3 (batch, by instance id) remove members, the
    // group rebalances, and unknown members get UNKNOWN_MEMBER_ID.
    let h = Harness::start();
    let c = &h.coordinator;
    let g = two_member_stable_group(c, "g").await;
    let v0 = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(&g.follower)),
            0,
        )
        .await;
    assert_eq!(v0.error_code, NONE);
    assert_eq!(
        heartbeat(c, "g", g.generation, &g.leader).await,
        REBALANCE_IN_PROGRESS
    );

    let v3 = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(s(&g.leader)),
                    MemberIdentity::default().with_member_id(s("ghost")),
                    MemberIdentity::default()
                        .with_member_id(s(""))
                        .with_group_instance_id(Some(s("nope"))),
                ]),
            3,
        )
        .await;
    assert_eq!(v3.error_code, NONE);
    let codes: Vec<i16> = v3.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![NONE, UNKNOWN_MEMBER_ID, UNKNOWN_MEMBER_ID]);
    // With nobody left the rebalance completes at once into an Empty group.
    assert_eq!(describe(c, "g").await.group_state.as_str(), "Empty");
}

fn commit_request(
    group: &str,
    generation: i32,
    member: &str,
    entries: &[(&str, i32, i64, &str)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition, offset, metadata) in entries {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(3)
            .with_committed_metadata(Some(s(metadata)));
        match topics.iter_mut().find(|t| t.name.0.as_str() == *topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(topics)
}

fn commit_codes(r: &OffsetCommitResponse) -> Vec<i16> {
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

async fn fetch_v5(
    c: &GroupCoordinator,
    group: &str,
    topic: &str,
    partitions: Vec<i32>,
) -> Vec<(i64, i32, String)> {
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(partitions)])),
            5,
        )
        .await;
    assert_eq!(r.error_code, NONE);
    r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata.as_deref().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn offsets_round_trip_and_survive_a_restart() {
    // Proves a simple commit is persisted before the answer, OffsetFetch (single-group and v8
    // multi-group forms) returns offset, leader epoch and metadata, per-partition errors are
    // reported, and a new coordinator loading the same log sees the same offsets.
    let log = Arc::new(InMemoryOffsetsLog::default());
    let mut h = Harness::over(log.clone());
    let c = &h.coordinator;
    let big = "x".repeat(5000);
    let r = c
        .offset_commit(
            commit_request(
                "simple",
                -1,
                "",
                &[
                    ("t1", 0, 42, "hello"),
                    ("t1", 1, 7, ""),
                    ("t1", 9, 1, ""),
                    ("zz", 0, 1, ""),
                    ("t2", 0, 5, &big),
                ],
            ),
            8,
        )
        .await;
    assert_eq!(
        commit_codes(&r),
        vec![
            NONE,
            NONE,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION,
            OFFSET_METADATA_TOO_LARGE
        ]
    );
    assert_eq!(log.record_count(), 2);
    assert_eq!(
        fetch_v5(c, "simple", "t1", vec![0, 1, 2]).await,
        vec![
            (42, 3, "hello".into()),
            (7, 3, String::new()),
            (-1, -1, String::new())
        ]
    );
    // v8: several groups, one with all topics (null).
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("simple")))
                    .with_topics(None),
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("unknown")))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t1")))
                        .with_partition_indexes(vec![0])])),
            ]),
            8,
        )
        .await;
    assert_eq!(r.groups.len(), 2);
    let offsets: Vec<i64> = r.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offsets, vec![42, 7]);
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);
    assert_eq!(describe(c, "simple").await.group_state.as_str(), "Empty");

    h.stop();
    let h2 = Harness::over(log.clone());
    let c2 = &h2.coordinator;
    assert_eq!(
        fetch_v5(c2, "simple", "t1", vec![0, 1]).await,
        vec![(42, 3, "hello".into()), (7, 3, String::new())]
    );
    let mut committed = c2.committed_offsets("simple");
    committed.sort();
    assert_eq!(committed, vec![("t1".into(), 0, 42), ("t1".into(), 1, 7)]);
}

#[tokio::test(start_paused = true)]
async fn commits_of_a_live_group_need_its_member_and_generation() {
    // Proves generation -1 commits are refused while members exist, stale generations get
    // ILLEGAL_GENERATION, a failed append is reported and not cached, and a valid commit works.
    let h = Harness::start();
    let c = &h.coordinator;
    let g = two_member_stable_group(c, "g").await;
    let simple = c
        .offset_commit(commit_request("g", -1, "", &[("t1", 0, 1, "")]), 8)
        .await;
    assert_eq!(commit_codes(&simple), vec![UNKNOWN_MEMBER_ID]);
    let stale = c
        .offset_commit(commit_request("g", 99, &g.leader, &[("t1", 0, 1, "")]), 8)
        .await;
    assert_eq!(commit_codes(&stale), vec![ILLEGAL_GENERATION]);
    let stranger = c
        .offset_commit(
            commit_request("g", g.generation, "x", &[("t1", 0, 1, "")]),
            8,
        )
        .await;
    assert_eq!(commit_codes(&stranger), vec![UNKNOWN_MEMBER_ID]);
    let no_group = c
        .offset_commit(commit_request("nogroup", 3, "x", &[("t1", 0, 1, "")]), 8)
        .await;
    assert_eq!(commit_codes(&no_group), vec![ILLEGAL_GENERATION]);

    h.log.fail_appends.store(true, Ordering::SeqCst);
    let failed = c
        .offset_commit(
            commit_request("g", g.generation, &g.leader, &[("t1", 0, 5, "")]),
            8,
        )
        .await;
    assert_eq!(commit_codes(&failed), vec![COORDINATOR_NOT_AVAILABLE]);
    assert!(c.committed_offsets("g").is_empty());
    h.log.fail_appends.store(false, Ordering::SeqCst);

    let ok = c
        .offset_commit(
            commit_request("g", g.generation, &g.follower, &[("t1", 0, 11, "m")]),
            8,
        )
        .await;
    assert_eq!(commit_codes(&ok), vec![NONE]);
    assert_eq!(c.committed_offsets("g"), vec![("t1".into(), 0, 11)]);
}

#[tokio::test(start_paused = true)]
async fn delete_groups_only_deletes_empty_groups_and_writes_tombstones() {
    // Proves DeleteGroups answers GROUP_ID_NOT_FOUND / NON_EMPTY_GROUP, deletes an Empty group
    // with tombstones for its offsets and metadata, and a restart does not bring it back.
    let h = Harness::start();
    let c = &h.coordinator;
    let _live = two_member_stable_group(c, "live").await;
    let r = c
        .offset_commit(
            commit_request("idle", -1, "", &[("t1", 0, 1, ""), ("t2", 1, 2, "")]),
            8,
        )
        .await;
    assert_eq!(commit_codes(&r), vec![NONE, NONE]);
    let r = c
        .delete_groups(
            DeleteGroupsRequest::default().with_groups_names(vec![
                GroupId(s("idle")),
                GroupId(s("live")),
                GroupId(s("missing")),
            ]),
            2,
        )
        .await;
    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, vec![NONE, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]);
    assert_eq!(h.log.tombstone_count(), 3);
    assert!(c.committed_offsets("idle").is_empty());
    assert_eq!(describe(c, "idle").await.group_state.as_str(), "Dead");

    let h2 = Harness::over(h.log.clone());
    assert!(h2.coordinator.committed_offsets("idle").is_empty());
    // The live group came back from its metadata record, with its members.
    let d = describe(&h2.coordinator, "live").await;
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.members.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn offset_delete_refuses_subscribed_topics() {
    // Proves OffsetDelete answers GROUP_SUBSCRIBED_TO_TOPIC for topics in members' consumer
    // subscriptions, deletes the others, and GROUP_ID_NOT_FOUND for unknown groups.
    let h = Harness::start();
    let c = &h.coordinator;
    let g = two_member_stable_group(c, "g").await; // subscribed to t1, t2
    let r = c
        .offset_commit(
            commit_request(
                "g",
                g.generation,
                &g.leader,
                &[("t1", 0, 1, ""), ("t3", 0, 2, "")],
            ),
            8,
        )
        .await;
    assert_eq!(commit_codes(&r), vec![NONE, NONE]);
    let request = |topic: &str| {
        OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])
    };
    let r = c
        .offset_delete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![request("t1"), request("t3")]),
            0,
        )
        .await;
    assert_eq!(r.error_code, NONE);
    let codes: Vec<i16> = r
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(codes, vec![GROUP_SUBSCRIBED_TO_TOPIC, NONE]);
    assert_eq!(c.committed_offsets("g"), vec![("t1".into(), 0, 1)]);
    let missing = c
        .offset_delete(
            OffsetDeleteRequest::default().with_group_id(GroupId(s("nope"))),
            0,
        )
        .await;
    assert_eq!(missing.error_code, GROUP_ID_NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn offsets_expire_by_retention_rules() {
    // Proves v2 commits with a retention time expire at commit + retention, and v5+ commits
    // of a simple group expire offsets.retention.minutes after the commit, with the group.
    let log = Arc::new(InMemoryOffsetsLog::default());
    let c = GroupCoordinator::new(config(), log.clone(), partition_exists());
    c.load().unwrap();
    let v2 = commit_request("old", -1, "", &[("t1", 0, 1, "")]).with_retention_time_ms(60_000);
    assert_eq!(commit_codes(&c.offset_commit(v2, 2).await), vec![NONE]);
    let v8 = commit_request("new", -1, "", &[("t1", 0, 1, "")]);
    assert_eq!(commit_codes(&c.offset_commit(v8, 8).await), vec![NONE]);

    tokio::time::advance(Duration::from_secs(61)).await;
    let _ = c.expire_offsets(c.clock.now());
    assert!(c.committed_offsets("old").is_empty());
    assert_eq!(c.committed_offsets("new").len(), 1);

    tokio::time::advance(Duration::from_secs(7 * 24 * 3600)).await;
    let appends = c.expire_offsets(c.clock.now());
    assert!(c.committed_offsets("new").is_empty());
    let tombstones: usize = appends.iter().map(|a| a.records.len()).sum();
    assert_eq!(tombstones, 2); // the offset and the group
    let listed = c.list_groups(ListGroupsRequest::default(), 4).await;
    assert!(listed.groups.is_empty());
}

#[tokio::test(start_paused = true)]
async fn list_groups_filters_by_state_and_type() {
    // Proves ListGroups reports every group with its state (v4+) and type (v5+) and filters.
    let h = Harness::start();
    let c = &h.coordinator;
    let _g = two_member_stable_group(c, "live").await;
    c.offset_commit(commit_request("idle", -1, "", &[("t1", 0, 1, "")]), 8)
        .await;
    let all = c.list_groups(ListGroupsRequest::default(), 5).await;
    let listed: Vec<(String, String, String)> = all
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.group_state.to_string(),
                g.group_type.to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("idle".into(), "Empty".into(), "classic".into()),
            ("live".into(), "Stable".into(), "classic".into())
        ]
    );
    let stable = c
        .list_groups(
            ListGroupsRequest::default().with_states_filter(vec![s("stable")]),
            4,
        )
        .await;
    assert_eq!(stable.groups.len(), 1);
    let consumer_type = c
        .list_groups(
            ListGroupsRequest::default().with_types_filter(vec![s("consumer")]),
            5,
        )
        .await;
    assert!(consumer_type.groups.is_empty());
}

#[test]
fn java_string_hash_matches_java() {
    // Proves String.hashCode compatibility, including a negative hash and Integer.MIN_VALUE,
    // which Kafka's Utils.abs maps to 0 (not an overflowing abs).
    assert_eq!(java_string_hash("hello"), 99_162_322);
    assert_eq!(java_string_hash(""), 0);
    assert_eq!(java_string_hash("my-group"), -1_906_497_762);
    assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let c = GroupCoordinator::new(
        GroupConfig::default(),
        Arc::new(InMemoryOffsetsLog::default()),
        partition_exists(),
    );
    assert_eq!(c.partition_for("hello"), 22);
    assert_eq!(c.partition_for("my-group"), 36);
    assert_eq!(c.partition_for("polygenelubricants"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_group_metadata_append_fails_the_sync_and_restarts_the_rebalance() {
    // Proves the leader's assignment is only distributed once durable: when the append fails,
    // every held SyncGroup gets the mapped error and the group goes back to rebalancing.
    let h = Harness::start();
    let c = &h.coordinator;
    let a = spawn_dynamic_join(c, "g", b"a").await;
    let b = spawn_dynamic_join(c, "g", b"b").await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let follower = spawn_sync(c, sync_request("g", 1, &b.member_id, &[]));
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.log.fail_appends.store(true, Ordering::SeqCst);
    let leader = c
        .sync_group(
            sync_request("g", 1, &a.member_id, &[(&a.member_id, b"A")]),
            3,
        )
        .await;
    assert_eq!(leader.error_code, COORDINATOR_NOT_AVAILABLE);
    assert_eq!(
        follower.await.unwrap().error_code,
        COORDINATOR_NOT_AVAILABLE
    );
    assert_eq!(
        describe(c, "g").await.group_state.as_str(),
        "PreparingRebalance"
    );
}

#[tokio::test(start_paused = true)]
async fn members_that_do_not_rejoin_are_dropped_when_the_rebalance_ends() {
    // Proves a rebalance does not wait forever for a silent member: the rejoined members form
    // the next generation and the silent one is no longer known.
    let h = Harness::start();
    let c = &h.coordinator;
    let g = two_member_stable_group(c, "g").await;
    let third = spawn_dynamic_join(c, "g", b"c").await;
    let leader = spawn_join(c, join_request("g", &g.leader, None, b"a"), 5);
    let (leader, third) = (leader.await.unwrap(), third.await.unwrap());
    assert_eq!(leader.generation_id, 2);
    assert_eq!(third.generation_id, 2);
    assert_eq!(leader.members.len(), 2);
    assert_eq!(heartbeat(c, "g", 2, &g.follower).await, UNKNOWN_MEMBER_ID);
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_static_instance_waiting_in_a_join_is_fenced() {
    // Proves that when a static instance id is taken over during a rebalance, the old
    // incarnation's held JoinGroup is answered FENCED_INSTANCE_ID.
    let h = Harness::start();
    let c = &h.coordinator;
    let first = spawn_join(c, join_request("s", "", Some("i"), b"m"), 5);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = spawn_join(c, join_request("s", "", Some("i"), b"m"), 5);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.error_code, FENCED_INSTANCE_ID);
    assert_eq!(second.error_code, NONE);
    assert_eq!(second.generation_id, 1);
    assert_eq!(second.leader, second.member_id);
}

#[tokio::test(start_paused = true)]
async fn coordination_follows_the_offsets_partition_leadership() {
    // Proves a coordinator answers only for groups of the partitions it loaded (NOT_COORDINATOR
    // otherwise), that resigning drops them from memory, and that a coordinator elected later
    // loads what the previous one committed to the shared log.
    let log = Arc::new(InMemoryOffsetsLog::default());
    let first = GroupCoordinator::new(config(), log.clone(), partition_exists());
    let commit = || commit_request("moving", -1, "", &[("t1", 0, 42, "")]);
    assert_eq!(
        commit_codes(&first.offset_commit(commit(), 8).await),
        vec![NOT_COORDINATOR]
    );
    let partition = first.partition_for("moving");
    first.load_partition(partition).unwrap();
    assert_eq!(
        commit_codes(&first.offset_commit(commit(), 8).await),
        vec![NONE]
    );
    first.unload_partition(partition);
    assert!(first.committed_offsets("moving").is_empty());
    assert_eq!(first.coordinator_error("moving"), Some(NOT_COORDINATOR));

    let second = GroupCoordinator::new(config(), log.clone(), partition_exists());
    second.load_partition(partition).unwrap();
    assert_eq!(second.coordinator_error("moving"), None);
    assert_eq!(
        second.committed_offsets("moving"),
        vec![("t1".to_string(), 0, 42)]
    );
}
