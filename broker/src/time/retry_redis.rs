//! Retry topics scheduled in Redis (`retry.redis.url`), design.md §4.
//!
//! Keys of retry partition P of topic T share the hash tag `{T:P}` (one Redis Cluster slot):
//! - `<prefix>:{T:P}:due`      ZSET entry id → due time (ms);
//! - `<prefix>:{T:P}:rec`      HASH entry id → record (8-byte append time + a one-record batch);
//! - `<prefix>:{T:P}:inflight` ZSET entry id → lease expiry (ms);
//! - `<prefix>:{T:P}:stamp`    HASH entry id → "<producer id>:<epoch>:<sequence>" of the batch
//!   it is being delivered in;
//! - `<prefix>:{T:P}:batch`    HASH stamp → "<destination>\n<partition>\n<entry ids>" (the
//!   batch's layout, so it can be built again exactly);
//! - `<prefix>:{T:P}:done`     ZSET entry id → expiry: finished entries, so re-indexing after a
//!   crash does not schedule them again.
//!
//! Entry id = `<offset>:<attempt>` of the record in the retry partition. Flow: the task reads
//! the retry partition and schedules entries (one Lua script, idempotent); only then does its
//! checkpoint move, so while Redis is down records wait in the retry topic. A claim script moves
//! due entries to `inflight` with a lease; they are grouped by destination partition into
//! batches with a `kairos.retry.entry` header per record. Each batch is stamped (in Redis, before
//! it is sent) with this task's idempotent producer id and sequence, and delivered with acks=all
//! to the destination's leader, on this broker or another (`deliver::Deliverer`); then a finalize
//! script deletes its entries and marks them done. Entries claimed again with a stamp (their
//! holder stopped or failed mid-way) are sent again as exactly that batch, which the leader drops
//! as a duplicate if it already has it, so nothing is appended twice, wherever leadership went.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::watch;

use super::delay::{read_from, DelayPartition, Schedule};
use super::murmur2::partition_for;
use crate::partition::{now_ms, Partition};
use crate::records::ProducerSeq;
use crate::server::Broker;

/// Header on records a Redis-scheduled retry appended: `<retry topic>:<partition>:<entry id>`.
pub const RETRY_ENTRY: &str = "kairos.retry.entry";
const CHECKPOINT_FILE: &str = "kairos-retry-redis-checkpoint";
const SCHEDULE_CHUNK: usize = 500;
const CLAIM_MAX: usize = 1000;
/// A claim not finalized within this long goes back to `due`.
const LEASE_MS: i64 = 30_000;
/// Done markers are kept this long (longer than any checkpoint lag).
const DONE_TTL_MS: i64 = 24 * 3_600_000;
const IDLE_WAKE: Duration = Duration::from_millis(200);
/// A Redis command (or connecting) that takes longer counts as Redis being unavailable (the
/// client's own reconnect logic can otherwise wait far longer than its timeouts suggest).
/// Delivering to Kafka partitions is not bounded by it: an acks=all wait has its own timeout.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

const SCHEDULE_LUA: &str = r"
local added = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[3], id) then
    if redis.call('HSETNX', KEYS[2], id, ARGV[i + 2]) == 1 then
      redis.call('ZADD', KEYS[1], ARGV[i + 1], id)
      added = added + 1
    end
  end
end
return added";

const CLAIM_LUA: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #ids, 2 do
  local id = ids[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  table.insert(out, id)
  table.insert(out, ids[i + 1])
  table.insert(out, redis.call('HGET', KEYS[3], id) or '')
  table.insert(out, redis.call('HGET', KEYS[4], id) or '')
end
return out";

/// Claims the named entries (members of a stamped batch) wherever they are, due or in flight.
const CLAIM_IDS_LUA: &str = r"
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due or redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    table.insert(out, id)
    table.insert(out, due or '')
    table.insert(out, redis.call('HGET', KEYS[3], id) or '')
    table.insert(out, redis.call('HGET', KEYS[4], id) or '')
  end
end
return out";

/// Stamps a batch's entries and stores its layout, in one step.
const STAMP_LUA: &str = r"
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 3, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
end
return #ARGV - 2";

const FINALIZE_LUA: &str = r"
for i = 3, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[i])
end
if ARGV[2] ~= '' then
  redis.call('HDEL', KEYS[5], ARGV[2])
