//! Wiring: the broker's shared state and `run`, the one place tasks are started and stopped.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use parking_lot::Mutex;

use crate::config::BrokerConfig;
use crate::group::{GroupConfig, GroupCoordinator};
use crate::metadata::quorum::Metadata;
use crate::metadata::{codes, ClusterImage, Command, MetaError, Reply, TopicInfo};
use crate::partition::{now_ms, Partition, ReplicaManager};
use crate::producer_ids::ProducerIdAllocator;
use crate::shutdown::wait_for;

/// Everything a request handler may reach.
pub struct Broker {
    pub config: BrokerConfig,
    /// The cluster image and metadata writes (the Raft quorum).
    pub topics: Arc<Metadata>,
    pub replicas: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub producer_ids: ProducerIdAllocator,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub delays: Arc<crate::time::delay::DelayEngine>,
    /// The image the hosted replicas were last made to match.
    synced: Mutex<Option<Arc<ClusterImage>>>,
    /// A follower caught up and may join an ISR: the ISR task looks at once.
    pub isr_wanted: tokio::sync::Notify,
}

fn topic_reply(reply: Reply) -> Result<TopicInfo, MetaError> {
    match reply {
        Reply::Topic(t) => Ok(t),
        other => Err(MetaError::new(
            codes::INVALID_REQUEST,
            format!("unexpected metadata reply {other:?}"),
        )),
    }
}

