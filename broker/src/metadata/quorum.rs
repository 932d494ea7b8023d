//! The metadata quorum: openraft over tonic, the controller's duties, and broker sessions.
//!
//! - Voters (`controller.quorum.voters`, `id@host:port`) run openraft with the
//!   [`store`](super::store) storage; the RPCs of [`v1`] travel on the controller listener. With no
//!   voters configured the node is its own one-node quorum and needs no network.
//! - Non-voters (`process.roles=broker`) follow the image with `WatchImage` from any voter.
//! - Writes go through [`Metadata::propose`]: applied locally when this node leads the quorum,
//!   otherwise forwarded to the leader. The call returns once this node's image holds the change.
//! - The active controller (the Raft leader) fences brokers whose session ends: when their
//!   heartbeat stream closes (a killed process closes its sockets) or after
//!   `broker.session.timeout.ms` without a heartbeat (a stopped or cut-off process). It also sets
//!   the cluster id on a new cluster and, with `auto.leader.rebalance.enable`, moves leadership back
//!   to preferred replicas every `leader.imbalance.check.interval.seconds`.
//! - Each broker registers (getting its broker epoch), heartbeats every
//!   `broker.heartbeat.interval.ms`, registers again if it was fenced, and on SIGTERM asks for a
//!   controlled shutdown and waits until it leads nothing.
//!
//! - Elections are timed here ([`elections`]), not by openraft's timer: a voter campaigns after
//!   1.5-2 `controller.quorum.election.timeout.ms` (random) without hearing from a leader, or,
//!   when the leader's controller listener refuses connections (its process is gone), as soon as
//!   the short leader lease has run out, the lowest surviving voter id first.
//!
//! Start-up refuses, with one line, what would join the quorum with a wrong view: a node id
//! missing from the voters, a voter address answered by another node id (or by another process
//! with this node's id), voters lists that differ between nodes, a data directory from another
//! cluster, and no quorum within `controller.quorum.startup.timeout.ms`.

pub mod v1 {
    tonic::include_proto!("kairos.controller.v1");
}

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, ServerState};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;
use v1::controller_client::ControllerClient;
use v1::controller_server::{Controller, ControllerServer};

use super::image::{ClusterImage, Command, Reply};
use super::store::{FenceTimes, LogStore, NodeId, StateMachine, TypeConfig, METADATA_DIR};
use super::{codes, MetaError, TopicInfo};
use crate::config::{BrokerConfig, Voter};
use crate::shutdown::wait_for;

/// How long a proposal may take before the caller gets REQUEST_TIMED_OUT (retriable).
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

