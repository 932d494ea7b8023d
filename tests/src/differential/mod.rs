//! The differential harness: one scenario run against Apache Kafka 4.4 (the reference) and
//! against Kairos, comparing what a client observes.
//!
//! A scenario sends raw Kafka requests through a [`Ctx`] and records observations: error codes
//! (by name), offsets, timestamps, config values with their source and flags, group states,
//! generations and assignments, metadata. Things that differ by nature between two clusters
//! (cluster and topic ids, generated member ids, error messages, throttle times) are left out
//! or replaced by placeholders. Each scenario runs on both targets under the same topic and
//! group names; both clusters are fresh, one node, node id 1.

pub mod requests;
pub mod scenarios;

use std::net::SocketAddr;

use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::RawConn;

/// One scenario: a name (stable: docs/compatibility.md lists differing ones by it), whether it
/// feeds the broker bad input, and its steps.
pub struct Scenario {
    pub name: &'static str,
    pub bad_input: bool,
    pub run: fn(&mut Ctx),
}

/// A connection to one target and the observations of the running scenario.
pub struct Ctx {
    addr: SocketAddr,
    conn: Option<RawConn>,
    correlation_id: i32,
    /// Groups whose coordinator was found ready (awaited once per scenario).
    coordinators_ready: std::collections::HashSet<String>,
    /// Connections that carried acks=0 produces (see [`Ctx::send_unanswered`]).
    unanswered: Vec<RawConn>,
    pub observations: Vec<String>,
}

impl Ctx {
    pub fn new(addr: SocketAddr) -> Ctx {
        Ctx {
            addr,
            conn: None,
            correlation_id: 0,
            coordinators_ready: Default::default(),
            unanswered: Vec::new(),
            observations: Vec::new(),
        }
    }

    /// Records one observation.
    pub fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        if std::env::var_os("KAIROS_DIFF_TRACE").is_some() {
            eprintln!("  {} {what}", self.addr);
        }
        self.observations.push(what);
    }

    /// Sends `req` as `version` and decodes the answer. A connection the broker closes (as
    /// Kafka does on a request it cannot parse or serve) is an observation, and None.
    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> Option<R::Response> {
        let key = ApiKey::try_from(R::KEY).expect("known api key");
        let buf = self.frame(version, req);
        let started = std::time::Instant::now();
        let frame = self.roundtrip(&buf);
        if started.elapsed() > std::time::Duration::from_secs(2) {
            eprintln!(
                "  slow answer: {key:?} v{version} from {} took {:?}",
                self.addr,
                started.elapsed()
            );
        }
        let Some(frame) = frame else {
            self.note(format!("{key:?} v{version}: connection closed"));
            return None;
        };
        let mut b = bytes::Bytes::from(frame);
        ResponseHeader::decode(&mut b, key.response_header_version(version))
            .expect("decode response header");
        match <R::Response as Decodable>::decode(&mut b, version) {
            Ok(r) => Some(r),
            Err(e) => {
                self.note(format!("{key:?} v{version}: undecodable response: {e}"));
                None
            }
        }
    }

    /// Header and body of one request, with the next correlation id.
    fn frame<R: Request>(&mut self, version: i16, req: &R) -> bytes::BytesMut {
        let key = ApiKey::try_from(R::KEY).expect("known api key");
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("differential")));
        let mut buf = bytes::BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        req.encode(&mut buf, version).expect("encode request");
        buf
    }

    /// Sends a request that gets no answer (Produce with acks=0) on a connection of its own,
    /// kept open for the scenario: a broker may drop what a closed connection sent before it is
    /// processed.
    pub fn send_unanswered<R: Request>(&mut self, version: i16, req: &R) {
        let buf = self.frame(version, req);
        let mut conn = RawConn::connect(self.addr);
        conn.send(&buf);
        self.unanswered.push(conn);
    }

    /// Asks `ready` every 50 ms, at most 100 times, without recording anything: for state a
    /// scenario must see settled before it observes (a leader, a deletion, a commit).
    pub fn wait_for(&mut self, mut ready: impl FnMut(&mut Ctx) -> bool) -> bool {
        for _ in 0..100 {
            if ready(self) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// Sends a raw request body (header included) and returns the raw response frame.
    pub fn roundtrip(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        let conn = self.conn.get_or_insert_with(|| RawConn::connect(self.addr));
        conn.send(request);
        let frame = conn.recv();
        if frame.is_none() {
            self.conn = None;
        }
        frame
    }
}

/// The name of a Kafka error code, as clients print it ("NONE" for 0).
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(kafka_protocol::ResponseError::Unknown(c)) => format!("ERROR_{c}"),
        Some(e) => format!("{e:?}"),
    }
}

/// One scenario's observations on both targets.
pub struct Outcome {
    pub name: &'static str,
    pub bad_input: bool,
    pub kafka: Vec<String>,
    pub kairos: Vec<String>,
}

impl Outcome {
    pub fn differs(&self) -> bool {
        self.kafka != self.kairos
    }

    /// The observations side by side, marking the lines that differ.
    pub fn diff(&self) -> String {
        let mut out = String::new();
        let n = self.kafka.len().max(self.kairos.len());
        for i in 0..n {
            let k = self.kafka.get(i).map(String::as_str).unwrap_or("-");
            let r = self.kairos.get(i).map(String::as_str).unwrap_or("-");
            let mark = if k == r { "  " } else { "≠ " };
            out.push_str(&format!("{mark}kafka:  {k}\n"));
            if k != r {
                out.push_str(&format!("{mark}kairos: {r}\n"));
            }
        }
        out
    }
}

/// Runs every scenario on both targets (the reference first).
pub fn run_all(kafka: SocketAddr, kairos: SocketAddr, scenarios: &[Scenario]) -> Vec<Outcome> {
    scenarios
        .iter()
        .map(|s| {
            let started = std::time::Instant::now();
            let mut on_kafka = Ctx::new(kafka);
            (s.run)(&mut on_kafka);
            let mut on_kairos = Ctx::new(kairos);
            (s.run)(&mut on_kairos);
            eprintln!("scenario {} ran in {:?}", s.name, started.elapsed());
            Outcome {
                name: s.name,
                bad_input: s.bad_input,
                kafka: on_kafka.observations,
                kairos: on_kairos.observations,
            }
        })
        .collect()
}

/// Scenario names listed as known differences in docs/compatibility.md: the backticked first
/// cell of each table row under the heading "Differential scenarios that differ".
pub fn listed_differences(doc: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in doc.lines() {
        if line.starts_with('#') {
            inside = line.contains("Differential scenarios that differ");
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(rest) = line.strip_prefix("| `") {
            if let Some((name, _)) = rest.split_once('`') {
                out.push(name.to_string());
            }
        }
    }
    out
}
