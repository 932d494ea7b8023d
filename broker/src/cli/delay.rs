//! `kairos delay send|cancel|ls|stats`: schedule records on a delay topic (Kafka produce with
//! Kairos headers) and manage pending ones through the gRPC admin API.

use std::time::Duration;

use clap::{Args, Subcommand};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Conn;
use crate::admin::v1::{self, delay_admin_client::DelayAdminClient};

#[derive(Args, Clone)]
pub struct AdminConn {
    /// A broker's admin.listener (gRPC; any broker: it asks the partitions' leaders). Default:
    /// the first bootstrap server's host on port 9095 (in Kubernetes, the bootstrap Service's
    /// admin port).
    #[arg(long = "admin-server", global = true, env = "KAIROS_ADMIN")]
    admin: Option<String>,
}

impl AdminConn {
    /// Fills in the default from `bootstrap` when no admin address was given.
    pub fn default_from(&mut self, bootstrap: &str) {
        if self.admin.is_none() {
            let first = bootstrap.split(',').next().unwrap_or_default().trim();
            let host = match first.rsplit_once(':') {
                Some((host, _)) => host,
                None => first,
            };
            let host = if host.is_empty() { "127.0.0.1" } else { host };
            self.admin = Some(format!("{host}:{DEFAULT_ADMIN_PORT}"));
        }
    }

    fn addr(&self) -> &str {
        self.admin.as_deref().unwrap_or("127.0.0.1:9095")
    }
}

/// The default `admin.listener` port.
const DEFAULT_ADMIN_PORT: u16 = 9095;