fn voters_string(voters: &[Voter]) -> String {
    voters
        .iter()
        .map(|v| format!("{}@{}", v.id, v.addr()))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a forwarded proposal answers.
#[derive(Serialize, Deserialize)]
enum ProposeResult {
    Applied { index: u64, reply: Reply },
    NotLeader { leader: Option<NodeId> },
    Failed { message: String },
}

/// Settings the quorum needs, taken from the broker config.
#[derive(Clone)]
struct Settings {
    node_id: i32,
    voters: Vec<Voter>,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    election_timeout: Duration,
    auto_rebalance: bool,
    imbalance_interval: Duration,
}

/// Lazily connected gRPC clients to the controllers, one per `host:port`, shared by the Raft
/// network and the metadata handle.
#[derive(Clone, Default)]
struct Clients(Arc<Mutex<HashMap<String, ControllerClient<Channel>>>>);

impl Clients {
    fn get(&self, addr: &str) -> Result<ControllerClient<Channel>, String> {
        let mut clients = self.0.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("voter address {addr}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let c = ControllerClient::new(endpoint.connect_lazy());
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// Proposes `command` to this node's Raft (which answers NotLeader unless it leads).
async fn write_local(raft: &Raft<TypeConfig>, command: Command) -> ProposeResult {
    match raft.client_write(command).await {
        Ok(r) => ProposeResult::Applied {
            index: r.log_id.index,
            reply: r.data,
        },
        Err(e) => match e.forward_to_leader() {
            Some(f) => ProposeResult::NotLeader {
                leader: f.leader_id,
            },
            None => ProposeResult::Failed {
                message: e.to_string(),
            },
        },
    }
}

/// The handle the rest of the broker uses: the current image, and writes.
pub struct Metadata {
    settings: Settings,
    incarnation: Uuid,
    raft: Option<Raft<TypeConfig>>,
    image: watch::Receiver<Arc<ClusterImage>>,
    clients: Clients,
    /// Last controller (quorum leader) a non-voter heard of.
    leader_hint: Mutex<Option<i32>>,
    /// On the active controller: when each broker last heartbeated.
    sessions: Mutex<HashMap<i32, Instant>>,
    /// Brokers whose ShutdownBroker proposal is in flight.
    shutdowns: Mutex<std::collections::HashSet<i32>>,
    /// On a voter: when it last heard from a Raft leader (an accepted AppendEntries or
    /// InstallSnapshot) or granted a vote. [`elections`] times campaigns from it.
    raft_contact: Mutex<Instant>,
    /// When this node applied each abrupt fence (see [`Metadata::fenced_within`]).
    fence_times: FenceTimes,
}

impl Metadata {
    pub fn node_id(&self) -> i32 {
        self.settings.node_id
    }

    pub fn incarnation(&self) -> Uuid {
        self.incarnation
    }

    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.image.clone()
    }

    /// Whether partition leader `id` was fenced without a controlled shutdown less than `within`
    /// ago, as this node saw it (brokers already fenced when this node started count as long
    /// ago).
    pub fn fenced_within(&self, id: i32, within: Duration) -> bool {
        self.fence_times.within(id, within)
    }

    pub fn cluster_id(&self) -> String {
        self.image.borrow().cluster_id.clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<TopicInfo>> {
        self.image.borrow().topics.get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<TopicInfo>> {
        self.image.borrow().topic_by_id(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<TopicInfo>> {
        self.image.borrow().topics.values().cloned().collect()
    }

    /// The active controller's node id, or -1 when there is none right now.
    pub fn controller_id(&self) -> i32 {
        match &self.raft {
            Some(raft) => raft
                .metrics()
                .borrow()
                .current_leader
                .map(|l| l as i32)
                .unwrap_or(-1),
            None => self.leader_hint.lock().unwrap_or(-1),
        }
    }

    /// The controller id told to Kafka clients (Metadata, DescribeCluster): the active controller
    /// when it is a live broker; otherwise (a `process.roles=controller` node, or none right now)
    /// this broker, which forwards admin writes to the quorum (KRaft answers a live broker too,
    /// as clients cannot reach controllers).
    pub fn controller_for_clients(&self) -> i32 {
        let controller = self.controller_id();
        let image = self.image.borrow();
        // Unfenced is enough: a broker in controlled shutdown still answers admin requests, so
        // this is not `ClusterImage::is_live`, which also excludes it from leadership.
        let live = |id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
        if controller >= 0 && live(controller) {
            controller
        } else if live(self.settings.node_id) {
            self.settings.node_id
        } else {
            controller
        }
    }

    /// The Raft term this node leads the quorum in, if it does.
    fn controller_term(&self) -> Option<u64> {
        self.raft.as_ref().and_then(|r| {
            let m = r.metrics();
            let m = m.borrow();
            let leads = m.state == ServerState::Leader
                && m.current_leader == Some(self.settings.node_id as u64);
            leads.then_some(m.current_term)
        })
    }

    /// Whether this node is the active controller (it leads the metadata quorum).
    pub fn is_controller_leader(&self) -> bool {
        self.controller_term().is_some()
    }

    fn voter_addr(&self, id: i32) -> Option<String> {
        self.settings
            .voters
            .iter()
            .find(|v| v.id == id)
            .map(Voter::addr)
    }

    /// Proposes a command to the quorum and returns its reply once this node's image holds it.
    /// Errors are retriable Kafka codes when there is no quorum (REQUEST_TIMED_OUT,
    /// NOT_CONTROLLER); a command the image refuses comes back as its error (`Reply::Error` is
    /// never returned as a success).
    pub async fn propose(&self, command: Command) -> Result<Reply, MetaError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        let mut target: Option<i32> = None;
        let mut attempt = 0u32;
        loop {
            if Instant::now() >= deadline {
                return Err(MetaError::new(
                    codes::REQUEST_TIMED_OUT,
                    "the metadata quorum did not answer in time (no controller?)",
                ));
            }
            attempt += 1;
            let outcome = match (&self.raft, target) {
                (Some(raft), None) => write_local(raft, command.clone()).await,
                _ => {
                    let id = target.or(*self.leader_hint.lock()).unwrap_or_else(|| {
                        let v = &self.settings.voters;
                        v.get(attempt as usize % v.len().max(1))
                            .map(|v| v.id)
                            .unwrap_or(-1)
                    });
                    let outcome = self.forward(id, &command).await;
                    if matches!(outcome, ProposeResult::Applied { .. }) && self.raft.is_none() {
                        // The voter that applied it leads the quorum.
                        *self.leader_hint.lock() = Some(id);
                    }
                    outcome
                }
            };
            match outcome {
                ProposeResult::Applied { index, reply } => {
                    self.wait_applied(index, deadline).await?;
                    return match reply {
                        Reply::Error { code, message } => Err(MetaError::new(code, message)),
                        reply => Ok(reply),
                    };
                }
                ProposeResult::NotLeader { leader } => {
                    target = leader
                        .map(|l| l as i32)
                        .filter(|l| *l != self.settings.node_id);
                    if target.is_some() {
                        *self.leader_hint.lock() = target;
                    }
                    if leader.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                ProposeResult::Failed { message } => {
                    tracing::debug!("proposal failed, retrying: {message}");
                    target = None;
                    *self.leader_hint.lock() = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn forward(&self, id: i32, command: &Command) -> ProposeResult {
        let Some(addr) = self.voter_addr(id) else {
            return ProposeResult::Failed {
                message: format!("no voter {id}"),
            };
        };
        let data = match serde_json::to_vec(command) {
            Ok(d) => d,
            Err(e) => {
                return ProposeResult::Failed {
                    message: e.to_string(),
                }
            }
        };
        let mut client = match self.clients.get(&addr) {
            Ok(c) => c,
            Err(message) => return ProposeResult::Failed { message },
        };
        let mut req = Request::new(v1::Blob { data });
        req.set_timeout(Duration::from_secs(5));
        match client.propose(req).await {
            Ok(r) => serde_json::from_slice(&r.into_inner().data).unwrap_or_else(|e| {
                ProposeResult::Failed {
                    message: format!("bad answer from {addr}: {e}"),
                }
            }),
            Err(s) => ProposeResult::Failed {
                message: format!("{addr}: {}", s.message()),
            },
        }
    }

    /// Waits until this node's image has applied `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), MetaError> {
        let mut rx = self.image.clone();
        let applied = tokio::time::timeout_at(deadline.into(), async {
            rx.wait_for(|img| img.applied_index >= index).await.is_ok()
        })
        .await;
        match applied {
            Ok(true) => Ok(()),
            _ => Err(MetaError::new(
                codes::REQUEST_TIMED_OUT,
                "the change was committed but this node has not applied it yet",
            )),
        }
    }

    /// A heartbeat, on the active controller. Answers 0, NOT_CONTROLLER or STALE_BROKER_EPOCH.
    async fn on_heartbeat(self: &Arc<Self>, hb: &v1::HeartbeatRequest) -> v1::HeartbeatResponse {
        if !self.is_controller_leader() {
            return v1::HeartbeatResponse {
                error_code: codes::NOT_CONTROLLER as i32,
                leader_id: self.controller_id(),
            };
        }
        let image = self.image();
        let current = image
            .brokers
            .get(&hb.broker_id)
            .filter(|b| b.epoch == hb.broker_epoch && !b.fenced);
        let Some(b) = current else {
            // The epoch is the Raft index of the registration: past this node's image, it was
            // granted by a later controller and this node's view is behind (it was paused, or
            // lost leadership without knowing yet). Send the broker looking for the leader
            // instead of making it register again.
            let newer = hb.broker_epoch > image.applied_index as i64;
            if newer {
                return v1::HeartbeatResponse {
                    error_code: codes::NOT_CONTROLLER as i32,
                    leader_id: -1,
                };
            }
            return v1::HeartbeatResponse {
                error_code: codes::STALE_BROKER_EPOCH as i32,
                leader_id: self.settings.node_id,
            };
        };
        self.sessions.lock().insert(hb.broker_id, Instant::now());
        // One ShutdownBroker proposal in flight per broker, however often it heartbeats.
        if hb.want_shutdown && !b.shutting_down && self.shutdowns.lock().insert(hb.broker_id) {
            let me = self.clone();
            let (id, epoch) = (hb.broker_id, hb.broker_epoch);
            tokio::spawn(async move {
                if let Err(e) = me.propose(Command::ShutdownBroker { id, epoch }).await {
                    tracing::warn!("controlled shutdown of broker {id}: {}", e.message);
                }
                me.shutdowns.lock().remove(&id);
            });
        }
        v1::HeartbeatResponse {
            error_code: 0,
            leader_id: self.settings.node_id,
        }
    }

    /// A broker's heartbeat stream to this controller closed: fence it now (if this node still
    /// leads the quorum and the broker has not registered again since).
    async fn on_session_closed(self: &Arc<Self>, id: i32, epoch: i64) {
        if !self.is_controller_leader() {
            return;
        }
        let live = self
            .image()
            .brokers
            .get(&id)
            .is_some_and(|b| b.epoch == epoch && !b.fenced);
        if live {
            tracing::info!("broker {id} (epoch {epoch}) closed its session: fencing it");
            if let Some(raft) = &self.raft {
                let _ = raft.client_write(Command::FenceBroker { id, epoch }).await;
            }
        }
    }
}

/// Opens the quorum (and, for voters, serves its RPCs on `controller_listener`), waits until
/// the image knows the cluster id, and checks `meta.properties`.
pub async fn start(
    config: &BrokerConfig,
    controller_listener: Option<tokio::net::TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<Metadata>> {
    let log_dir = config.log_dirs[0].clone();
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| anyhow::anyhow!("cannot create log.dirs {}: {e}", log_dir.display()))?;
    let meta_props = read_meta_properties(&log_dir)?;
    if let Some(id) = meta_props.get("node.id") {
        if id != &config.node_id.to_string() {
            anyhow::bail!(
                "{} says node.id={id} but this node is configured with node.id={}: this data directory belongs to another node",
                log_dir.join("meta.properties").display(),
                config.node_id
            );
        }
    }
    let stored_cluster = meta_props.get("cluster.id").cloned();
    if let (Some(stored), Some(configured)) = (&stored_cluster, &config.cluster_id) {
        if stored != configured {
            anyhow::bail!(
                "{} says cluster.id={stored} but cluster.id={configured} is configured: this data directory belongs to another cluster",
                log_dir.join("meta.properties").display()
            );
        }
    }
    let known_cluster = stored_cluster.clone().or_else(|| config.cluster_id.clone());
    let settings = Settings {
        node_id: config.node_id,
        voters: config.quorum_voters.clone(),
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
        heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
        election_timeout: Duration::from_millis(
            config.controller_quorum_election_timeout_ms.max(20),
        ),
        auto_rebalance: config.auto_leader_rebalance_enable,
        imbalance_interval: Duration::from_secs(config.leader_imbalance_check_interval_seconds),
    };
    let single = settings.voters.is_empty();
    let voter = single || settings.voters.iter().any(|v| v.id == config.node_id);
    if config.process_roles.controller && !voter {
        anyhow::bail!(
            "node.id={} has process.roles={} but is not in controller.quorum.voters={}",
            config.node_id,
            config.process_roles,
            voters_string(&settings.voters)
        );
    }
    let dir = log_dir.join(METADATA_DIR);
    let clients = Clients::default();
    let fence_times = FenceTimes::default();
    let incarnation = Uuid::new_v4();
    let (raft, image_rx) = if voter {
        let log_store = LogStore::open(&dir)
            .map_err(|e| anyhow::anyhow!("opening the metadata log in {}: {e}", dir.display()))?;
        let fresh = log_store.is_empty();
        let (sm, image_rx) = StateMachine::open(&dir, fence_times.clone()).map_err(|e| {
            anyhow::anyhow!("opening the metadata snapshot in {}: {e}", dir.display())
        })?;
        let (heartbeat, lease) = raft_timing(settings.election_timeout);
        // openraft's own election timer is off: `elections` decides when to campaign. What is
        // left of its timeouts is the leader lease (`election_timeout_max`): a voter that heard
        // from the leader less than that long ago refuses to vote for anyone else.
        let raft_config = openraft::Config {
            cluster_name: "kairos".into(),
            election_timeout_min: heartbeat.as_millis() as u64 * 2,
            election_timeout_max: lease.as_millis() as u64,
            heartbeat_interval: heartbeat.as_millis() as u64,
            enable_elect: false,
            install_snapshot_timeout: 5000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("raft settings: {e}"))?;
        let network = Network {
            clients: clients.clone(),
        };
        let raft = Raft::new(
            config.node_id as u64,
            Arc::new(raft_config),
            network,
            log_store,
            sm,
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting the metadata quorum: {e}"))?;
        (Some((raft, fresh)), image_rx)
    } else {
        (None, watch::channel(Arc::new(ClusterImage::default())).1)
    };
    let (image_tx, follower_rx) = watch::channel(Arc::new(ClusterImage::default()));
    let metadata = Arc::new(Metadata {
        settings: settings.clone(),
        incarnation,
        raft: raft.as_ref().map(|(r, _)| r.clone()),
        image: if voter { image_rx } else { follower_rx },
        clients,
        leader_hint: Mutex::new(None),
        sessions: Mutex::new(HashMap::new()),
        shutdowns: Mutex::new(Default::default()),
        raft_contact: Mutex::new(Instant::now()),
        fence_times,
    });
    // Serve the controller RPCs first, so peers (and this node's own check) can reach us.
    if let Some(listener) = controller_listener {
        let service = ControllerService {
            metadata: metadata.clone(),
            cluster_hint: known_cluster.clone().unwrap_or_default(),
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let stop = wait_for(shutdown.clone());
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(ControllerServer::new(service))
                .serve_with_incoming_shutdown(incoming, stop)
                .await;
            if let Err(e) = r {
                tracing::error!("controller listener stopped: {e}");
            }
        });
    }
    if !single {
        handshake(&metadata, config, known_cluster.as_deref()).await?;
    }
    match &raft {
        Some((raft, fresh)) => {
            if *fresh {
                let members: BTreeMap<NodeId, BasicNode> = if single {
                    BTreeMap::from([(config.node_id as u64, BasicNode::new(""))])
                } else {
                    settings
                        .voters
                        .iter()
                        .map(|v| (v.id as u64, BasicNode::new(v.addr())))
                        .collect()
                };
                if let Err(e) = raft.initialize(members).await {
                    // Another voter may have initialized first; that is fine.
                    tracing::debug!("raft initialize: {e}");
                }
            }
            // The election clock starts now, not before the handshake (which may wait for peers).
            *metadata.raft_contact.lock() = Instant::now();
            tokio::spawn(elections(metadata.clone(), raft.clone(), shutdown.clone()));
            tokio::spawn(controller_duties(
                metadata.clone(),
                config.cluster_id.clone().or(stored_cluster.clone()),
                shutdown.clone(),
            ));
        }
        None => {
            tokio::spawn(follow_image(metadata.clone(), image_tx, shutdown.clone()));
        }
    }
    // Wait for a quorum: the image names the cluster once a leader has been elected.
    let timeout = Duration::from_millis(config.controller_quorum_startup_timeout_ms);
    let mut rx = metadata.subscribe();
    let ready = tokio::time::timeout(timeout, rx.wait_for(|i| !i.cluster_id.is_empty())).await;
    if ready.is_err() {
        anyhow::bail!(
            "no metadata quorum within controller.quorum.startup.timeout.ms={} (voters {}): a majority of voters must be running and reachable",
            config.controller_quorum_startup_timeout_ms,
            voters_string(&settings.voters)
        );
    }
    let cluster_id = metadata.cluster_id();
    if let Some(stored) = &stored_cluster {
        if stored != &cluster_id {
            anyhow::bail!(
                "{} says cluster.id={stored} but the quorum's cluster id is {cluster_id}: this data directory belongs to another cluster",
                log_dir.join("meta.properties").display()
            );
        }
    } else {
        write_meta_properties(&log_dir, config.node_id, &cluster_id)?;
    }
    Ok(metadata)
}

fn read_meta_properties(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Kafka's KRaft `meta.properties` (version 1).
fn write_meta_properties(dir: &Path, node_id: i32, cluster_id: &str) -> anyhow::Result<()> {
    let text = format!(
        "#\n#Written by kairos\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\ndirectory.id={}\n",
        Uuid::new_v4().simple()
    );
    crate::log::checkpoint::write_atomic(&dir.join("meta.properties"), text.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}/meta.properties: {e}", dir.display()))
}

/// Start-up checks against the other voters (see the module doc).
async fn handshake(
    metadata: &Arc<Metadata>,
    config: &BrokerConfig,
    cluster: Option<&str>,
) -> anyhow::Result<()> {
    let voters = &metadata.settings.voters;
    let ours = voters_string(voters);
    let deadline =
        Instant::now() + Duration::from_millis(config.controller_quorum_startup_timeout_ms);
    let majority = voters.len() / 2 + 1;
    let mut answered: BTreeMap<i32, ()> = BTreeMap::new();
    let mut last_error: BTreeMap<i32, String> = BTreeMap::new();
    let self_voter = voters.iter().any(|v| v.id == config.node_id);
    loop {
        for v in voters {
            if answered.contains_key(&v.id) {
                continue;
            }
            let addr = v.addr();
            let mut client = match metadata.clients.get(&addr) {
                Ok(c) => c,
                Err(e) => anyhow::bail!("controller.quorum.voters: {e}"),
            };
            let mut req = Request::new(v1::HelloRequest {
                node_id: config.node_id,
                cluster_id: cluster.unwrap_or_default().to_string(),
                voters: ours.clone(),
            });
            req.set_timeout(Duration::from_millis(1000));
            match client.hello(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if v.id == config.node_id && r.incarnation != metadata.incarnation.to_string() {
                        anyhow::bail!(
                            "node.id={} is already running at {addr} (another process answered there): duplicate node id",
                            v.id
                        );
                    }
                    if r.node_id != v.id {
                        anyhow::bail!(
                            "controller.quorum.voters says node {} is at {addr}, but node {} answered there",
                            v.id,
                            r.node_id
                        );
                    }
                    if r.voters != ours {
                        anyhow::bail!(
                            "controller.quorum.voters differs: this node has {ours}, node {} has {}",
                            v.id,
                            r.voters
                        );
                    }
                    if let Some(c) = cluster {
                        if !r.cluster_id.is_empty() && r.cluster_id != c {
                            anyhow::bail!(
                                "this data directory belongs to cluster {c} but voter {} belongs to cluster {}",
                                v.id,
                                r.cluster_id
                            );
                        }
                    }
                    answered.insert(v.id, ());
                }
                Err(s) => {
                    if v.id == config.node_id {
                        // Our own listener is up, so nothing answering means the address is not ours.
                        anyhow::bail!(
                            "controller.quorum.voters says this node ({}) is at {addr}, but its controller listener does not answer there: {}",
                            v.id,
                            s.message()
                        );
                    }
                    last_error.insert(v.id, s.message().to_string());
                }
            }
        }
        let reachable = answered.len() + usize::from(!self_voter);
        if reachable >= majority || answered.len() == voters.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = voters
                .iter()
                .filter(|v| !answered.contains_key(&v.id))
                .map(|v| {
                    format!(
                        "{}@{}:{} ({})",
                        v.id,
                        v.host,
                        v.port,
                        last_error
                            .get(&v.id)
                            .map(String::as_str)
                            .unwrap_or("no answer")
                    )
                })
                .collect();
            anyhow::bail!(
                "no quorum within controller.quorum.startup.timeout.ms={}: voters not answering: {}",
                config.controller_quorum_startup_timeout_ms,
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The active controller's periodic work (runs on every voter; acts only while leading).
async fn controller_duties(
    metadata: Arc<Metadata>,
    cluster_id: Option<String>,
    shutdown: watch::Receiver<bool>,
) {
    let tick = Duration::from_millis(100);
    let settings = &metadata.settings;
    // Sessions were held by the previous controller (or by this one before a pause): on taking
    // over, every live broker gets a grace of a few heartbeats to reconnect before it is fenced.
    let grace = (settings.heartbeat_interval * 3).min(settings.session_timeout);
    // The Raft term this node last acted as controller in.
    let mut led_term = None;
    let mut last_rebalance = Instant::now();
    // The session start given to every broker at the takeover, and the end of the grace: until
    // then, a broker not heard from since whose listener refuses connections is down, and is
    // fenced at once.
    let mut seeded = Instant::now();
    let mut grace_ends = None;
    loop {
        let Some((now, gap)) = pace(tick, &shutdown).await else {
            return;
        };
        // A sleep far longer than asked for means this process was paused (SIGSTOP, a stalled
        // machine): the heartbeats it holds are stale, and the brokers may have moved on.
        let paused = gap > settings.session_timeout / 2;
        let term = metadata.controller_term();
        if term.is_none() {
            led_term = None;
            continue;
        }
        let image = metadata.image();
        if led_term != term || paused {
            if paused {
                tracing::info!(
                    "controller duties resumed after a {gap:?} pause: giving every broker a fresh session"
                );
            }
            led_term = term;
            last_rebalance = now;
            seeded = now
                .checked_sub(settings.session_timeout.saturating_sub(grace))
                .unwrap_or(now);
            grace_ends = Some(now + grace);
            let mut sessions = metadata.sessions.lock();
            sessions.clear();
            for b in image.brokers.values().filter(|b| !b.fenced) {
                sessions.insert(b.id, seeded);
            }
        }
        if grace_ends.is_some_and(|end| now <= end) {
            let silent: Vec<i32> = {
                let sessions = metadata.sessions.lock();
                image
                    .brokers
                    .values()
                    .filter(|b| !b.fenced && b.id != settings.node_id)
                    .filter(|b| sessions.get(&b.id).is_none_or(|seen| *seen <= seeded))
                    .map(|b| b.id)
                    .collect()
            };
            for id in refusing(&image, &silent).await {
                let Some(b) = image.brokers.get(&id) else {
                    continue;
                };
                tracing::info!(
                    "broker {id} has not heartbeated since this controller took over and its listener refuses connections: fencing it"
                );
                let epoch = b.epoch;
                fence(&metadata, id, epoch).await;
            }
        }
        if image.cluster_id.is_empty() {
            let id = cluster_id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            let _ = metadata.propose(Command::SetClusterId { id }).await;
            continue;
        }
        let expired: Vec<(i32, i64)> = {
            let mut sessions = metadata.sessions.lock();
            image
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .filter(|b| {
                    let seen = *sessions.entry(b.id).or_insert(now);
                    now.duration_since(seen) > settings.session_timeout
                })
                .map(|b| (b.id, b.epoch))
                .collect()
        };
        for (id, epoch) in expired {
            tracing::info!(
                "broker {id} sent no heartbeat for broker.session.timeout.ms={}: fencing it",
                settings.session_timeout.as_millis()
            );
            fence(&metadata, id, epoch).await;
        }
        if settings.auto_rebalance
            && now.duration_since(last_rebalance) >= settings.imbalance_interval
        {
            last_rebalance = now;
            let imbalanced: Vec<(String, i32)> = image
                .topics
                .values()
                .flat_map(|t| {
                    t.assignment.iter().enumerate().filter_map(|(i, p)| {
                        let preferred = *p.replicas.first()?;
                        let eligible = p.leader != preferred && image.may_lead(p, preferred);
                        eligible.then(|| (t.name.clone(), i as i32))
                    })
                })
                .collect();
            if !imbalanced.is_empty() {
                tracing::info!(
                    "moving {} partition(s) back to their preferred leader",
                    imbalanced.len()
                );
                let _ = metadata
                    .propose(Command::ElectLeaders {
                        partitions: imbalanced,
                        unclean: false,
                    })
                    .await;
            }
        }
    }
}

/// Sleeps `tick` unless shutting down (then `None`); the time after it and how long the sleep
/// really took (far longer than `tick` when the process was paused).
async fn pace(tick: Duration, shutdown: &watch::Receiver<bool>) -> Option<(Instant, Duration)> {
    if *shutdown.borrow() {
        return None;
    }
    let slept = Instant::now();
    tokio::time::sleep(tick).await;
    let now = Instant::now();
    Some((now, now.duration_since(slept)))
}

async fn fence(metadata: &Metadata, id: i32, epoch: i64) {
    let started = Instant::now();
    if let Err(e) = metadata.propose(Command::FenceBroker { id, epoch }).await {
        tracing::warn!(
            "fencing broker {id} (epoch {epoch}) failed after {:?}: {}",
            started.elapsed(),
            e.message
        );
    }
}

/// The Raft heartbeat interval and leader lease for `controller.quorum.election.timeout.ms`:
/// a tenth of it (at least 10 ms), and three heartbeats.
fn raft_timing(election: Duration) -> (Duration, Duration) {
    let heartbeat = (election / 10).max(Duration::from_millis(10));
    (heartbeat, heartbeat * 3)
}

/// When this voter campaigns for the quorum's leadership (openraft's own timer is off).
///
/// - Without word from a leader for one and a half to two `controller.quorum.election.timeout.ms`
///   (drawn again after each campaign, so that voters rarely campaign together), as openraft's
///   timer would with a lease of one election timeout: this covers a leader that is paused or
///   cut off. (Brokers still heartbeating to a paused controller move to the new one within a
///   heartbeat of its election; see `remote_heartbeats`.)
/// - A leader whose controller listener refuses connections has no process any more. Then the
///   wait is only the leader lease (the other voters refuse to vote before it ends) and a
///   heartbeat, and the surviving voters take turns by id, two heartbeats apart, so that one
///   campaign wins without a split vote: a SIGKILLed controller is replaced in about half a
///   second instead of one and a half to two.
/// - A sleep far longer than asked for means this process was paused: the silence it saw is its
///   own, so the clock starts again (a resumed voter would otherwise unseat a healthy leader).
async fn elections(
    metadata: Arc<Metadata>,
    raft: Raft<TypeConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let me = metadata.settings.node_id as u64;
    let election = metadata.settings.election_timeout;
    let (heartbeat, lease) = raft_timing(election);
    let tick = (heartbeat / 4).max(Duration::from_millis(5));
    let draw = || election + election.mul_f64(0.5 + rand::random::<f64>() / 2.0);
    let mut deadline = draw();
    // The leader found gone, and when.
    let mut dead: Option<(u64, Instant)> = None;
    let mut campaigned: Option<Instant> = None;
    let mut probed = Instant::now();
    loop {
        let Some((now, gap)) = pace(tick, &shutdown).await else {
            return;
        };
        let (state, leader, mut voters) = {
            let m = raft.metrics();
            let m = m.borrow();
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (m.state, m.current_leader, voters)
        };
        if state == ServerState::Leader || gap > election / 2 {
            *metadata.raft_contact.lock() = now;
            dead = None;
            continue;
        }
        let heard = *metadata.raft_contact.lock();
        let quiet = now.duration_since(campaigned.map_or(heard, |c| c.max(heard)));
        if voters.len() <= 1 {
            // The only voter: no one to wait for.
            if voters == [me] && state != ServerState::Candidate && quiet > heartbeat {
                campaigned = Some(now);
                campaign(&raft, "the only voter").await;
            }
            continue;
        }
        let leader = leader.filter(|l| *l != me);
        // Word from a leader, or a vote granted, since the leader was found gone: another voter
        // is taking over, and this one goes back to the full timeout.
        if dead.is_some_and(|(l, found)| heard > found || leader.is_some_and(|now| now != l)) {
            dead = None;
        }
        if let (None, Some(l)) = (dead, leader) {
            if quiet >= heartbeat * 2 && now.duration_since(probed) >= heartbeat {
                probed = now;
                if let Some(addr) = metadata.voter_addr(l as i32) {
                    if refuses(&addr).await {
                        tracing::info!(
                            "controller {l} is silent for {quiet:?} and its listener {addr} refuses connections"
                        );
                        dead = Some((l, now));
                    }
                }
            }
        }
        let due = match dead {
            Some((l, _)) => {
                voters.retain(|v| *v != l);
                voters.sort_unstable();
                let turn = voters.iter().position(|v| *v == me).unwrap_or(0) as u32;
                lease + heartbeat + heartbeat * 2 * turn
            }
            None => deadline,
        };
        if quiet >= due {
            let why = match dead {
                Some((l, _)) => format!("controller {l} is gone"),
                None => format!("no word from a controller for {quiet:?}"),
            };
            // A campaign on a gone leader that does not win (a voter's lease ran a little
            // longer) is tried again on the same schedule, in a higher term.
            campaigned = Some(now);
            campaign(&raft, &why).await;
            deadline = draw();
        }
    }
}

async fn campaign(raft: &Raft<TypeConfig>, why: &str) {
    tracing::info!("campaigning for the metadata quorum's leadership: {why}");
    if let Err(e) = raft.trigger().elect().await {
        tracing::warn!("cannot campaign: {e}");
    }
}

/// Whether `addr` refuses a TCP connection (no process listens; a paused one still accepts),
/// waiting at most 200 ms.
async fn refuses(addr: &str) -> bool {
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
    matches!(r, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// A non-voter follows the image from any voter.
async fn follow_image(
    metadata: Arc<Metadata>,
    image_tx: watch::Sender<Arc<ClusterImage>>,
    shutdown: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    let stop = wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        let voters = &metadata.settings.voters;
        let Some(v) = voters.get(next % voters.len().max(1)) else {
            return;
        };
        next += 1;
        let applied = image_tx.borrow().applied_index;
        let stream = match metadata.clients.get(&v.addr()) {
            Ok(mut client) => tokio::select! {
                r = client.watch_image(v1::WatchRequest { applied_index: applied }) => r.ok(),
                _ = &mut stop => return,
            },
            Err(e) => {
                tracing::warn!("voter {}: {e}", v.id);
                None
            }
        };
        if let Some(stream) = stream {
            let mut stream = stream.into_inner();
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = &mut stop => return,
                };
                match msg {
                    Ok(Some(blob)) => match serde_json::from_slice::<ClusterImage>(&blob.data) {
                        Ok(image) => {
                            let before = image_tx.borrow().clone();
                            metadata.fence_times.observe(&before, &image);
                            image_tx.send_replace(Arc::new(image));
                        }
                        Err(e) => tracing::warn!("bad image from voter {}: {e}", v.id),
                    },
                    _ => break,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut stop => return,
        }
    }
}

/// Of `ids`, the brokers whose Kafka listener refuses a TCP connection (the process is gone;
/// a paused process still accepts). Probed together, each for at most 200 ms.
async fn refusing(image: &ClusterImage, ids: &[i32]) -> Vec<i32> {
    let probes = ids.iter().filter_map(|id| {
        let b = image.brokers.get(id)?;
        let addr = b.addr();
        let id = *id;
        Some(async move { refuses(&addr).await.then_some(id) })
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// This broker's session with the controller: register, heartbeat, register again when fenced,
/// and on `shutdown` a controlled shutdown. Returns when the controlled shutdown is done (or
/// `controlled.shutdown.timeout` passed).
pub async fn broker_session(
    metadata: Arc<Metadata>,
    registration: Command,
    registered: watch::Sender<i64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = metadata.settings.node_id;
    let mut rotation = 0usize;
    'register: loop {
        if *shutdown.borrow() {
            return;
        }
        let epoch = match metadata.propose(registration.clone()).await {
            Ok(Reply::BrokerEpoch(e)) => e,
            // No quorum yet: try again soon.
            Err(e) if e.code == codes::REQUEST_TIMED_OUT => {
                tracing::debug!("broker registration: {}", e.message);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            refused => {
                tracing::warn!("broker registration refused: {refused:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tracing::info!("broker {id} registered with epoch {epoch}");
        registered.send_replace(epoch);
        // Heartbeats, to the local controller in-process or to the leader over a stream.
        let mut controller = metadata.controller_id();
        loop {
            let want_shutdown = *shutdown.borrow();
            if want_shutdown && leads_nothing(&metadata.image(), id) {
                // Leadership has moved; the stream closing fences us for good.
                return;
            }
            if controller < 0 && metadata.raft.is_none() {
                // A non-voter knows no controller: ask the voters in turn.
                controller = next_voter(&metadata, &mut rotation);
            }
            if controller == id || controller < 0 {
                let hb = v1::HeartbeatRequest {
                    broker_id: id,
                    broker_epoch: epoch,
                    want_shutdown,
                };
                let resp = metadata.on_heartbeat(&hb).await;
                match resp.error_code as i16 {
                    0 => {}
                    codes::STALE_BROKER_EPOCH => {
                        tracing::info!(
                            "broker epoch {epoch} is no longer current: registering again"
                        );
                        continue 'register;
                    }
                    _ => controller = resp.leader_id,
                }
                let wait = if controller < 0 || controller != id {
                    Duration::from_millis(50)
                } else {
                    metadata.settings.heartbeat_interval
                };
                // Once shutting down, `changed` has nothing more to say (and errs at once when
                // the sender is gone): only the timer paces the loop.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed(), if !want_shutdown => {}
                }
                if controller < 0 {
                    controller = metadata.controller_id();
                }
                continue;
            }
            match remote_heartbeats(&metadata, controller, epoch, &mut shutdown).await {
                RemoteOutcome::Stale => {
                    tracing::info!(
                        "controller {controller} says broker epoch {epoch} is no longer current: registering again"
                    );
                    continue 'register;
                }
                RemoteOutcome::Leader(l) => {
                    tracing::debug!("heartbeats: controller {controller} names {l} the leader");
                    controller = l
                }
                RemoteOutcome::Done => return,
                RemoteOutcome::Lost => {
                    tracing::debug!("heartbeats: lost controller {controller}");
                    // A non-voter learns of a new controller only by asking: forget the lost one.
                    let lost = controller;
                    {
                        let mut hint = metadata.leader_hint.lock();
                        if *hint == Some(lost) {
                            *hint = None;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    controller = metadata.controller_id();
                    if controller == lost {
                        // Still named (a voter that has not seen the election yet): ask another.
                        controller = next_voter(&metadata, &mut rotation);
                    }
                }
            }
        }
    }
}

/// The next voter to ask who the controller is (a voter that does not lead names the leader).
fn next_voter(metadata: &Metadata, rotation: &mut usize) -> i32 {
    let v = &metadata.settings.voters;
    *rotation += 1;
    v.get(*rotation % v.len().max(1)).map_or(-1, |v| v.id)
}

fn leads_nothing(image: &ClusterImage, id: i32) -> bool {
    image.topics.values().all(|t| {
        t.assignment
            .iter()
            .all(|p| p.leader != id || p.replicas.len() == 1)
    })
}

enum RemoteOutcome {
    Stale,
    Leader(i32),
    Done,
    Lost,
}

async fn remote_heartbeats(
    metadata: &Arc<Metadata>,
    controller: i32,
    epoch: i64,
    shutdown: &mut watch::Receiver<bool>,
) -> RemoteOutcome {
    let id = metadata.settings.node_id;
    let Some(addr) = metadata.voter_addr(controller) else {
        return RemoteOutcome::Lost;
    };
    let Ok(mut client) = metadata.clients.get(&addr) else {
        return RemoteOutcome::Lost;
    };
    let (tx, rx) = mpsc::channel(4);
    let first = v1::HeartbeatRequest {
        broker_id: id,
        broker_epoch: epoch,
        want_shutdown: *shutdown.borrow(),
    };
    if tx.send(first).await.is_err() {
        return RemoteOutcome::Lost;
    }
    let mut responses = match client.heartbeat(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(_) => return RemoteOutcome::Lost,
    };
    // The controller this node's Raft named when the stream opened (an error answer may have
    // sent it to another one, which is no reason to go back).
    let named = metadata.controller_id();
    loop {
        // Up to a session timeout for the answer, but a voter that sees another controller
        // elected meanwhile goes to it at once: a paused controller keeps the stream open, and
        // the new one fences brokers that do not heartbeat to it within a few heartbeats.
        let deadline = Instant::now() + metadata.settings.session_timeout;
        let resp = loop {
            let wait = metadata
                .settings
                .heartbeat_interval
                .min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, responses.message()).await {
                Ok(Ok(Some(r))) => break r,
                Ok(_) => return RemoteOutcome::Lost,
                Err(_) => {
                    let now = metadata.controller_id();
                    if metadata.raft.is_some() && now >= 0 && now != controller && now != named {
                        return RemoteOutcome::Leader(now);
                    }
                    if Instant::now() >= deadline {
                        return RemoteOutcome::Lost;
                    }
                }
            }
        };
        match resp.error_code as i16 {
            0 => {}
            codes::STALE_BROKER_EPOCH => return RemoteOutcome::Stale,
            _ => {
                *metadata.leader_hint.lock() = Some(resp.leader_id).filter(|l| *l >= 0);
                return if resp.leader_id >= 0 && resp.leader_id != controller {
                    RemoteOutcome::Leader(resp.leader_id)
                } else {
                    RemoteOutcome::Lost
                };
            }
        }
        let want_shutdown = *shutdown.borrow();
        if want_shutdown && leads_nothing(&metadata.image(), id) {
            return RemoteOutcome::Done;
        }
        let wait = if want_shutdown {
            Duration::from_millis(50)
        } else {
            metadata.settings.heartbeat_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed(), if !want_shutdown => {}
        }
        let hb = v1::HeartbeatRequest {
            broker_id: id,
            broker_epoch: epoch,
            want_shutdown: *shutdown.borrow(),
        };
        if tx.send(hb).await.is_err() {
            return RemoteOutcome::Lost;
        }
    }
}

/// The controller RPCs (see `proto/kairos/controller/v1/controller.proto`).
struct ControllerService {
    metadata: Arc<Metadata>,
    /// This node's cluster id before the image has one (from meta.properties).
    cluster_hint: String,
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn blob<T: Serialize>(v: &T) -> Result<Response<v1::Blob>, Status> {
    serde_json::to_vec(v)
        .map(|data| Response::new(v1::Blob { data }))
        .map_err(|e| Status::internal(e.to_string()))
}

type BoxStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

impl ControllerService {
    fn raft(&self) -> Result<&Raft<TypeConfig>, Status> {
        self.metadata
            .raft
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this node is not a voter"))
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn append_entries(
        &self,
        request: Request<v1::Blob>,
    ) -> Result<Response<v1::Blob>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            serde_json::from_slice(&request.into_inner().data).map_err(bad)?;
        let r = self.raft()?.append_entries(req).await;
        // A leader this node accepts (a stale one is answered HigherVote).
        if matches!(&r, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
            *self.metadata.raft_contact.lock() = Instant::now();
        }
        blob(&r)
    }

    async fn vote(&self, request: Request<v1::Blob>) -> Result<Response<v1::Blob>, Status> {
        let req: VoteRequest<NodeId> =
            serde_json::from_slice(&request.into_inner().data).map_err(bad)?;
        let r = self.raft()?.vote(req).await;
        if matches!(&r, Ok(v) if v.vote_granted) {
            *self.metadata.raft_contact.lock() = Instant::now();
        }
        blob(&r)
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::Blob>,
    ) -> Result<Response<v1::Blob>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> =
            serde_json::from_slice(&request.into_inner().data).map_err(bad)?;
        let sent_by = req.vote;
        let r = self.raft()?.install_snapshot(req).await;
        if matches!(&r, Ok(a) if a.vote == sent_by) {
            *self.metadata.raft_contact.lock() = Instant::now();
        }
        blob(&r)
    }

    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        let req = request.into_inner();
        let image_cluster = self.metadata.cluster_id();
        let cluster_id = if image_cluster.is_empty() {
            self.cluster_hint.clone()
        } else {
            image_cluster
        };
        tracing::debug!(
            "hello from node {} (cluster {:?})",
            req.node_id,
            req.cluster_id
        );
        Ok(Response::new(v1::HelloResponse {
            node_id: self.metadata.settings.node_id,
            cluster_id,
            voters: voters_string(&self.metadata.settings.voters),
            incarnation: self.metadata.incarnation.to_string(),
        }))
    }

    async fn propose(&self, request: Request<v1::Blob>) -> Result<Response<v1::Blob>, Status> {
        let command: Command = serde_json::from_slice(&request.into_inner().data).map_err(bad)?;
        blob(&write_local(self.raft()?, command).await)
    }

    type HeartbeatStream = BoxStream<v1::HeartbeatResponse>;

    async fn heartbeat(
        &self,
        request: Request<Streaming<v1::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let metadata = self.metadata.clone();
        tokio::spawn(async move {
            let mut session = None;
            while let Ok(Some(hb)) = inbound.message().await {
                let resp = metadata.on_heartbeat(&hb).await;
                if resp.error_code == 0 {
                    session = Some((hb.broker_id, hb.broker_epoch));
                }
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            if let Some((id, epoch)) = session {
                metadata.on_session_closed(id, epoch).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchImageStream = BoxStream<v1::Blob>;

    async fn watch_image(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchImageStream>, Status> {
        let known = request.into_inner().applied_index;
        let mut rx = self.metadata.subscribe();
        let (tx, out) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut sent = known;
            loop {
                let image = rx.borrow_and_update().clone();
                if image.applied_index != sent || sent == 0 {
                    sent = image.applied_index;
                    let Ok(data) = serde_json::to_vec(&*image) else {
                        return;
                    };
                    if tx.send(Ok(v1::Blob { data })).await.is_err() {
                        return;
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

/// openraft's network: one lazily connected tonic channel per peer.
struct Network {
    clients: Clients,
}

struct Peer {
    target: NodeId,
    client: Option<ControllerClient<Channel>>,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Peer {
            target,
            client: self.clients.get(&node.addr).ok(),
            addr: node.addr.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// The Raft RPCs a peer serves.
#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Peer {
    /// One Raft RPC to this peer; an error the peer's Raft answered is a `RemoteError`.
    async fn call<Req: Serialize, Resp: for<'de> Deserialize<'de>, E>(
        &mut self,
        which: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        E: std::error::Error + for<'de> Deserialize<'de>,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!("bad address {}", self.addr)),
            )));
        };
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(v1::Blob { data });
        request.set_timeout(option.hard_ttl());
        let result = match which {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let blob = result.map_err(|s| {
            let e = std::io::Error::other(format!("{}: {}", self.addr, s.message()));
            match s.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&blob.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