impl Broker {
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The partition if this broker leads it; otherwise NOT_LEADER_OR_FOLLOWER when it exists in
    /// the cluster (clients refresh metadata and retry) or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn leader_replica(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<crate::partition::Partition>, i16> {
        match self.replicas.get(topic, index) {
            Some(p) if p.is_leader() => Ok(p),
            _ if self.topics.image().partition(topic, index).is_some() => {
                Err(codes::NOT_LEADER_OR_FOLLOWER)
            }
            _ => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
        }
    }

    /// Makes the hosted replicas match the current image (blocking file work: open, create,
    /// delete). Idempotent; serialized.
    pub fn sync_replicas(&self) {
        let mut last = self.synced.lock();
        let image = self.topics.image();
        if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &image)) {
            return;
        }
        let outcome = self
            .replicas
            .sync(last.as_deref(), &image, self.config.node_id);
        for e in &outcome.errors {
            tracing::error!("opening a partition: {}", e.message);
        }
        // Group coordination follows the leadership of `__consumer_offsets` partitions.
        let offsets = crate::metadata::OFFSETS_TOPIC;
        for (topic, index, role) in &outcome.roles {
            if topic != offsets {
                continue;
            }
            match role {
                crate::partition::RoleChange::BecameLeader => {
                    if let Err(code) = self.groups.load_partition(*index) {
                        tracing::error!("loading {offsets}-{index} failed with error {code}");
                    }
                }
                _ => self.groups.unload_partition(*index),
            }
        }
        for (topic, index) in &outcome.dropped {
            if topic == offsets {
                self.groups.unload_partition(*index);
            }
        }
        *last = Some(image);
    }

    /// The leader of `topic`-`partition` and its Kafka listener's address.
    pub fn leader_addr(&self, topic: &str, partition: i32) -> Result<(i32, String), String> {
        let image = self.topics.image();
        let leader = image
            .partition(topic, partition)
            .map(|p| p.leader)
            .ok_or_else(|| format!("{topic}-{partition} does not exist"))?;
        let info = image
            .brokers
            .get(&leader)
            .ok_or_else(|| format!("{topic}-{partition} has no live leader (leader {leader})"))?;
        Ok((leader, info.addr()))
    }

    /// Commits `command` and makes the hosted replicas match the image it produced.
    async fn apply(&self, command: Command) -> Result<Reply, MetaError> {
        let reply = self.topics.propose(command).await?;
        tokio::task::block_in_place(|| self.sync_replicas());
        Ok(reply)
    }

    async fn write(&self, command: Command) -> Result<TopicInfo, MetaError> {
        topic_reply(self.apply(command).await?)
    }

    /// Creates a topic (CreateTopics, auto-creation) and opens the partitions hosted here.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: std::collections::BTreeMap<String, String>,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicInfo, MetaError> {
        self.write(Command::CreateTopic {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions,
            replication_factor,
            configs,
            assignment,
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<TopicInfo, MetaError> {
        self.write(Command::DeleteTopic {
            name: name.to_string(),
        })
        .await
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicInfo, MetaError> {
        self.write(Command::CreatePartitions {
            name: name.to_string(),
            count,
            assignment,
        })
        .await
    }

    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: std::collections::BTreeMap<String, String>,
    ) -> Result<TopicInfo, MetaError> {
        self.write(Command::SetConfigs {
            name: name.to_string(),
            configs,
        })
        .await
    }

    /// Sets the complete dynamic config set of broker `resource` ("" for all brokers).
    pub async fn set_broker_configs(
        &self,
        resource: &str,
        configs: std::collections::BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        self.apply(Command::SetBrokerConfigs {
            resource: resource.to_string(),
            configs,
        })
        .await
        .map(|_| ())
    }

    /// `__consumer_offsets`, created on first need (FindCoordinator) with
    /// `offsets.topic.replication.factor` capped at the brokers the cluster has.
    pub async fn ensure_offsets_topic(&self) -> Result<(), MetaError> {
        if self.topics.get(crate::metadata::OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let image = self.topics.image();
        let expected = self
            .config
            .quorum_voters
            .len()
            .max(image.brokers.len())
            .max(1);
        let rf = (self.config.offsets_topic_replication_factor.max(1) as usize).min(expected);
        if image.live_brokers().count() < rf {
            return Err(MetaError::new(
                codes::COORDINATOR_NOT_AVAILABLE,
                format!(
                    "waiting for {rf} live brokers to create {}",
                    crate::metadata::OFFSETS_TOPIC
                ),
            ));
        }
        let mut configs = std::collections::BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
        match self
            .create_topic(
                crate::metadata::OFFSETS_TOPIC,
                self.config.offsets_topic_num_partitions,
                rf as i16,
                configs,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == codes::TOPIC_ALREADY_EXISTS => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Opens the data directory (recovering logs after an unclean stop) for the partitions the
/// image assigns here and loads committed offsets: a broker ready to serve, no task running yet.
pub fn open(
    config: &BrokerConfig,
    metadata: Arc<Metadata>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Arc<Broker>> {
    for key in config.unknown_keys() {
        tracing::warn!("unknown configuration key {key} (ignored)");
    }
    let replicas = Arc::new(
        ReplicaManager::open(config, metrics.clone()).map_err(|e| anyhow::anyhow!(e.message))?,
    );
    let offsets_log = Arc::new(crate::offsets_log::PartitionOffsetsLog::new(
        replicas.clone(),
    ));
    // Offsets may be committed for any partition of the cluster, hosted here or not.
    let image = metadata.clone();
    let partition_exists = Arc::new(move |topic: &str, partition: i32| {
        image.image().partition(topic, partition).is_some()
    });
    let groups = GroupCoordinator::new(
        GroupConfig {
            offsets_topic_num_partitions: config.offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: config.group_min_session_timeout_ms,
            group_max_session_timeout_ms: config.group_max_session_timeout_ms,
            offsets_retention_minutes: config.offsets_retention_minutes,
            offset_metadata_max_bytes: config.offset_metadata_max_bytes,
            node_id: config.node_id,
        },
        offsets_log,
        partition_exists,
    );
    let broker = Arc::new(Broker {
        config: config.clone(),
        topics: metadata,
        replicas,
        groups: groups.clone(),
        producer_ids: ProducerIdAllocator::default(),
        metrics,
        delays: Default::default(),
        synced: Mutex::new(None),
        isr_wanted: tokio::sync::Notify::new(),
    });
    broker.sync_replicas();
    Ok(broker)
}

/// This node's broker registration.
fn registration(config: &BrokerConfig, metadata: &Metadata) -> Command {
    Command::RegisterBroker {
        id: config.node_id,
        incarnation: metadata.incarnation(),
        host: config.advertised_host.clone(),
        port: config.advertised_port,
        rack: config.broker_rack.clone(),
        admin_port: config
            .admin_listener
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .filter(|port| *port != 0),
    }
}

/// A single node's config for unit tests: data in `dir`, `offsets_partitions` partitions of
/// `__consumer_offsets`, defaults otherwise.
#[cfg(test)]
pub fn test_config(dir: &std::path::Path, offsets_partitions: u32) -> BrokerConfig {
    BrokerConfig::load(
        None,
        &[
            format!("log.dirs={}", dir.display()),
            format!("offsets.topic.num.partitions={offsets_partitions}"),
        ],
    )
    .expect("a test config")
}

/// A single-node broker with its one-node quorum, registered, no listener and no background
/// task: for unit tests of request handling.
#[cfg(test)]
pub async fn open_standalone(
    config: &BrokerConfig,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Arc<Broker>> {
    let (stop, shutdown) = watch::channel(false);
    let metadata = crate::metadata::quorum::start(config, None, shutdown).await?;
    // The quorum's duties run until the sender goes; this broker lives as long as the test.
    std::mem::forget(stop);
    let reply = metadata.propose(registration(config, &metadata)).await?;
    anyhow::ensure!(
        matches!(reply, Reply::BrokerEpoch(_)),
        "registration: {reply:?}"
    );
    let config = config.clone();
    tokio::task::spawn_blocking(move || open(&config, metadata, metrics)).await?
}

/// Keeps the hosted replicas in step with every new image.
async fn follow_image(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let mut rx = broker.topics.subscribe();
    let stop = wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = &mut stop => return,
        }
        let b = broker.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || b.sync_replicas()).await {
            tracing::warn!("applying the cluster image failed: {e}");
        }
    }
}

/// Opens the broker and serves until `shutdown` flips to true. Returns after every task
/// stopped and logs were flushed (a clean shutdown).
pub async fn run(
    config: BrokerConfig,
    listener: Option<TcpListener>,
    external_shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Everything stops on `shutdown`, which flips only after a controlled shutdown (leadership
    // moved away) once `external_shutdown` (SIGTERM) flipped.
    let (stop_tx, shutdown) = watch::channel(false);
    let metrics = Arc::new(crate::metrics::Metrics::new(|k| {
        crate::protocol::supported_versions(k).is_some()
    })?);
    // The health endpoints come up first, so probes see "loading" during log recovery.
    let http_state = Arc::new(crate::http::HttpState::new(metrics.clone()));
    let metrics_listener = TcpListener::bind(&config.metrics_listener)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on metrics.listener {}: {e}",
                config.metrics_listener
            )
        })?;
    let http_task = tokio::spawn(crate::http::serve(
        metrics_listener,
        http_state.clone(),
        wait_for(shutdown.clone()),
    ));
    let controller_listener = match config.controller_listener {
        Some(addr) if !config.quorum_voters.is_empty() && config.process_roles.controller => {
            Some(TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on the controller listener {addr}: {e}")
            })?)
        }
        _ => None,
    };
    let metadata =
        crate::metadata::quorum::start(&config, controller_listener, shutdown.clone()).await?;
    http_state.set_metadata(metadata.clone());
    let Some(listener) = listener else {
        // process.roles=controller: the quorum, the controller's duties and /metrics; no Kafka
        // listener, no registration as a broker, no partitions.
        tracing::info!(
            "kairos controller {} serving the metadata quorum (process.roles=controller)",
            config.node_id
        );
        http_state.set_ready();
        wait_for(external_shutdown).await;
        let _ = stop_tx.send(true);
        let _ = http_task.await;
        tracing::info!("kairos controller {} stopped cleanly", config.node_id);
        return Ok(());
    };
    // Register with the controller: the image then holds everything committed before us.
    let (registered_tx, mut registered) = watch::channel(-1i64);
    let session = tokio::spawn(crate::metadata::quorum::broker_session(
        metadata.clone(),
        registration(&config, &metadata),
        registered_tx,
        // SIGTERM starts the controlled shutdown; the session ends when leadership has moved.
        external_shutdown.clone(),
    ));
    let mut early_stop = external_shutdown.clone();
    tokio::select! {
        _ = registered.wait_for(|e| *e >= 0) => {}
        _ = early_stop.wait_for(|s| *s) => return Ok(()),
    }
    let open_config = config.clone();
    let broker =
        tokio::task::spawn_blocking(move || open(&open_config, metadata, metrics)).await??;
    http_state.set_broker(broker.clone());
    let groups = broker.groups.clone();
    let log_dir = config.log_dirs[0].clone();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(groups.clone().run(wait_for(shutdown.clone())));
    tasks.spawn(follow_image(broker.clone(), shutdown.clone()));
    tasks.spawn(cleaner(broker.clone(), shutdown.clone()));
    tasks.spawn(flusher(broker.clone(), shutdown.clone()));
    tasks.spawn(maintain_isr(broker.clone(), shutdown.clone()));
    tasks.spawn(checkpoint_high_watermarks(broker.clone(), shutdown.clone()));
    tasks.spawn(crate::time::delay::run(broker.clone(), shutdown.clone()));
    if let Some(url) = config.retry_redis_url.clone() {
        let b = broker.clone();
        tasks.spawn(async move {
            let ca = b.config.retry_redis_tls_ca_file.clone();
            crate::time::retry_redis::probe(&url, ca.as_deref(), &b.metrics).await
        });
    }
    let admin_listener = TcpListener::bind(&config.admin_listener)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on admin.listener {}: {e}",
                config.admin_listener
            )
        })?;
    tasks.spawn(crate::admin::serve(
        admin_listener,
        broker.clone(),
        wait_for(shutdown.clone()),
    ));
    let dispatcher = Arc::new(crate::protocol::Dispatcher::new(broker.clone()));
    let net_config = crate::net::NetConfig {
        request_bytes_max: config.socket_request_max_bytes,
        connections_max: config.max_connections,
    };
    tracing::info!(
        "kairos broker {} listening on {} (advertised {}:{}), data in {}",
        config.node_id,
        listener.local_addr()?,
        config.advertised_host,
        config.advertised_port,
        log_dir.display()
    );
    http_state.set_ready();
    // SIGTERM: a controlled shutdown moves leadership away while requests are still served.
    let net = tokio::spawn(crate::net::run(
        listener,
        dispatcher,
        net_config,
        shutdown.clone(),
    ));
    wait_for(external_shutdown.clone()).await;
    if tokio::time::timeout(std::time::Duration::from_secs(30), session)
        .await
        .is_err()
    {
        tracing::warn!("controlled shutdown did not finish in 30 s; stopping anyway");
    }
    let _ = stop_tx.send(true);
    let _ = net.await;
    while tasks.join_next().await.is_some() {}
    let _ = http_task.await;
    broker.replicas.shutdown();
    tracing::info!("kairos broker {} stopped cleanly", config.node_id);
    Ok(())
}

