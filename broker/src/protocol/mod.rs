//! Frame ↔ request/response, and dispatch per API key.
//!
//! Every message goes through the `kafka-protocol` crate except two places where the broker must
//! control the bytes: the Fetch response (record batches go out with `sendfile`, see
//! [`fetch_encode`]) and the Produce v0–v2 error answer (the crate does not model those versions).

mod admin;
mod api_versions;
mod describe_log_dirs;
mod describe_producers;
mod describe_topic_partitions;
mod errors;
mod fetch;
pub mod fetch_encode;
mod metadata;
mod offsets;
mod produce;
mod reassign;

use std::sync::Arc;

use futures::FutureExt;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::net::{Chunk, Handler, Outcome, Peer};
use crate::server::Broker;

pub use api_versions::supported_versions;

/// Per-request facts the handlers may need.
pub struct RequestContext<'a> {
    pub header: &'a RequestHeader,
    pub version: i16,
    pub peer: &'a Peer,
    /// Microseconds the handler waited in a purgatory (set by Fetch), for the remote-time metric.
    pub remote_us: std::sync::atomic::AtomicU64,
}

impl RequestContext<'_> {
    pub fn client_id(&self) -> &str {
        self.header.client_id.as_deref().unwrap_or("")
    }
}

/// What a handler produced: a typed response, or pre-encoded chunks (Fetch).
pub enum Reply {
    /// Boxed: responses are large and the other variants small.
    Message(Box<ResponseKind>),
    Chunks(Vec<Chunk>),
    /// No answer (Produce with acks=0).
    None,
    /// Close the connection without an answer, as Kafka does.
    Close(String),
    /// The answer once this completes (a produce waiting for acks=all). The request's effects
    /// have happened; the connection goes on with the next request meanwhile.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = ResponseKind> + Send + 'static>>),
}

impl Reply {
    pub fn msg(response: ResponseKind) -> Reply {
        Reply::Message(Box::new(response))
    }
}

pub struct Dispatcher {
    broker: Arc<Broker>,
}

impl Dispatcher {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

impl Handler for Dispatcher {
    async fn handle(&self, frame: Bytes, peer: &Peer) -> Outcome {
        dispatch(&self.broker, frame, peer).await
    }