#[derive(Subcommand)]
pub enum DelayCmd {
    /// Schedule one record: delivered to the topic's target after --delay or at --at.
    Send {
        topic: String,
        /// The record's value.
        value: String,
        #[arg(long, short = 'k')]
        key: Option<String>,
        /// Delay from now: 30m, 5s, 1500ms, 2h, 1d.
        #[arg(long, conflicts_with = "at")]
        delay: Option<String>,
        /// Absolute due time, epoch milliseconds.
        #[arg(long)]
        at: Option<i64>,
        /// Extra header key=value (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Cancel pending records by key, or the one at --partition/--offset.
    Cancel {
        topic: String,
        #[arg(long, short = 'k', conflicts_with_all = ["partition", "offset"])]
        key: Option<String>,
        #[arg(long, requires = "offset")]
        partition: Option<i32>,
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
    },
    /// List pending records in due order.
    Ls {
        topic: String,
        #[arg(long, short = 'k')]
        key: Option<String>,
        /// Only records due at or after this epoch ms.
        #[arg(long = "due-from")]
        due_from: Option<i64>,
        /// Only records due before this epoch ms.
        #[arg(long = "due-to")]
        due_to: Option<i64>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Pending counts by due-time bucket, forwarded and cancelled totals, and why records wait.
    Stats { topic: String },
}

/// Parses "30m", "5s", "1500ms", "2h", "1d" (a bare number is milliseconds).
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30m, 5s, 1500ms"))?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

pub async fn client_channel(admin: &AdminConn) -> Result<tonic::transport::Channel, String> {
    let endpoint = format!("http://{}", admin.addr());
    tonic::transport::Endpoint::from_shared(endpoint)
        .map_err(|e| format!("invalid --admin-server {}: {e}", admin.addr()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .map_err(|e| format!("cannot reach the admin API at {}: {e}", admin.addr()))
}

async fn client(admin: &AdminConn) -> Result<DelayAdminClient<tonic::transport::Channel>, String> {
    Ok(DelayAdminClient::new(client_channel(admin).await?))
}

pub fn status(e: tonic::Status) -> String {
    format!("{} ({:?})", e.message(), e.code())
}

fn fmt_key(k: &Option<Vec<u8>>) -> String {
    k.as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_else(|| "null".into())
}

pub async fn run(cmd: DelayCmd, conn: &Conn, admin: &AdminConn) -> Result<(), String> {
    match cmd {
        DelayCmd::Send {
            topic,
            value,
            key,
            delay,
            at,
            headers,
        } => {
            let mut hs = OwnedHeaders::new();
            let due_header = match (delay, at) {
                (Some(d), None) => Some(("kairos.delay.ms", parse_duration_ms(&d)?.to_string())),
                (None, Some(t)) => Some(("kairos.deliver.at.ms", t.to_string())),
                _ => None,
            };
            if let Some((k, v)) = &due_header {
                hs = hs.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            for h in &headers {
                let (k, v) = h
                    .split_once('=')
                    .ok_or_else(|| format!("--header {h:?}: expected key=value"))?;
                hs = hs.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let producer: FutureProducer = conn
                .config()?
                .create()
                .map_err(|e| format!("cannot create producer: {e}"))?;
            let mut record = FutureRecord::<String, String>::to(&topic)
                .payload(&value)
                .headers(hs);
            if let Some(k) = &key {
                record = record.key(k);
            }
            let delivery = producer.send(record, Duration::from_secs(30)).await;
            let d = delivery.map_err(|(e, _)| format!("cannot schedule on {topic}: {e}"))?;
            println!(
                "scheduled on {topic} partition {} offset {}",
                d.partition, d.offset
            );
            Ok(())
        }
        DelayCmd::Cancel {
            topic,
            key,
            partition,
            offset,
        } => {
            let target = match (key, partition, offset) {
                (Some(k), None, None) => v1::cancel_request::Target::Key(k.into_bytes()),
                (None, Some(p), Some(o)) => v1::cancel_request::Target::Record(v1::RecordRef {
                    partition: p,
                    offset: o,
                }),
                _ => return Err("give --key, or --partition and --offset".into()),
            };
            let resp = client(admin)
                .await?
                .cancel(v1::CancelRequest {
                    topic,
                    target: Some(target),
                    partitions: vec![],
                })
                .await
                .map_err(status)?
                .into_inner();
            if resp.outcome == v1::cancel_response::Outcome::Cancelled as i32 {
                println!("{}", resp.message);
                Ok(())
            } else {
                Err(resp.message)
            }
        }
        DelayCmd::Ls {
            topic,
            key,
            due_from,
            due_to,
            limit,
        } => {
            let mut c = client(admin).await?;
            let now = crate::partition::now_ms();
            println!(
                "{:>9} {:>12} {:>15} {:>12}  KEY",
                "PARTITION", "OFFSET", "DUE-MS", "DUE-IN"
            );
            let mut token = String::new();
            let mut shown = 0usize;
            loop {
                let resp = c
                    .list_pending(v1::ListPendingRequest {
                        topic: topic.clone(),
                        key: key.clone().map(String::into_bytes),
                        due_from_ms: due_from,
                        due_to_ms: due_to,
                        page_size: (limit - shown).min(1000) as u32,
                        page_token: token.clone(),
                        partitions: vec![],
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for r in &resp.records {
                    let due_in = r.due_ms - now;
                    let due_in = if due_in <= 0 {
                        format!("overdue {}ms", -due_in)
                    } else {
                        format!("{}s", due_in / 1000)
                    };
                    println!(
                        "{:>9} {:>12} {:>15} {:>12}  {}",
                        r.partition,
                        r.offset,
                        r.due_ms,
                        due_in,
                        fmt_key(&r.key)
                    );
                }
                shown += resp.records.len();
                if resp.next_page_token.is_empty() || shown >= limit {
                    break;
                }
                token = resp.next_page_token;
            }
            eprintln!("{shown} pending record(s) shown");
            Ok(())
        }
        DelayCmd::Stats { topic } => {
            let s = client(admin)
                .await?
                .stats(v1::StatsRequest {
                    topic,
                    partitions: vec![],
                })
                .await
                .map_err(status)?
                .into_inner();
            print_due_stats(&s);
            println!("forwarded      {}", s.forwarded);
            println!("cancelled      {}", s.cancelled);
            if !s.blocked_reason.is_empty() {
                println!("waiting        {}", s.blocked_reason);
            }
            Ok(())
        }
    }
}

/// The pending and due-time lines `delay stats` and `retry stats` share.
pub(super) fn print_due_stats(s: &v1::StatsResponse) {
    println!("topic          {}", s.topic);
    println!("pending        {}", s.pending);
    println!(
        "overdue        {} (oldest {} ms late)",
        s.overdue, s.oldest_overdue_ms
    );
    println!("due < 1 min    {}", s.due_within_1m);
    println!("due < 1 hour   {}", s.due_within_1h);
    println!("due < 1 day    {}", s.due_within_1d);
    println!("due later      {}", s.due_later);
}

#[cfg(test)]
mod tests {
    use super::AdminConn;

    #[test]
    fn the_admin_address_defaults_to_the_first_bootstrap_host() {
        let mut a = AdminConn { admin: None };
        a.default_from("kairos-bootstrap:9092,other:9092");
        assert_eq!(a.addr(), "kairos-bootstrap:9095");
        let mut a = AdminConn { admin: None };
        a.default_from("[::1]:19092");
        assert_eq!(a.addr(), "[::1]:9095");
        let mut a = AdminConn {
            admin: Some("10.0.0.1:7000".into()),
        };
        a.default_from("kairos-bootstrap:9092");
        assert_eq!(a.addr(), "10.0.0.1:7000");
    }

    #[test]
    fn durations_parse_with_units() {
        use super::parse_duration_ms as p;
        assert_eq!(p("30m"), Ok(1_800_000));
        assert_eq!(p("5s"), Ok(5_000));
        assert_eq!(p("1500ms"), Ok(1_500));
        assert_eq!(p("250"), Ok(250));
        assert_eq!(p("2h"), Ok(7_200_000));
        assert!(p("soon").is_err());
        assert!(p("5y").is_err());
    }
}