/// Runs `step` every `period_ms` off the async workers (the steps do file I/O), until
/// `shutdown`.
async fn every(
    name: &'static str,
    broker: Arc<Broker>,
    period_ms: u64,
    shutdown: watch::Receiver<bool>,
    step: impl Fn(&Broker) + Send + Sync + 'static,
) {
    let step = Arc::new(step);
    let period = std::time::Duration::from_millis(period_ms.max(10));
    let stop = wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut stop => return,
        }
        let (b, step) = (broker.clone(), step.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || step(&b)).await {
            tracing::warn!("{name} task failed: {e}");
        }
    }
}

/// [`every`], stepping each hosted partition with the same `now`.
async fn every_partition(
    name: &'static str,
    broker: Arc<Broker>,
    period_ms: u64,
    shutdown: watch::Receiver<bool>,
    step: fn(&Partition, i64),
) {
    every(name, broker, period_ms, shutdown, move |b| {
        let now = now_ms();
        b.replicas.all().iter().for_each(|p| step(p, now))
    })
    .await
}

/// Retention and compaction every `log.retention.check.interval.ms`.
async fn cleaner(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period_ms = broker.config.log_retention_check_interval_ms;
    every_partition("cleaner", broker, period_ms, shutdown, Partition::clean).await
}