    fn connections_changed(&self, delta: i64) {
        self.broker
            .metrics
            .connections
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    fn in_flight_changed(&self, delta: i64) {
        self.broker
            .metrics
            .in_flight
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    fn request_done(&self, t: crate::net::RequestTiming) {
        let Ok(key) = ApiKey::try_from(t.api_key) else {
            return;
        };
        let Some(m) = self.broker.metrics.request(key) else {
            return;
        };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let handler = t.handle_end.saturating_duration_since(t.handle_start);
        m.queue_ms
            .observe(ms(t.handle_start.saturating_duration_since(t.read_at)));
        m.local_ms.observe(ms(handler.saturating_sub(t.remote)));
        m.remote_ms.observe(ms(t.remote));
        m.send_ms
            .observe(ms(t.sent_at.saturating_duration_since(t.handle_end)));
        m.total_ms
            .observe(ms(t.sent_at.saturating_duration_since(t.read_at)));
    }
}

fn encode_header(api_key: ApiKey, version: i16, correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::with_capacity(256);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    // Encoding a header into a BytesMut cannot fail (no size limits are involved).
    if let Err(e) = header.encode(&mut buf, header_version) {
        tracing::error!("encoding response header: {e}");
    }
    buf
}

async fn dispatch(broker: &Broker, mut frame: Bytes, peer: &Peer) -> Outcome {
    if frame.len() < 8 {
        return Outcome::Close(format!(
            "request of {} bytes is shorter than a header",
            frame.len()
        ));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        // Kafka closes the connection on an unknown API key (InvalidRequestException).
        return Outcome::Close(format!("unknown API key {api_key_raw}"));
    };
    let Some(range) = supported_versions(api_key) else {
        return Outcome::Close(format!("API {api_key:?} is not supported by this broker"));
    };
    if api_key == ApiKey::ApiVersions && version > range.1 {
        // KIP-511: answer a too-new ApiVersions with a v0 body, UNSUPPORTED_VERSION and our ranges.
        let mut buf = encode_header(api_key, 0, correlation_id);
        let body = api_versions::response(35);
        if body.encode(&mut buf, 0).is_err() {
            return Outcome::Close("cannot encode ApiVersions".into());
        }
        return Outcome::Respond(vec![Chunk::Bytes(buf.freeze())], None);
    }
    if api_key == ApiKey::Produce && (0..3).contains(&version) {
        return produce::legacy_unsupported(frame, version, correlation_id);
    }
    if version < range.0 || version > range.1 {
        // Kafka closes the connection for a version it does not support (except ApiVersions).
        return Outcome::Close(format!(
            "{api_key:?} v{version} is outside the supported range {}..={}",
            range.0, range.1
        ));
    }
    let header_version = api_key.request_header_version(version);
    let header = match RequestHeader::decode(&mut frame, header_version) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("malformed request header: {e}")),
    };
    let request = match RequestKind::decode(api_key, &mut frame, version) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Close(format!("malformed {api_key:?} v{version} request: {e}"));
        }
    };
    if frame.has_remaining() {
        tracing::debug!(
            "{api_key:?} v{version}: {} trailing bytes ignored",
            frame.remaining()
        );
    }
    let ctx = RequestContext {
        header: &header,
        version,
        peer,
        remote_us: Default::default(),
    };
    let metrics = broker.metrics.request(api_key);
    if let Some(m) = metrics {
        m.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let handle_start = std::time::Instant::now();
    let reply = handle_request(broker, &ctx, request).await;
    let remote =
        std::time::Duration::from_micros(ctx.remote_us.load(std::sync::atomic::Ordering::Relaxed));
    let answer = Answer {
        api_key,
        version,
        correlation_id,
        handle_start,
    };
    answer.finish(reply, &broker.metrics, remote)
}

/// What the encoding of a response needs to know about its request.
struct Answer {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    handle_start: std::time::Instant,
}

impl Answer {
    fn finish(
        self,
        reply: Reply,
        all_metrics: &Arc<crate::metrics::Metrics>,
        remote: std::time::Duration,
    ) -> Outcome {
        let respond = |answer: Self, response| {
            let metrics = all_metrics.request(answer.api_key);
            match answer.encode(response, metrics, remote) {
                Ok((chunks, handled)) => Outcome::Respond(chunks, handled),
                Err(reason) => Outcome::Close(reason),
            }
        };
        match reply {
            Reply::None => Outcome::NoResponse,
            Reply::Close(reason) => Outcome::Close(reason),
            Reply::Later(mut later) => {
                // Already done (acks=all with this broker the whole ISR): answered in place.
                if let Some(response) = later.as_mut().now_or_never() {
                    return respond(self, response);
                }
                let all_metrics = all_metrics.clone();
                let local_end = std::time::Instant::now();
                Outcome::Later(Box::pin(async move {
                    let response = later.await;
                    // The wait for replication is remote time, as in Kafka's purgatory.
                    let remote = remote + local_end.elapsed();
                    let metrics = all_metrics.request(self.api_key);
                    self.encode(response, metrics, remote)
                }))
            }
            Reply::Message(response) => respond(self, *response),
            Reply::Chunks(mut chunks) => {
                let header = encode_header(self.api_key, self.version, self.correlation_id);
                chunks.insert(0, Chunk::Bytes(header.freeze()));
                Outcome::Respond(chunks, Some(self.handled(remote)))
            }
        }
    }

