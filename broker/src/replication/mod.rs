//! Followers: one fetcher task per leader broker (Kafka's `ReplicaFetcherThread`). A partition
//! that starts following a new leader epoch first truncates its log where it diverged from the
//! leader's (OffsetsForLeaderEpoch, KIP-101/279), then fetches from its log end with Fetch v12
//! and `replica_id` = this broker, appending what comes back with offsets and epochs kept.

pub mod client;
pub mod quota;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::partition::epochs::{UNDEFINED, UNDEFINED_OFFSET};
use crate::partition::{codes, Partition};
use client::FETCH_VERSION;

const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;

/// What a follower fetches with (the `replica.fetch.*` settings).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub node: i32,
    pub wait_max_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub response_max_bytes: i32,
    pub backoff: Duration,
    pub socket_timeout: Duration,
}

impl FetchConfig {
    pub fn from_broker(c: &crate::config::BrokerConfig) -> Self {
        FetchConfig {
            node: c.node_id,
            wait_max_ms: c.replica_fetch_wait_max_ms,
            min_bytes: c.replica_fetch_min_bytes,
            max_bytes: c.replica_fetch_max_bytes,
            response_max_bytes: c.replica_fetch_response_max_bytes,
            backoff: Duration::from_millis(c.replica_fetch_backoff_ms.max(1)),
            socket_timeout: Duration::from_millis(c.replica_socket_timeout_ms.max(100)),
        }
    }
}

/// One followed partition.
#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    /// The leader epoch being followed (sent as `current_leader_epoch`).
    epoch: i32,
    /// Truncation by leader epoch is still to do before fetching.
    truncate: bool,
}

type Key = (String, i32);

/// The partitions followed from one leader, shared with its fetcher task.
struct Source {
    addr: Mutex<String>,
    parts: Mutex<BTreeMap<Key, Followed>>,
    /// Bumped on every change, so an in-flight fetch for a stale set is abandoned.
    generation: watch::Sender<u64>,
}

/// The fetcher tasks of this broker, by leader.
pub struct Fetchers {
    config: FetchConfig,
    throttles: Arc<quota::Throttles>,
    sources: Mutex<HashMap<i32, Arc<Source>>>,
    stop: watch::Sender<bool>,
}

