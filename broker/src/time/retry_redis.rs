//! Retry topics scheduled in Redis (`retry.redis.url`), design.md §4.
//!
//! Keys of retry partition P of topic T share the hash tag `{T:P}` (one Redis Cluster slot):
//! - `<prefix>:{T:P}:due`      ZSET entry id → due time (ms);
//! - `<prefix>:{T:P}:rec`      HASH entry id → record (8-byte append time + a one-record batch);
//! - `<prefix>:{T:P}:inflight` ZSET entry id → lease expiry (ms);
//! - `<prefix>:{T:P}:pos`      HASH entry id → "<partition>:<offset>" of the destination before
//!   the append was tried (a retried claim checks the destination from there);
//! - `<prefix>:{T:P}:done`     ZSET entry id → expiry: finished entries, so re-indexing after a
//!   crash does not schedule them again.
//!
//! Entry id = `<offset>:<attempt>` of the record in the retry partition. Flow: the task reads
//! the retry partition and schedules entries (one Lua script, idempotent); only then does its
//! checkpoint move, so while Redis is down records wait in the retry topic. A claim script moves
//! due entries to `inflight` with a lease; the records are appended to their destination with a
//! `kairos.retry.entry` header, then a finalize script deletes the entry and marks it done. A
//! claim of an entry that has a `pos` (a previous holder crashed mid-way) scans the destination
//! from that position for the entry header first, so nothing is appended twice.

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

use super::delay::{header_str, read_from, DelayPartition, Schedule};
use super::murmur2::partition_for;
use crate::partition::{now_ms, Partition};
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
/// A scheduler round that takes longer is treated as Redis being unavailable (the client's
/// own reconnect logic can otherwise wait far longer than its timeouts suggest).
const ROUND_TIMEOUT: Duration = Duration::from_secs(3);

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

const FINALIZE_LUA: &str = r"
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[i])
end
return #ARGV - 1";

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

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
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
    pos: String,
    done: String,
}