    /// A response message with its header, counting its error codes.
    fn encode(
        self,
        response: ResponseKind,
        metrics: Option<&crate::metrics::RequestMetrics>,
        remote: std::time::Duration,
    ) -> crate::net::Answer {
        let (api_key, version) = (self.api_key, self.version);
        if let Some(m) = metrics {
            errors::for_each_error(&response, |code| m.error(code));
        }
        let mut buf = encode_header(api_key, version, self.correlation_id);
        if let Err(e) = response.encode(&mut buf, version) {
            tracing::error!("encoding {api_key:?} v{version} response: {e}");
            return Err(format!("cannot encode response: {e}"));
        }
        Ok((vec![Chunk::Bytes(buf.freeze())], Some(self.handled(remote))))
    }

    fn handled(&self, remote: std::time::Duration) -> crate::net::Handled {
        crate::net::Handled {
            api_key: self.api_key as i16,
            handle_start: self.handle_start,
            handle_end: std::time::Instant::now(),
            remote,
        }
    }
}

async fn handle_request(broker: &Broker, ctx: &RequestContext<'_>, request: RequestKind) -> Reply {
    use RequestKind as R;
    use ResponseKind as S;
    let v = ctx.version;
    let g = &broker.groups;
    match request {
        R::ApiVersions(_) => Reply::msg(S::ApiVersions(api_versions::response(0))),
        R::Metadata(req) => Reply::msg(S::Metadata(metadata::metadata(broker, req, v).await)),
        R::DescribeCluster(req) => Reply::msg(S::DescribeCluster(metadata::describe_cluster(
            broker, req, v,
        ))),
        R::FindCoordinator(req) => Reply::msg(S::FindCoordinator(
            metadata::find_coordinator(broker, req, v).await,
        )),
        R::Produce(req) => produce::produce(broker, req, v).await,
        R::Fetch(req) => fetch::fetch(broker, ctx, req, v).await,
        R::ListOffsets(req) => Reply::msg(S::ListOffsets(offsets::list_offsets(broker, req, v))),
        R::OffsetForLeaderEpoch(req) => Reply::msg(S::OffsetForLeaderEpoch(
            offsets::offset_for_leader_epoch(broker, req, v),
        )),
        R::DeleteRecords(req) => {
            Reply::msg(S::DeleteRecords(offsets::delete_records(broker, req, v)))
        }
        R::InitProducerId(req) => Reply::msg(S::InitProducerId(
            produce::init_producer_id(broker, req, v).await,
        )),
        R::CreateTopics(req) => {
            Reply::msg(S::CreateTopics(admin::create_topics(broker, req, v).await))
        }
        R::DeleteTopics(req) => {
            Reply::msg(S::DeleteTopics(admin::delete_topics(broker, req, v).await))
        }
        R::CreatePartitions(req) => Reply::msg(S::CreatePartitions(
            admin::create_partitions(broker, req, v).await,
        )),
        R::ElectLeaders(req) => Reply::msg(S::ElectLeaders(
            reassign::elect_leaders(broker, req, v).await,
        )),
        R::AlterPartitionReassignments(req) => Reply::msg(S::AlterPartitionReassignments(
            reassign::alter_partition_reassignments(broker, req, v).await,
        )),
        R::ListPartitionReassignments(req) => Reply::msg(S::ListPartitionReassignments(
            reassign::list_partition_reassignments(broker, req, v),
        )),
        R::DescribeLogDirs(req) => Reply::msg(S::DescribeLogDirs(
            describe_log_dirs::describe_log_dirs(broker, req),
        )),
        R::DescribeTopicPartitions(req) => Reply::msg(S::DescribeTopicPartitions(
            describe_topic_partitions::describe_topic_partitions(broker, req),
        )),
        R::DescribeProducers(req) => Reply::msg(S::DescribeProducers(
            describe_producers::describe_producers(broker, req),
        )),
        R::DescribeConfigs(req) => {
            Reply::msg(S::DescribeConfigs(admin::describe_configs(broker, req, v)))
        }
        R::AlterConfigs(req) => {
            Reply::msg(S::AlterConfigs(admin::alter_configs(broker, req, v).await))
        }
        R::IncrementalAlterConfigs(req) => Reply::msg(S::IncrementalAlterConfigs(
            admin::incremental_alter_configs(broker, req, v).await,
        )),
        R::JoinGroup(req) => {
            let host = ctx.peer.addr.ip().to_string();
            Reply::msg(S::JoinGroup(
                g.join_group(req, v, ctx.client_id(), &format!("/{host}"))
                    .await,
            ))
        }
        R::SyncGroup(req) => Reply::msg(S::SyncGroup(g.sync_group(req, v).await)),
        R::Heartbeat(req) => Reply::msg(S::Heartbeat(g.heartbeat(req, v).await)),
        R::LeaveGroup(req) => Reply::msg(S::LeaveGroup(g.leave_group(req, v).await)),
        R::OffsetCommit(req) => Reply::msg(S::OffsetCommit(g.offset_commit(req, v).await)),
        R::OffsetFetch(req) => Reply::msg(S::OffsetFetch(g.offset_fetch(req, v).await)),
        R::ListGroups(req) => Reply::msg(S::ListGroups(g.list_groups(req, v).await)),
        R::DescribeGroups(req) => Reply::msg(S::DescribeGroups(g.describe_groups(req, v).await)),
        R::DeleteGroups(req) => Reply::msg(S::DeleteGroups(g.delete_groups(req, v).await)),
        R::OffsetDelete(req) => Reply::msg(S::OffsetDelete(g.offset_delete(req, v).await)),
        // `supported_versions` gates every key handled above; anything else closes, as Kafka.
        _ => Reply::Close("request for an API this broker does not serve".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Proves the request path never panics on hostile input: for every advertised API and
    /// version, random bodies behind a valid header either get an answer or a close.
    /// The seed is printed; rerun with KAIROS_FUZZ_SEED to reproduce.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_bodies_never_panic() {
        let seed: u64 = std::env::var("KAIROS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("random_bodies_never_panic seed={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let config = crate::server::test_config(dir.path(), 2);
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(|_| true).unwrap());
        let broker = crate::server::open_standalone(&config, metrics)
            .await
            .unwrap();
        broker
            .create_topic("t", 2, 1, Default::default(), None)
            .await
            .unwrap();
        let peer = Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let mut answered = 0;
        for key in ApiKey::iter() {
            let Some((min, max)) = supported_versions(key) else {
                continue;
            };
            for version in min..=max {
                for _ in 0..40 {
                    let mut frame = Vec::new();
                    frame.extend_from_slice(&(key as i16).to_be_bytes());
                    frame.extend_from_slice(&version.to_be_bytes());
                    frame.extend_from_slice(&7i32.to_be_bytes());
                    // Header rest: client id "c" (and an empty tag section for flexible headers),
                    // sometimes garbage instead.
                    if rng.random_bool(0.8) {
                        frame.extend_from_slice(&[0, 1, b'c']);
                        if key.request_header_version(version) >= 2 {
                            frame.push(0);
                        }
                    }
                    let len = rng.random_range(0..64);
                    frame.extend((0..len).map(|_| {
                        // Bias towards small and "length-like" bytes.
                        match rng.random_range(0..4) {
                            0 => 0,
                            1 => 0xff,
                            _ => rng.random(),
                        }
                    }));
                    // Long polls must not stall the test: any waiting fetch is bounded by its
                    // max_wait (clamped to 30 s) but random ones are mostly tiny or invalid.
                    let outcome = tokio::time::timeout(
                        std::time::Duration::from_secs(35),
                        dispatch(&broker, Bytes::from(frame), &peer),
                    )
                    .await
                    .expect("dispatch finished");
                    let outcome = match outcome {
                        Outcome::Later(later) => match later.await {
                            Ok((chunks, handled)) => Outcome::Respond(chunks, handled),
                            Err(reason) => Outcome::Close(reason),
                        },
                        outcome => outcome,
                    };
                    if matches!(outcome, Outcome::Respond(..)) {
                        answered += 1;
                    }
                }
            }
        }
        assert!(
            answered > 0,
            "some random requests are valid enough to answer"
        );
    }
}