/// Time-based flushing (`flush.ms` / `log.flush.interval.ms`) of logs that went idle, every
/// `log.flush.scheduler.interval.ms` (default 1 s here; Kafka leaves it unset).
async fn flusher(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period_ms = broker.config.log_flush_scheduler_interval_ms;
    every_partition(
        "flusher",
        broker,
        period_ms,
        shutdown,
        Partition::flush_if_due,
    )
    .await
}

/// Writes `replication-offset-checkpoint` every `replica.high.watermark.checkpoint.interval.ms`.
async fn checkpoint_high_watermarks(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period_ms = broker.config.replica_high_watermark_checkpoint_interval_ms;
    every("hw checkpoint", broker, period_ms, shutdown, |b| {
        b.replicas.checkpoint_high_watermarks()
    })
    .await
}

/// Leaders' ISR upkeep (Kafka's `maybeShrinkIsr` / `maybeExpandIsr`): followers that have not
/// caught up within `replica.lag.time.max.ms` leave the ISR, caught-up ones join, through
/// AlterPartition on the controller. Runs every quarter of the lag time and at once when a
/// fetch shows a follower caught up.
async fn maintain_isr(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let lag_ms = i64::try_from(broker.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
    let period = std::time::Duration::from_millis((lag_ms / 4).clamp(10, 1000) as u64);
    let stop = wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = broker.isr_wanted.notified() => {}
            _ = &mut stop => return,
        }
        let now = now_ms();
        let image = broker.topics.image();
        for p in broker.replicas.all() {
            let Some(change) = p.isr_change(now, lag_ms, |id| image.is_live(id)) else {
                continue;
            };
            tracing::info!(
                "{}-{}: proposing ISR {:?} (epoch {}, partition epoch {})",
                p.topic,
                p.index,
                change.isr,
                change.leader_epoch,
                change.partition_epoch
            );
            let b = broker.clone();
            tokio::spawn(async move {
                let command = Command::AlterPartition {
                    topic: p.topic.clone(),
                    partition: p.index,
                    leader: b.node_id(),
                    leader_epoch: change.leader_epoch,
                    partition_epoch: change.partition_epoch,
                    isr: change.isr,
                };
                // On success the new image reaches the partition through `follow_image`.
                if let Err(e) = b.topics.propose(command).await {
                    tracing::info!(
                        "{}-{}: ISR change refused ({}: {})",
                        p.topic,
                        p.index,
                        e.code,
                        e.message
                    );
                    p.clear_pending_isr();
                }
            });
        }
    }
}