impl Keys {
    fn new(prefix: &str, topic: &str, partition: i32) -> Self {
        let base = format!("{prefix}:{{{topic}:{partition}}}");
        Keys {
            due: format!("{base}:due"),
            rec: format!("{base}:rec"),
            inflight: format!("{base}:inflight"),
            pos: format!("{base}:pos"),
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
    reaped_at_start: bool,
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
            broker,
            partition,
            state,
            url,
            keys,
            con: None,
            indexed_to,
            last_checkpoint: Instant::now(),
            warned_down: false,
            reaped_at_start: false,
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
            let round = tokio::time::timeout(ROUND_TIMEOUT, self.step())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", ROUND_TIMEOUT.as_secs())));
            let wait = match round {
                Ok(wait) => {
                    if self.warned_down {
                        tracing::info!("retry {}: Redis is back; scheduling resumes", self.name());
                        self.warned_down = false;
                    }
                    self.broker.metrics.redis_up.store(1, Ordering::Relaxed);
                    wait
                }
                Err(e) => {
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
        let con = connect(
            &self.url,
            self.broker.config.retry_redis_tls_ca_file.as_deref(),
        )
        .await?;
        self.con = Some(con.clone());
        Ok(con)
    }

    fn write_checkpoint(&mut self) {
        let path = self.partition.dir().join(CHECKPOINT_FILE);
        if let Err(e) = super::delay::rewrite(&path, self.indexed_to.to_string().as_bytes()) {
            tracing::warn!("retry {}: checkpoint failed: {e}", self.name());
        }
        self.last_checkpoint = Instant::now();
    }

    /// One round: reap (once), schedule new records, deliver due ones. Returns how long to wait.
    async fn step(&mut self) -> Result<Duration, String> {
        let Some(schedule) = self.schedule() else {
            return Ok(IDLE_WAKE);
        };
        let mut con = self.connection().await?;
        if !self.reaped_at_start {
            // This broker leads the partition: whatever it had in flight before a restart is
            // back in `due` now (the pos check keeps it from being appended twice).
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
        *self.state.blocked.lock() = None;
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

    /// Claims due entries, appends them to their destination, finalizes. Returns the wait
    /// until the next due entry (bounded).
    async fn deliver(
        &mut self,
        con: &mut RedisConn,
        schedule: &Schedule,
    ) -> Result<Duration, String> {
        loop {
            let now = now_ms();
            let claimed: Vec<Vec<u8>> = Script::new(CLAIM_LUA)
                .key(&self.keys.due)
                .key(&self.keys.inflight)
                .key(&self.keys.rec)
                .key(&self.keys.pos)
                .arg(now)
                .arg(CLAIM_MAX)
                .arg(now + LEASE_MS)
                .invoke_async(con)
                .await
                .map_err(|e| e.to_string())?;
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
            let mut finished: Vec<String> = Vec::new();
            // destination → partition → (records, (entry id, due, attempt))
            let mut batches: BTreeMap<(String, i32), ClaimedBatch> = BTreeMap::new();
            // The claim script answers (id, due, blob, pos) quadruples; a reply of another
            // shape is refused rather than indexed past its end.
            if !claimed.len().is_multiple_of(4) {
                return Err(format!(
                    "claim script answered {} values, not a multiple of 4",
                    claimed.len()
                ));
            }
            for entry in claimed.chunks_exact(4) {
                let id = String::from_utf8_lossy(&entry[0]).into_owned();
                let due: i64 = String::from_utf8_lossy(&entry[1])
                    .parse::<f64>()
                    .map(|d| d as i64)
                    .unwrap_or(now);
                let Some((append_ms, mut record)) = decode_blob(&entry[2]) else {
                    tracing::warn!(
                        "retry {}: entry {id} has no readable record; dropped",
                        self.name()
                    );
                    finished.push(id);
                    continue;
                };
                let offset: i64 = id
                    .split(':')
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
                    // Destination missing: put it back, try again later (nothing dropped).
                    *self.state.blocked.lock() = Some(format!("topic {dest} does not exist"));
                    self.reap(con, i64::MAX).await?;
                    return Ok(Duration::from_secs(1));
                };
                let partition =
                    partition_for(record.key.as_deref(), self.state.partition, info.partitions);
                let tag = format!("{}:{}:{id}", self.state.topic, self.state.partition);
                // A previous holder may have appended it already (crash before finalize).
                if !entry[3].is_empty() {
                    if let Some(tp) = self.broker.replicas.get(&dest, partition) {
                        let from: i64 = String::from_utf8_lossy(&entry[3])
                            .rsplit(':')
                            .next()
                            .and_then(|o| o.parse().ok())
                            .unwrap_or(0);
                        if already_appended(&tp, from, &tag)? {
                            finished.push(id);
                            continue;
                        }
                    }
                }
                record.headers.insert(
                    StrBytes::from_static_str(RETRY_ENTRY),
                    Some(Bytes::from(tag)),
                );
                let b = batches.entry((dest, partition)).or_default();
                b.0.push(record);
                b.1.push((id, due, attempt));
            }
            for ((dest, partition), (records, entries)) in batches {
                let Ok(tp) = self.broker.leader_replica(&dest, partition) else {
                    return Err(format!(
                        "partition {dest}-{partition} is not led by this broker"
                    ));
                };
                let mut pipe = redis::pipe();
                for (id, _, _) in &entries {
                    pipe.hset(
                        &self.keys.pos,
                        id,
                        format!("{partition}:{}", tp.log_end_offset()),
                    )
                    .ignore();
                }
                let _: () = pipe.query_async(con).await.map_err(|e| e.to_string())?;
                let bytes = crate::records::encode_batch(records, now_ms())?;
                tp.append(bytes)
                    .map_err(|e| format!("appending to {dest}-{partition}: {}", e.message))?;
                let now = now_ms();
                for (id, due, attempt) in entries {
                    // A Redis-scheduled partition is a retry topic (is_retry is set before
                    // this task starts).
                    self.state
                        .count_delivery(attempt, now - due, &self.broker.metrics);
                    finished.push(id);
                }
            }
            if !finished.is_empty() {
                let lua = Script::new(FINALIZE_LUA);
                let mut script = lua.prepare_invoke();
                script
                    .key(&self.keys.inflight)
                    .key(&self.keys.rec)
                    .key(&self.keys.done)
                    .key(&self.keys.pos);
                script.arg(now_ms() + DONE_TTL_MS);
                for id in &finished {
                    script.arg(id);
                }
                let _: i64 = script.invoke_async(con).await.map_err(|e| e.to_string())?;
                self.state
                    .forwarded
                    .fetch_add(finished.len() as u64, Ordering::Relaxed);
            }
        }
    }
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

/// Whether `tp` holds a record with header `kairos.retry.entry` = `tag` at or after `from`.
fn already_appended(tp: &Partition, from: i64, tag: &str) -> Result<bool, String> {
    let mut offset = from.max(tp.log_start_offset());
    while offset < tp.log_end_offset() {
        let Some((records, next)) = read_from(tp, offset)? else {
            break;
        };
        if records
            .iter()
            .any(|r| header_str(&r.record, RETRY_ENTRY).as_deref() == Some(tag))
        {
            return Ok(true);
        }
        offset = next;
    }
    Ok(false)
}
