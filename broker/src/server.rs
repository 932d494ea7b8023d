//! Wiring: the broker's shared state and `run`, the one place tasks are started and stopped.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::group::{GroupConfig, GroupCoordinator};
use crate::metadata::{TopicInfo, TopicRegistry, OFFSETS_TOPIC};
use crate::partition::{now_ms, ReplicaManager};
use crate::producer_ids::ProducerIdAllocator;

/// Everything a request handler may reach.
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicRegistry,
    pub replicas: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub producer_ids: ProducerIdAllocator,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub delays: Arc<crate::time::delay::DelayEngine>,
}

impl Broker {
    /// Creates a topic and opens its partitions (CreateTopics, auto-creation).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: std::collections::BTreeMap<String, String>,
    ) -> Result<TopicInfo, crate::metadata::MetaError> {
        let info = self
            .topics
            .create(name, partitions, replication_factor, configs, false)?;
        self.replicas
            .open_partitions(&info, 0, false)
            .map_err(|e| crate::metadata::MetaError::new(e.code, e.message))?;
        Ok(info)
    }
}

/// Opens the data directory (recovering logs after an unclean stop) and loads committed
/// offsets: a broker ready to serve, with no task running yet.
pub fn open(
    config: &BrokerConfig,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Arc<Broker>> {
    for key in config.unknown_keys() {
        tracing::warn!("unknown configuration key {key} (ignored)");
    }
    let log_dir = config.log_dirs[0].clone();
    let topics = TopicRegistry::open(&log_dir)?;
    let replicas = Arc::new(
        ReplicaManager::open(config, &topics.all(), metrics.clone())
            .map_err(|e| anyhow::anyhow!(e.message))?,
    );
    let producer_ids = ProducerIdAllocator::open(&log_dir)?;
    if topics.get(OFFSETS_TOPIC).is_none() {
        let mut configs = std::collections::BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
        let info = topics.create(
            OFFSETS_TOPIC,
            config.offsets_topic_num_partitions,
            1,
            configs,
            false,
        )?;
        replicas
            .open_partitions(&info, 0, false)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let offsets_log = Arc::new(crate::offsets_log::PartitionOffsetsLog::new(
        replicas.clone(),
    ));
    let exists_ref = replicas.clone();
    let partition_exists =
        Arc::new(move |topic: &str, partition: i32| exists_ref.get(topic, partition).is_some());
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
        topics,
        replicas,
        groups: groups.clone(),
        producer_ids,
        metrics,
        delays: Default::default(),
    });
    groups
        .load()
        .map_err(|code| anyhow::anyhow!("loading {OFFSETS_TOPIC} failed with error {code}"))?;
    Ok(broker)
}

/// Opens the broker and serves until `shutdown` flips to true. Returns after every task
/// stopped and logs were flushed (a clean shutdown).
pub async fn run(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
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
    let open_config = config.clone();
    let broker = tokio::task::spawn_blocking(move || open(&open_config, metrics)).await??;
    http_state.set_broker(broker.clone());
    let groups = broker.groups.clone();
    let log_dir = config.log_dirs[0].clone();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(groups.clone().run(wait_for(shutdown.clone())));
    tasks.spawn(cleaner(broker.clone(), shutdown.clone()));
    tasks.spawn(flusher(broker.clone(), shutdown.clone()));
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
    crate::net::run(listener, dispatcher, net_config, shutdown.clone()).await;
    while tasks.join_next().await.is_some() {}
    let _ = http_task.await;
    broker.replicas.shutdown();
    tracing::info!("kairos broker {} stopped cleanly", config.node_id);
    Ok(())
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `step(partition, now)` over every partition every `period_ms`, off the async workers
/// (the steps do file I/O), until `shutdown`.
async fn every_partition(
    name: &'static str,
    broker: Arc<Broker>,
    period_ms: u64,
    shutdown: watch::Receiver<bool>,
    step: fn(&crate::partition::Partition, i64),
) {
    let period = std::time::Duration::from_millis(period_ms.max(10));
    let stop = wait_for(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut stop => return,
        }
        let b = broker.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            for p in b.replicas.all() {
                step(&p, now);
            }
        });
        if let Err(e) = done.await {
            tracing::warn!("{name} task failed: {e}");
        }
    }
}

/// Retention and compaction every `log.retention.check.interval.ms`.
async fn cleaner(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period_ms = broker.config.log_retention_check_interval_ms;
    every_partition("cleaner", broker, period_ms, shutdown, |p, now| {
        p.clean(now)
    })
    .await
}

/// Time-based flushing (`flush.ms` / `log.flush.interval.ms`) of logs that went idle, every
/// `log.flush.scheduler.interval.ms` (default 1 s here; Kafka leaves it unset).
async fn flusher(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period_ms = broker.config.log_flush_scheduler_interval_ms;
    every_partition("flusher", broker, period_ms, shutdown, |p, now| {
        p.flush_if_due(now)
    })
    .await
}