end
return #ARGV - 2";

const REAP_LUA: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
return #ids";

/// One Redis server (auto-reconnecting) or a Redis Cluster (`retry.redis.url` lists several
/// comma-separated node URLs). All keys of a retry partition share a hash tag, so every script
/// and pipeline here runs within one slot.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// Bounds one Redis exchange by [`REDIS_TIMEOUT`].
fn bounded<'a, T: Send + 'a>(f: RedisFuture<'a, T>) -> RedisFuture<'a, T> {
    Box::pin(async move {
        tokio::time::timeout(REDIS_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "no answer within the Redis timeout",
                    format!("{} s", REDIS_TIMEOUT.as_secs()),
                )))
            })
    })
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        bounded(match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        bounded(match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        })
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `retry.redis.url`: one URL, or comma-separated cluster node URLs. `rediss://`
/// uses TLS, verified against `ca_file` (PEM) when given, else the system's roots.
pub async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<RedisConn, String> {
    if url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let nodes: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if let (Some(ca), 1) = (ca_file, nodes.len()) {
        let root_cert = std::fs::read(ca)
            .map_err(|e| format!("retry.redis.tls.ca.file {}: {e}", ca.display()))?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        let client = redis::Client::build_with_tls(url, certs)
            .map_err(|e| format!("invalid retry.redis.url: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_number_of_retries(1);
        return client
            .get_connection_manager_with_config(config)
            .await
            .map(RedisConn::Single)
            .map_err(|e| e.to_string());
    }
    if nodes.len() > 1 {
        let client = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("invalid retry.redis.url: {e}"))?;
        return client
            .get_async_connection()
            .await
            .map(RedisConn::Cluster)
            .map_err(|e| e.to_string());
    }
    let client = redis::Client::open(url).map_err(|e| format!("invalid retry.redis.url: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_number_of_retries(1);
    client
        .get_connection_manager_with_config(config)
        .await
        .map(RedisConn::Single)
        .map_err(|e| e.to_string())
}

struct Keys {
    due: String,
    rec: String,
    inflight: String,
    stamp: String,
    batch: String,
    done: String,
}

impl Keys {
    fn new(prefix: &str, topic: &str, partition: i32) -> Self {
        let base = format!("{prefix}:{{{topic}:{partition}}}");
        Keys {
            due: format!("{base}:due"),
            rec: format!("{base}:rec"),
            inflight: format!("{base}:inflight"),
            stamp: format!("{base}:stamp"),
            batch: format!("{base}:batch"),
            done: format!("{base}:done"),
        }
    }
}

pub struct RedisRetryTask {
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    state: Arc<DelayPartition>,
    url: String,
    keys: Keys,
    con: Option<RedisConn>,
    indexed_to: i64,
    last_checkpoint: Instant,
    warned_down: bool,
    /// False until every claim left from before (a restart, a failed delivery) is taken back.
    reaped_at_start: bool,
    deliverer: super::deliver::Deliverer,
    stamper: super::deliver::Stamper,
}

impl RedisRetryTask {
    pub fn new(
        broker: Arc<Broker>,
        partition: Arc<Partition>,
        state: Arc<DelayPartition>,
        url: String,
    ) -> Self {
        let keys = Keys::new(
            &broker.config.retry_redis_key_prefix,
            &state.topic,
            state.partition,
        );
        let indexed_to = std::fs::read_to_string(partition.dir().join(CHECKPOINT_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        RedisRetryTask {
            partition,
            state,
            url,
            keys,
            con: None,
            indexed_to,
            last_checkpoint: Instant::now(),
            warned_down: false,
            reaped_at_start: false,
            deliverer: super::deliver::Deliverer::new(broker.clone()),
            stamper: super::deliver::Stamper::default(),
            broker,
        }
    }

    fn name(&self) -> String {
        format!("{}-{}", self.state.topic, self.state.partition)
    }

    fn schedule(&self) -> Option<Schedule> {
        Schedule::from_topic(&*self.broker.topics.get(&self.state.topic)?)
    }

    pub async fn run(
        &mut self,
        mut stop: watch::Receiver<bool>,
        mut global: watch::Receiver<bool>,
    ) {
        loop {
            let partition = self.partition.clone();
            // Records count once committed (below the HW), so the HW moving is the wake-up.
            let committed = partition.hw_moved().notified();
            tokio::pin!(committed);
            committed.as_mut().enable();
            let round = self.step().await;
            if round.is_err() {
                // Whatever this round left claimed (a batch sent or not, finalized or not) is
                // taken back next round and sent again as stamped; batches after it use a new
                // producer id, so no later sequence can pass it.
                self.stamper.reset();
                self.reaped_at_start = false;
            }
            let wait = match round {
                Ok(wait) => {
                    if self.warned_down {
                        tracing::info!("retry {}: Redis is back; scheduling resumes", self.name());
                        self.warned_down = false;
                    }
                    self.broker.metrics.redis_up.store(1, Ordering::Relaxed);
                    wait
                }
                Err(RoundError::Redis(e)) => {
                    self.broker.metrics.redis_up.store(0, Ordering::Relaxed);
                    if !self.warned_down {
                        tracing::warn!(
                            "retry {}: Redis unavailable, retries wait in the topic: {e}",
                            self.name()
                        );
                        self.warned_down = true;
                    }
                    *self.state.blocked.lock() = Some(format!("Redis unavailable: {e}"));
                    self.con = None;
                    Duration::from_millis(500)
                }
                Err(RoundError::Delivery(e)) => {
                    tracing::warn!("retry {}: {e}; sending again shortly", self.name());
                    *self.state.blocked.lock() = Some(e);
                    Duration::from_millis(500)
                }
            };
            // Records not yet in Redis must stay in the retry topic.
            self.partition.set_retention_floor(self.indexed_to);
            tokio::select! {
                _ = &mut committed => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
                _ = global.changed() => break,
            }
        }
        self.write_checkpoint();
    }

    async fn connection(&mut self) -> Result<RedisConn, String> {
        if let Some(c) = &self.con {
            return Ok(c.clone());
        }
        let ca_file = self.broker.config.retry_redis_tls_ca_file.as_deref();
        let con = tokio::time::timeout(REDIS_TIMEOUT, connect(&self.url, ca_file))
            .await
            .map_err(|_| format!("no answer within {} s", REDIS_TIMEOUT.as_secs()))??;
        self.con = Some(con.clone());
        Ok(con)
    }

    fn write_checkpoint(&mut self) {
        let path = self.partition.dir().join(CHECKPOINT_FILE);
        let bytes = self.indexed_to.to_string();
        // An fsynced file write: off the async workers.
        let written =
            tokio::task::block_in_place(|| super::delay::rewrite(&path, bytes.as_bytes()));
        if let Err(e) = written {
            tracing::warn!("retry {}: checkpoint failed: {e}", self.name());
        }
        self.last_checkpoint = Instant::now();
    }

    /// One round: reap (once), schedule new records, deliver due ones. Returns how long to wait.
    async fn step(&mut self) -> Result<Duration, RoundError> {
        let Some(schedule) = self.schedule() else {
            return Ok(IDLE_WAKE);
        };
        let mut con = self.connection().await?;
        if !self.reaped_at_start {
            // This broker leads the partition: whatever was in flight before (a restart, another
            // leader, a failed delivery) is back in `due` now; stamped entries go again as the
            // batch they were in.
            self.reap(&mut con, i64::MAX).await?;
            self.reaped_at_start = true;
        }
        self.index(&mut con, &schedule).await?;
        let started = Instant::now();
        self.reap(&mut con, now_ms()).await?;
        self.broker
            .metrics
            .redis_latency
            .observe(started.elapsed().as_secs_f64());
        // Cleared before delivering, which sets it again when a destination is missing.
        *self.state.blocked.lock() = None;
        let wait = self.deliver(&mut con, &schedule).await?;
        let pending: (u64, u64) = redis::pipe()
            .zcard(&self.keys.due)
            .zcard(&self.keys.inflight)
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        self.state
            .redis_pending
            .store(pending.0 + pending.1, Ordering::Relaxed);
        if self.last_checkpoint.elapsed() >= Duration::from_secs(1) {
            self.write_checkpoint();
        }
        Ok(wait)
    }

    async fn reap(&self, con: &mut RedisConn, before: i64) -> Result<(), String> {
        let _: i64 = Script::new(REAP_LUA)
            .key(&self.keys.inflight)
            .key(&self.keys.due)
            .key(&self.keys.done)
            .arg(before.to_string())
            .arg(now_ms())
            .invoke_async(con)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Reads the retry partition from the checkpoint and schedules its records in Redis.
    async fn index(&mut self, con: &mut RedisConn, schedule: &Schedule) -> Result<(), String> {
        self.indexed_to = self.indexed_to.max(self.partition.log_start_offset());
        while self.indexed_to < self.partition.high_watermark() {
            let Some((records, next)) = read_from(&self.partition, self.indexed_to)? else {
                break;
            };
            let mut args: Vec<Vec<u8>> = Vec::with_capacity(records.len() * 3);
            for r in records {
                let attempt = Schedule::attempt(&r.record);
                let due = schedule
                    .due_ms(&r.record, r.append_ms, r.offset)
                    .unwrap_or(r.append_ms);
                let mut blob = r.append_ms.to_be_bytes().to_vec();
                blob.extend_from_slice(&crate::records::encode_batch(vec![r.record], r.append_ms)?);
                args.push(format!("{}:{attempt}", r.offset).into_bytes());
                args.push(due.to_string().into_bytes());
                args.push(blob);
            }
            for chunk in args.chunks(SCHEDULE_CHUNK * 3) {
                let lua = Script::new(SCHEDULE_LUA);
                let mut script = lua.prepare_invoke();
                script
                    .key(&self.keys.due)
                    .key(&self.keys.rec)
                    .key(&self.keys.done);
                for a in chunk {
                    script.arg(a.as_slice());
                }
                let added: i64 = script.invoke_async(con).await.map_err(|e| e.to_string())?;
                self.state.retry.lock().scheduled += added as u64;
            }
            self.indexed_to = next;
        }
        Ok(())
    }

    /// Claims due entries, delivers them to their destinations, finalizes. Returns the wait
    /// until the next due entry (bounded).
    async fn deliver(
        &mut self,
        con: &mut RedisConn,
        schedule: &Schedule,
    ) -> Result<Duration, RoundError> {
        loop {
            let now = now_ms();
            let claimed = claim_reply(
                Script::new(CLAIM_LUA)
                    .key(&self.keys.due)
                    .key(&self.keys.inflight)
                    .key(&self.keys.rec)
                    .key(&self.keys.stamp)
                    .arg(now)
                    .arg(CLAIM_MAX)
                    .arg(now + LEASE_MS)
                    .invoke_async(con)
                    .await
                    .map_err(|e| e.to_string())?,
            )?;
            if claimed.is_empty() {
                let next: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&self.keys.due)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(con)
                    .await
                    .map_err(|e| e.to_string())?;
                let wait = next
                    .first()
                    .map(|(_, due)| {
                        Duration::from_millis(
                            (*due as i64)
                                .saturating_sub(now_ms())
                                .clamp(0, IDLE_WAKE.as_millis() as i64)
                                as u64,
                        )
                    })
                    .unwrap_or(IDLE_WAKE);
                return Ok(wait);
            }
            // Entries stamped by an earlier, unfinished delivery go again as the same batch.
            let (stamped, mut fresh): (Vec<Claimed>, Vec<Claimed>) =
                claimed.into_iter().partition(|c| !c.stamp.is_empty());
            let mut by_stamp: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
            for c in stamped {
                by_stamp.entry(c.stamp.clone()).or_default().push(c);
            }
            for (stamp, entries) in by_stamp {
                fresh.extend(self.replay(con, schedule, &stamp, entries).await?);
            }
            let mut dropped = Vec::new();
            let mut batches: BTreeMap<(String, i32), ClaimedBatch> = BTreeMap::new();
            for c in &fresh {
                match self.prepare(c, schedule) {
                    Prepared::Record {
                        dest,
                        partition,
                        record,
                        entry,
                    } => {
                        let b = batches.entry((dest, partition)).or_default();
                        b.0.push(*record);
                        b.1.push(entry);
                    }
                    Prepared::Unreadable(id) => dropped.push(id),
                    Prepared::NoTopic(dest) => {
                        // Destination missing: everything goes back, tried again later
                        // (nothing dropped).
                        *self.state.blocked.lock() = Some(format!("topic {dest} does not exist"));
                        self.reap(con, i64::MAX).await?;
                        return Ok(Duration::from_secs(1));
                    }
                }
            }
            if !dropped.is_empty() {
                self.finalize(con, "", &dropped).await?;
            }
            for ((dest, partition), (records, entries)) in batches {
                let (producer_id, epoch) = self
                    .stamper
                    .producer(&self.broker)
                    .await
                    .map_err(RoundError::Delivery)?;
                let sequence = self.stamper.take(&dest, partition, records.len());
                let stamp = format!("{producer_id}:{epoch}:{sequence}");
                let ids: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
                // Stamped before the first send: should this broker stop mid-way, the next
                // holder sends exactly this batch again and the leader drops it if it has it.
                let lua = Script::new(STAMP_LUA);
                let mut script = lua.prepare_invoke();
                script
                    .key(&self.keys.stamp)
                    .key(&self.keys.batch)
                    .arg(&stamp)
                    .arg(format!("{dest}\n{partition}\n{}", ids.join(" ")));
                for id in &ids {
                    script.arg(*id);
                }
                let _: i64 = script.invoke_async(con).await.map_err(|e| e.to_string())?;
                let seq = (producer_id, epoch, sequence);
                self.send(con, &dest, partition, records, seq, entries, &stamp)
                    .await?;
            }
        }
    }

    /// Routes one claimed entry: its destination partition and the record as it goes there.
    fn prepare(&self, c: &Claimed, schedule: &Schedule) -> Prepared {
        let Some((append_ms, mut record)) = decode_blob(&c.blob) else {
            tracing::warn!(
                "retry {}: entry {} has no readable record; dropped",
                self.name(),
                c.id
            );
            return Prepared::Unreadable(c.id.clone());
        };
        let offset: i64 =
            c.id.split(':')
                .next()
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1);
        let (dest, attempt) = schedule.route(
            &mut record,
            &self.state.topic,
            self.state.partition,
            offset,
            append_ms,
        );
        let Some(info) = self.broker.topics.get(&dest) else {
            return Prepared::NoTopic(dest);
        };
        let partition = partition_for(record.key.as_deref(), self.state.partition, info.partitions);
        let tag = format!("{}:{}:{}", self.state.topic, self.state.partition, c.id);
        record.headers.insert(
            StrBytes::from_static_str(RETRY_ENTRY),
            Some(Bytes::from(tag)),
        );
        Prepared::Record {
            dest,
            partition,
            record: Box::new(record),
            entry: (c.id.clone(), c.due, attempt),
        }
    }

    /// Sends the batch stamped `stamp` again, exactly as it was first built (same records, same
    /// producer sequence), so a leader that already has it answers it as a duplicate. Entries
    /// that cannot be rebuilt that way come back to be sent as new ones.
    async fn replay(
        &mut self,
        con: &mut RedisConn,
        schedule: &Schedule,
        stamp: &str,
        mut entries: Vec<Claimed>,
    ) -> Result<Vec<Claimed>, RoundError> {
        let seq = parse_stamp(stamp);
        let batch: Option<String> = redis::cmd("HGET")
            .arg(&self.keys.batch)
            .arg(stamp)
            .query_async(con)
            .await
            .map_err(|e| e.to_string())?;
        let layout = batch.as_deref().and_then(parse_batch);
        let (Some(seq), Some((dest, partition, members))) = (seq, layout) else {
            self.forget_batch(con, stamp).await?;
            tracing::warn!(
                "retry {}: batch {stamp} has no readable layout; its {} entries go as new ones",
                self.name(),
                entries.len()
            );
            return Ok(unstamp(entries));
        };
        // Members not claimed in this round (another due order) are claimed now.
        let missing: Vec<&str> = members
            .iter()
            .map(String::as_str)
            .filter(|m| !entries.iter().any(|e| e.id == *m))
            .collect();
        if !missing.is_empty() {
            let lua = Script::new(CLAIM_IDS_LUA);
            let mut script = lua.prepare_invoke();
            script
                .key(&self.keys.due)
                .key(&self.keys.inflight)
                .key(&self.keys.rec)
                .key(&self.keys.stamp)
                .arg(now_ms() + LEASE_MS);
            for m in &missing {
                script.arg(*m);
            }
            let reply = script.invoke_async(con).await.map_err(|e| e.to_string())?;
            entries.extend(claim_reply(reply)?);
        }
        let mut ordered = Vec::with_capacity(members.len());
        for m in &members {
            match entries.iter().position(|e| e.id == *m) {
                Some(i) => ordered.push(entries.swap_remove(i)),
                None => break,
            }
        }
        // Anything else claimed under this stamp is not part of the batch.
        let strays = entries;
        let mut records = Vec::with_capacity(ordered.len());
        let mut routed = Vec::with_capacity(ordered.len());
        let complete = ordered.len() == members.len();
        if complete {
            for c in &ordered {
                match self.prepare(c, schedule) {
                    Prepared::Record { record, entry, .. } => {
                        records.push(*record);
                        routed.push(entry);
                    }
                    _ => break,
                }
            }
        }
        if !complete || records.len() != members.len() {
            tracing::warn!(
                "retry {}: batch {stamp} to {dest}-{partition} cannot be rebuilt as it was sent \
                 ({} of {} entries left); they go as a new batch and may arrive twice",
                self.name(),
                ordered.len(),
                members.len()
            );
            self.forget_batch(con, stamp).await?;
            let mut back = unstamp(ordered);
            back.extend(unstamp(strays));
            return Ok(back);
        }
        tracing::info!(
            "retry {}: sending batch {stamp} ({} records) to {dest}-{partition} again",
            self.name(),
            records.len()
        );
        self.send(con, &dest, partition, records, seq, routed, stamp)
            .await?;
        Ok(unstamp(strays))
    }

    /// Delivers one stamped batch (committed on its partition's leader, wherever that is), then
    /// finalizes its entries. On failure the entries stay claimed and stamped: the next round
    /// (which first takes back every claim) sends the same batch again, and batches after it
    /// use a new producer id, so no later sequence can pass it.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        con: &mut RedisConn,
        dest: &str,
        partition: i32,
        records: Vec<Record>,
        seq: ProducerSeq,
        entries: Vec<(String, i64, Option<i64>)>,
        stamp: &str,
    ) -> Result<(), RoundError> {
        let batch = crate::records::encode_batch_as(records, now_ms(), Some(seq))?;
        self.deliverer
            .deliver(dest, partition, batch)
            .await
            .map_err(RoundError::Delivery)?;
        crate::fault::point(crate::fault::RETRY_AFTER_SEND);
        let now = now_ms();
        let mut ids = Vec::with_capacity(entries.len());
        for (id, due, attempt) in entries {
            // A Redis-scheduled partition is a retry topic (is_retry is set before this task
            // starts).
            self.state
                .count_delivery(attempt, now - due, &self.broker.metrics);
            ids.push(id);
        }
        Ok(self.finalize(con, stamp, &ids).await?)
    }

    /// Drops the layout of a batch that will not be sent again as such (its entries get new
    /// stamps when they go as new batches).
    async fn forget_batch(&self, con: &mut RedisConn, stamp: &str) -> Result<(), String> {
        let _: i64 = redis::cmd("HDEL")
            .arg(&self.keys.batch)
            .arg(stamp)
            .query_async(con)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Marks entries done (and forgets the batch layout `stamp`, when given).
    async fn finalize(
        &self,
        con: &mut RedisConn,
        stamp: &str,
        ids: &[String],
    ) -> Result<(), String> {
        let lua = Script::new(FINALIZE_LUA);
        let mut script = lua.prepare_invoke();
        script
            .key(&self.keys.inflight)
            .key(&self.keys.rec)
            .key(&self.keys.done)
            .key(&self.keys.stamp)
            .key(&self.keys.batch);
        script.arg(now_ms() + DONE_TTL_MS).arg(stamp);
        for id in ids {
            script.arg(id);
        }
        let _: i64 = script.invoke_async(con).await.map_err(|e| e.to_string())?;
        self.state
            .forwarded
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Why a round stopped: Redis did not answer (`kairos_redis_up` 0), or a batch could not be
/// delivered to its Kafka partition (Redis is fine; the batch goes again).
enum RoundError {
    Redis(String),
    Delivery(String),
}

impl From<String> for RoundError {
    fn from(e: String) -> Self {
        RoundError::Redis(e)
    }
}

/// One claimed entry: id, due time, stored record, and the stamp of the batch it was last sent
/// in ("" if none).
struct Claimed {
    id: String,
    due: i64,
    blob: Vec<u8>,
    stamp: String,
}

enum Prepared {
    Record {
        dest: String,
        partition: i32,
        record: Box<Record>,
        entry: (String, i64, Option<i64>),
    },
    Unreadable(String),
    NoTopic(String),
}

/// The claim scripts answer (id, due, blob, stamp) quadruples; a reply of another shape is
/// refused rather than indexed past its end.
fn claim_reply(values: Vec<Vec<u8>>) -> Result<Vec<Claimed>, String> {
    if !values.len().is_multiple_of(4) {
        return Err(format!(
            "claim script answered {} values, not a multiple of 4",
            values.len()
        ));
    }
    let now = now_ms();
    Ok(values
        .chunks_exact(4)
        .map(|e| Claimed {
            id: String::from_utf8_lossy(&e[0]).into_owned(),
            due: String::from_utf8_lossy(&e[1])
                .parse::<f64>()
                .map(|d| d as i64)
                .unwrap_or(now),
            blob: e[2].clone(),
            stamp: String::from_utf8_lossy(&e[3]).into_owned(),
        })
        .collect())
}

fn unstamp(entries: Vec<Claimed>) -> Vec<Claimed> {
    entries
        .into_iter()
        .map(|mut c| {
            c.stamp.clear();
            c
        })
        .collect()
}

/// "<producer id>:<epoch>:<first sequence>".
fn parse_stamp(stamp: &str) -> Option<ProducerSeq> {
    let mut it = stamp.split(':');
    let id = it.next()?.parse().ok()?;
    let epoch = it.next()?.parse().ok()?;
    let sequence = it.next()?.parse().ok()?;
    it.next().is_none().then_some((id, epoch, sequence))
}

/// "<destination>\n<partition>\n<entry id> <entry id> ...".
fn parse_batch(layout: &str) -> Option<(String, i32, Vec<String>)> {
    let mut lines = layout.splitn(3, '\n');
    let dest = lines.next()?.to_string();
    let partition = lines.next()?.parse().ok()?;
    let members: Vec<String> = lines
        .next()?
        .split(' ')
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect();
    (!dest.is_empty() && !members.is_empty()).then_some((dest, partition, members))
}

/// Records bound for one destination partition, with their (entry id, due, attempt).
type ClaimedBatch = (Vec<Record>, Vec<(String, i64, Option<i64>)>);

/// Checks `retry.redis.url` once at start-up: one clear line either way, and `kairos_redis_up`.
pub async fn probe(
    url: &str,
    ca_file: Option<&std::path::Path>,
    metrics: &crate::metrics::Metrics,
) {
    let result = async {
        let mut con = tokio::time::timeout(Duration::from_secs(3), connect(url, ca_file))
            .await
            .map_err(|_| "no answer within 3 s".to_string())??;
        let started = Instant::now();
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        metrics
            .redis_latency
            .observe(started.elapsed().as_secs_f64());
        Ok::<_, String>(pong)
    }
    .await;
    let shown = redact(url);
    match result {
        Ok(_) => {
            metrics.redis_up.store(1, Ordering::Relaxed);
            tracing::info!("retry scheduler: Redis at {shown} answers");
        }
        Err(e) => {
            metrics.redis_up.store(0, Ordering::Relaxed);
            tracing::error!("retry scheduler: cannot use Redis at {shown}: {e}; retry records wait in their topics until it answers");
        }
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// (append time, record) from a `rec` value.
fn decode_blob(blob: &[u8]) -> Option<(i64, Record)> {
    if blob.len() < 8 {
        return None;
    }
    let mut b = Bytes::copy_from_slice(blob);
    let append_ms = b.get_i64();
    let set = RecordBatchDecoder::decode(&mut b).ok()?;
    set.records.into_iter().next().map(|r| (append_ms, r))
}
