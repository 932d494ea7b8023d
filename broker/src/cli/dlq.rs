//! `kairos dlq ls|redrive` and `kairos retry stats`.

use std::time::Duration;

use clap::Subcommand;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::delay::{client_channel, status, AdminConn};
use super::Conn;
use crate::admin::v1::{
    self, delay_admin_client::DelayAdminClient, dlq_admin_client::DlqAdminClient,
};
use crate::time::headers;

#[derive(Subcommand)]
pub enum DlqCmd {
    /// Print dead-letter records: key, reason, attempts, first/last failure, source topic.
    Ls {
        topic: String,
        #[arg(long = "max-messages", short = 'n', default_value_t = 100)]
        max_messages: usize,
    },
    /// Send dead-letter records back to their source topic (attempt count reset).
    Redrive {
        topic: String,
        /// Only records with this key.
        #[arg(long, short = 'k')]
        key: Option<String>,
        /// Only records dead-lettered at or after this epoch ms.
        #[arg(long)]
        from: Option<i64>,
        /// Only records dead-lettered before this epoch ms.
        #[arg(long)]
        until: Option<i64>,
        /// Send them here instead of each record's source topic.
        #[arg(long)]
        to: Option<String>,
        /// Count what would move; move nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
pub enum RetryCmd {
    /// Pending retries by due bucket, redelivered and dead-lettered counts.
    Stats { topic: String },
}

pub async fn dlq(cmd: DlqCmd, conn: &Conn, admin: &AdminConn) -> Result<(), String> {
    match cmd {
        DlqCmd::Ls {
            topic,
            max_messages,
        } => {
            let mut cfg = conn.config()?;
            cfg.set("group.id", format!("kairos-dlq-ls-{}", std::process::id()))
                .set("enable.auto.commit", "false");
            let consumer = conn.consumer(cfg)?;
            let mut tpl = TopicPartitionList::new();
            for (p, _, _) in super::topic_metadata(&consumer, conn, &topic)? {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .map_err(|e| e.to_string())?;
            }
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            println!(
                "{:>9} {:>10}  {:<20} {:>8}  {:<15} {:<15}  REASON",
                "PARTITION", "OFFSET", "KEY", "ATTEMPTS", "FIRST-FAILURE", "SOURCE"
            );
            let mut shown = 0usize;
            let mut idle = std::time::Instant::now();
            while shown < max_messages && idle.elapsed() < Duration::from_secs(2) {
                let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let m = m.map_err(|e| format!("reading {topic}: {e}"))?;
                idle = std::time::Instant::now();
                let h = |name: &str| -> String {
                    m.headers()
                        .and_then(|hs| hs.iter().find(|x| x.key == name).and_then(|x| x.value))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| "-".into())
                };
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_else(|| "null".into());
                println!(
                    "{:>9} {:>10}  {:<20} {:>8}  {:<15} {:<15}  {}",
                    m.partition(),
                    m.offset(),
                    key,
                    h(headers::DLQ_ATTEMPTS),
                    h(headers::DLQ_FIRST_FAILURE_MS),
                    h(headers::DLQ_SOURCE_TOPIC),
                    h(headers::DLQ_REASON)
                );
                shown += 1;
            }
            eprintln!("{shown} dead-letter record(s) shown");
            Ok(())
        }
        DlqCmd::Redrive {
            topic,
            key,
            from,
            until,
            to,
            dry_run,
        } => {
            let resp = DlqAdminClient::new(client_channel(admin).await?)
                .redrive(v1::RedriveRequest {
                    dlq_topic: topic.clone(),
                    key: key.map(String::into_bytes),
                    from_ms: from,
                    to_ms: until,
                    to_topic: to.unwrap_or_default(),
                    dry_run,
                })
                .await
                .map_err(status)?
                .into_inner();
            for p in &resp.problems {
                eprintln!("kairos: {p}");
            }
            let verb = if dry_run { "would redrive" } else { "redrove" };
            println!(
                "{verb} {} of {} matching record(s) from {topic}; {} left in the DLQ",
                resp.redriven, resp.matched, resp.skipped
            );
            if resp.skipped > 0 && resp.redriven == 0 {
                return Err(format!("nothing redriven: {}", resp.problems.join("; ")));
            }
            Ok(())
        }
    }
}

pub async fn retry(cmd: RetryCmd, admin: &AdminConn) -> Result<(), String> {
    match cmd {
        RetryCmd::Stats { topic } => {
            let s = DelayAdminClient::new(client_channel(admin).await?)
                .stats(v1::StatsRequest {
                    topic: topic.clone(),
                    partitions: vec![],
                })
                .await
                .map_err(status)?
                .into_inner();
            if !s.retry {
                return Err(format!(
                    "topic {topic} is not a retry topic (use kairos delay stats)"
                ));
            }
            super::delay::print_due_stats(&s);
            println!(
                "redelivered    {}",
                s.forwarded - s.dead_lettered.min(s.forwarded)
            );
            println!("dead-lettered  {}", s.dead_lettered);
            if !s.blocked_reason.is_empty() {
                println!("waiting        {}", s.blocked_reason);
            }
            Ok(())
        }
    }
}