impl Fetchers {
    pub fn new(config: FetchConfig, throttles: Arc<quota::Throttles>) -> Self {
        Fetchers {
            config,
            throttles,
            sources: Mutex::new(HashMap::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Follows `partition` from `leader` (at `addr`) in `epoch`. A new leader or epoch means
    /// truncating first; the same one again changes nothing.
    pub fn follow(&self, partition: &Arc<Partition>, leader: i32, addr: String, epoch: i32) {
        let key = (partition.topic.clone(), partition.index);
        let mut sources = self.sources.lock();
        for (id, source) in sources.iter() {
            if *id != leader {
                source.remove(&key);
            }
        }
        let source = match sources.get(&leader) {
            Some(s) => s.clone(),
            None => {
                let source = Arc::new(Source {
                    addr: Mutex::new(addr.clone()),
                    parts: Mutex::new(BTreeMap::new()),
                    generation: watch::channel(0).0,
                });
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    tracing::error!("no runtime to start the fetcher for broker {leader}");
                    return;
                };
                runtime.spawn(run_fetcher(
                    self.config.clone(),
                    self.throttles.clone(),
                    leader,
                    source.clone(),
                    self.stop.subscribe(),
                ));
                sources.insert(leader, source.clone());
                source
            }
        };
        drop(sources);
        let mut changed = false;
        {
            let mut current = source.addr.lock();
            if *current != addr {
                *current = addr;
                changed = true;
            }
        }
        {
            let mut parts = source.parts.lock();
            let same = parts
                .get(&key)
                .is_some_and(|f| f.epoch == epoch && Arc::ptr_eq(&f.partition, partition));
            if !same {
                parts.insert(
                    key,
                    Followed {
                        partition: partition.clone(),
                        epoch,
                        truncate: true,
                    },
                );
                changed = true;
            }
        }
        if changed {
            source.generation.send_modify(|g| *g += 1);
        }
    }

    /// Stops fetching `topic`-`index` (this broker leads it now, or no longer hosts it).
    pub fn unfollow(&self, topic: &str, index: i32) {
        let key = (topic.to_string(), index);
        for source in self.sources.lock().values() {
            source.remove(&key);
        }
    }

    /// Stops every fetcher task.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Source {
    fn remove(&self, key: &Key) {
        if self.parts.lock().remove(key).is_some() {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// Updates a followed partition if it is still the same one (same replica and epoch).
    fn update(&self, key: &Key, seen: &Followed, f: impl FnOnce(&mut Followed)) {
        if let Some(current) = self.parts.lock().get_mut(key) {
            if current.epoch == seen.epoch && Arc::ptr_eq(&current.partition, &seen.partition) {
                f(current);
            }
        }
    }
}

/// Kafka's `getOffsetTruncationState`: where a follower truncates, given the leader's answer
/// `(leader_epoch, leader_end)` to "where did my latest epoch end?", and whether that settles it
/// (`false`: ask again with the follower's new latest epoch).
pub fn truncation_offset(
    leader_epoch: i32,
    leader_end: i64,
    follower_end_for: impl Fn(i32) -> (i32, i64),
    follower_leo: i64,
    follower_hw: i64,
) -> (i64, bool) {
    if leader_end == UNDEFINED_OFFSET {
        // The leader knows no epoch at or below ours: keep what is committed.
        return (follower_hw.min(follower_leo), true);
    }
    if leader_epoch == UNDEFINED {
        return (leader_end.min(follower_leo), true);
    }
    let (epoch, end) = follower_end_for(leader_epoch);
    if epoch == UNDEFINED {
        (leader_end.min(follower_leo), true)
    } else if epoch == leader_epoch {
        (leader_end.min(end), true)
    } else {
        (end.min(follower_leo), false)
    }
}

/// Waits `d`, or less when the followed set changes or the broker stops.
async fn backoff(d: Duration, gen: &mut watch::Receiver<u64>, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = gen.changed() => {}
        _ = stop.changed() => {}
    }
}

async fn run_fetcher(
    config: FetchConfig,
    throttles: Arc<quota::Throttles>,
    leader: i32,
    source: Arc<Source>,
    mut stop: watch::Receiver<bool>,
) {
    let mut gen = source.generation.subscribe();
    let mut conn: Option<client::Connection> = None;
    let client_id = format!("kairos-replica-fetcher-{}-{leader}", config.node);
    loop {
        if *stop.borrow() {
            return;
        }
        gen.mark_unchanged();
        let parts: Vec<(Key, Followed)> = source
            .parts
            .lock()
            .iter()
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        if parts.is_empty() {
            conn = None;
            tokio::select! {
                _ = gen.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let addr = source.addr.lock().clone();
                match client::Connection::connect(&addr, client_id.clone(), config.socket_timeout)
                    .await
                {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::debug!("replica fetcher for broker {leader}: {e:#}");
                        backoff(config.backoff, &mut gen, &mut stop).await;
                        continue;
                    }
                }
            }
        };
        // Partitions that must truncate first do; the others fetch in the same round, so one
        // partition stuck on OffsetsForLeaderEpoch errors does not stop the rest replicating.
        let (truncating, mut fetching): (Vec<_>, Vec<_>) =
            parts.into_iter().partition(|(_, f)| f.truncate);
        // Throttled replicas outside the ISR sit out while the follower quota is in debt.
        let held = if throttles.follower.exceeded() {
            let before = fetching.len();
            fetching.retain(|(k, f)| !is_throttled(&throttles, k, f, config.node));
            before - fetching.len()
        } else {
            0
        };
        let mut step = Step::Progress;
        if !truncating.is_empty() {
            step = truncate(&config, c, &source, &truncating, &mut gen).await;
        }
        if !fetching.is_empty() && matches!(step, Step::Progress | Step::Backoff) {
            step = fetch(&config, &throttles, c, &source, &fetching, &mut gen).await;
        } else if held > 0 && truncating.is_empty() {
            // Only throttled partitions: wait for the quota (or a change of the set).
            backoff(throttles.follower.wait(), &mut gen, &mut stop).await;
            continue;
        }
        match step {
            Step::Progress => {}
            Step::Backoff => backoff(config.backoff, &mut gen, &mut stop).await,
            Step::Abandoned => conn = None,
            Step::Failed(e) => {
                tracing::debug!("replica fetcher for broker {leader}: {e:#}");
                conn = None;
                backoff(config.backoff, &mut gen, &mut stop).await;
            }
        }
    }
}

enum Step {
    Progress,
    /// Every partition got a (retriable) error: wait before asking again.
    Backoff,
    /// The followed set changed while the request was in flight: its answer is not wanted.
    Abandoned,
    Failed(anyhow::Error),
}

/// Runs `call` unless the followed set changes first.
async fn unless_changed<T>(
    gen: &mut watch::Receiver<u64>,
    call: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T, Step> {
    tokio::select! {
        r = call => r.map_err(Step::Failed),
        _ = gen.changed() => Err(Step::Abandoned),
    }
}

async fn truncate(
    config: &FetchConfig,
    conn: &mut client::Connection,
    source: &Source,
    parts: &[(Key, Followed)],
    gen: &mut watch::Receiver<u64>,
) -> Step {
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    // By (topic, partition) borrowed from `parts`: the answer is matched without allocating.
    let mut asked: HashMap<(&str, i32), (&Key, &Followed)> = HashMap::new();
    for (key, f) in parts {
        let latest = f.partition.latest_epoch();
        if latest == UNDEFINED {
            // Nothing written in any epoch: nothing can have diverged.
            let r = f
                .partition
                .truncate_to(f.partition.high_watermark(), f.epoch);
            if let Err(e) = r {
                tracing::warn!("{}-{}: truncation failed: {}", key.0, key.1, e.message);
                continue;
            }
            source.update(key, f, |f| f.truncate = false);
            continue;
        }
        asked.insert((key.0.as_str(), key.1), (key, f));
        topics.entry(key.0.as_str()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(f.epoch)
                .with_leader_epoch(latest),
        );
    }
    if topics.is_empty() {
        return Step::Progress;
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(config.node))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = match unless_changed(gen, conn.call(OFFSET_FOR_LEADER_EPOCH_VERSION, &req)).await {
        Ok(r) => r,
        Err(step) => return step,
    };
    let mut progressed = false;
    for t in resp.topics {
        for p in t.partitions {
            let Some(&(key, f)) = asked.get(&(t.topic.0.as_str(), p.partition)) else {
                continue;
            };
            if p.error_code != 0 {
                tracing::debug!(
                    "{}-{}: OffsetsForLeaderEpoch error {}",
                    key.0,
                    key.1,
                    p.error_code
                );
                continue;
            }
            let part = &f.partition;
            let (offset, done) = truncation_offset(
                p.leader_epoch,
                p.end_offset,
                |e| part.end_offset_for_epoch(e),
                part.log_end_offset(),
                part.high_watermark(),
            );
            if offset < part.log_end_offset() {
                tracing::info!(
                    "{}-{}: truncating from {} to {offset} (leader epoch {}, end offset {})",
                    key.0,
                    key.1,
                    part.log_end_offset(),
                    p.leader_epoch,
                    p.end_offset
                );
            }
            if let Err(e) = part.truncate_to(offset, f.epoch) {
                tracing::warn!("{}-{}: truncation failed: {}", key.0, key.1, e.message);
                continue;
            }
            progressed = true;
            if done {
                source.update(key, f, |f| f.truncate = false);
            }
        }
    }
    if progressed {
        Step::Progress
    } else {
        Step::Backoff
    }
}

/// Whether `key` is fetched under the follower quota: named in the topic's
/// `follower.replication.throttled.replicas` for this broker, and this broker outside the ISR.
fn is_throttled(throttles: &quota::Throttles, key: &Key, f: &Followed, node: i32) -> bool {
    throttles.follower_throttled(&key.0, key.1) && !f.partition.in_isr(node)
}

async fn fetch(
    config: &FetchConfig,
    throttles: &quota::Throttles,
    conn: &mut client::Connection,
    source: &Source,
    parts: &[(Key, Followed)],
    gen: &mut watch::Receiver<u64>,
) -> Step {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    // By (topic, partition) borrowed from `parts`: the answer is matched without allocating.
    let mut offsets: HashMap<(&str, i32), (&Key, &Followed, i64)> = HashMap::new();
    for (key, f) in parts {
        let offset = f.partition.log_end_offset();
        offsets.insert((key.0.as_str(), key.1), (key, f, offset));
        topics.entry(key.0.as_str()).or_default().push(
            FetchPartition::default()
                .with_partition(key.1)
                .with_current_leader_epoch(f.epoch)
                .with_fetch_offset(offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(f.partition.log_start_offset())
                .with_partition_max_bytes(config.max_bytes),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(config.node))
        .with_max_wait_ms(config.wait_max_ms)
        .with_min_bytes(config.min_bytes)
        .with_max_bytes(config.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = match unless_changed(gen, conn.call(FETCH_VERSION, &req)).await {
        Ok(r) => r,
        Err(step) => return step,
    };
    if resp.error_code != 0 {
        return Step::Failed(anyhow::anyhow!("fetch error {}", resp.error_code));
    }
    let mut ok = false;
    for t in resp.responses {
        for p in t.partitions {
            let Some(&(key, f, offset)) = offsets.get(&(t.topic.0.as_str(), p.partition_index))
            else {
                continue;
            };
            let part = &f.partition;
            // The log may have changed since the request (a truncation by another path).
            if part.log_end_offset() != offset {
                continue;
            }
            match p.error_code {
                0 => {
                    ok = true;
                    let records = p.records.as_deref().unwrap_or(&[]);
                    if is_throttled(throttles, key, f, config.node) {
                        throttles.follower.record(records.len() as u64);
                    }
                    if let Err(e) = part.append_as_follower(
                        records,
                        f.epoch,
                        p.high_watermark,
                        p.log_start_offset,
                    ) {
                        tracing::warn!(
                            "{}-{}: appending fetched records failed: {}",
                            key.0,
                            key.1,
                            e.message
                        );
                        source.update(key, f, |f| f.truncate = true);
                    }
                }
                codes::OFFSET_OUT_OF_RANGE => {
                    ok = true;
                    let r = if p.log_start_offset > offset {
                        tracing::info!(
                            "{}-{}: fetch offset {offset} is below the leader's log start {}; restarting the log there",
                            key.0, key.1, p.log_start_offset
                        );
                        part.truncate_fully_and_start_at(p.log_start_offset, f.epoch)
                    } else {
                        source.update(key, f, |f| f.truncate = true);
                        Ok(())
                    };
                    if let Err(e) = r {
                        tracing::warn!("{}-{}: {}", key.0, key.1, e.message);
                    }
                }
                code => {
                    tracing::debug!("{}-{}: fetch error {code}", key.0, key.1);
                }
            }
        }
    }
    if ok {
        Step::Progress
    } else {
        Step::Backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_follows_kafkas_rules() {
        // Follower epochs: 1 from 0, 3 from 10; log end 30; HW 20.
        let follower = |e: i32| match e {
            e if e >= 3 => (3, 30),
            e if e >= 1 => (1, 10),
            _ => (UNDEFINED, UNDEFINED_OFFSET),
        };
        // Leader has epoch 3 too, ending at 25: cut the follower's extra 5.
        assert_eq!(truncation_offset(3, 25, follower, 30, 20), (25, true));
        // Leader ended epoch 3 later than the follower's log: nothing to cut.
        assert_eq!(truncation_offset(3, 40, follower, 30, 20), (30, true));
        // Leader never had epoch 3; its largest below is 1, ending at 12: both logs agree up to
        // where the follower's epoch 1 ended.
        assert_eq!(truncation_offset(1, 12, follower, 30, 20), (10, true));
        // Leader's largest is 2 (which the follower never saw), ending at 15: the follower cuts
        // to the end of its epoch below that (1, at 10) and asks again.
        assert_eq!(truncation_offset(2, 15, follower, 30, 20), (10, false));
        // Leader knows nothing that old: keep what is committed.
        assert_eq!(
            truncation_offset(UNDEFINED, UNDEFINED_OFFSET, follower, 30, 20),
            (20, true)
        );
        // Follower has no epoch at or below the leader's: cut to the leader's end.
        assert_eq!(truncation_offset(0, 5, follower, 30, 20), (5, true));
    }
}
