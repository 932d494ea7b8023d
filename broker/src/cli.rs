//! The `kairos` command line: `serve` runs the broker; the rest is an admin CLI over librdkafka
//! (like Redpanda's rpk). Errors are one line on stderr and exit status 1.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

mod perf;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "Kairos: a Kafka-compatible broker with time built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Conn {
    /// Broker address(es), comma separated.
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        global = true,
        default_value = "127.0.0.1:9092",
        env = "KAIROS_BOOTSTRAP"
    )]
    bootstrap: String,
    /// Extra librdkafka client properties, key=value.
    #[arg(long = "property", short = 'X', global = true)]
    properties: Vec<String>,
}

impl Conn {
    fn config(&self) -> Result<ClientConfig, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for p in &self.properties {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--property {p}: expected key=value"))?;
            c.set(k, v);
        }
        Ok(c)
    }
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, String> {
        self.config()?
            .create()
            .map_err(|e| format!("cannot create admin client: {e}"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// A Kafka-style server.properties file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config key: --override key=value (repeatable).
        #[arg(long = "override")]
        overrides: Vec<String>,
    },
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(TopicCmd),
    /// Produce lines from stdin, one record per line.
    Produce(ProduceArgs),
    /// Consume records and print them.
    Consume(ConsumeArgs),
    /// Consumer groups: list, describe (offsets and lag), reset offsets, delete.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Throughput and latency benchmarks with the columns of Kafka's perf tools.
    #[command(subcommand)]
    Perf(perf::PerfCmd),
}

#[derive(Subcommand)]
enum TopicCmd {
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = -1)]
        partitions: i32,
        #[arg(long = "replication-factor", short = 'r', default_value_t = -1)]
        replication_factor: i32,
        /// Topic config key=value (repeatable).
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    List {
        #[command(flatten)]
        conn: Conn,
    },
    Describe {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    Alter {
        name: String,
        /// New partition count (only increases).
        #[arg(long, short = 'p')]
        partitions: Option<usize>,
        /// Set a topic config key=value (repeatable).
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
        /// Remove a topic config override (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct ProduceArgs {
    topic: String,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long = "key-separator")]
    key_separator: Option<String>,
    /// Header key=value added to every record (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Partition to write to (default: by key hash, or sticky for keyless records).
    #[arg(long)]
    partition: Option<i32>,
    #[arg(long, default_value = "all")]
    acks: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct ConsumeArgs {
    topic: String,
    /// Consumer group (commits offsets); without it, partitions are assigned directly.
    #[arg(long, short = 'g')]
    group: Option<String>,
    #[arg(long = "from-beginning")]
    from_beginning: bool,
    /// Start at this offset (all partitions, or --partition).
    #[arg(long)]
    offset: Option<i64>,
    /// Start at the first record with timestamp >= this (epoch ms).
    #[arg(long)]
    timestamp: Option<i64>,
    #[arg(long)]
    partition: Option<i32>,
    #[arg(long = "max-messages", short = 'n')]
    max_messages: Option<u64>,
    /// Stop after this long without a record (ms); default waits forever.
    #[arg(long = "timeout-ms")]
    timeout_ms: Option<u64>,
    #[arg(long = "print-key")]
    print_key: bool,
    #[arg(long = "print-headers")]
    print_headers: bool,
    #[arg(long = "print-partition")]
    print_partition: bool,
    #[arg(long = "print-offset")]
    print_offset: bool,
    #[arg(long = "print-timestamp")]
    print_timestamp: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum GroupCmd {
    List {
        #[command(flatten)]
        conn: Conn,
    },
    Describe {
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set a group's committed offsets (the group must have no active members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long = "to-earliest")]
        to_earliest: bool,
        #[arg(long = "to-latest")]
        to_latest: bool,
        #[arg(long = "to-offset")]
        to_offset: Option<i64>,
        #[arg(long = "to-datetime-ms")]
        to_timestamp: Option<i64>,
        /// Without --execute the plan is printed, nothing changes (as kafka-consumer-groups).
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        conn: Conn,
    },
    Delete {
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Entry point of the binary; returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, overrides } => serve(config, overrides),
        Command::Topic(cmd) => block_on(topic(cmd)),
        Command::Produce(args) => produce(args),
        Command::Consume(args) => consume(args),
        Command::Group(cmd) => block_on(group(cmd)),
        Command::Perf(cmd) => perf::run(cmd),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kairos: {e}");
            1
        }
    }
}

fn block_on<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f)
}

fn serve(config: Option<PathBuf>, overrides: Vec<String>) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAIROS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = crate::config::BrokerConfig::load(config.as_deref(), &overrides)
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listener)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listener))?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot watch SIGTERM: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: controlled shutdown"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: controlled shutdown"),
            }
            let _ = tx.send(true);
        });
        crate::server::run(cfg, listener, rx)
            .await
            .map_err(|e| e.to_string())
    })
}

fn kv(s: &str) -> Result<(&str, &str), String> {
    s.split_once('=')
        .ok_or_else(|| format!("{s:?}: expected key=value"))
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

async fn topic(cmd: TopicCmd) -> Result<(), String> {
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            configs,
            conn,
        } => {
            let admin = conn.admin()?;
            let mut t = NewTopic::new(
                &name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            for c in &configs {
                let (k, v) = kv(c)?;
                t = t.set(k, v);
            }
            let r = admin
                .create_topics([&t], &opts())
                .await
                .map_err(|e| e.to_string())?;
            for res in r {
                res.map_err(|(t, e)| format!("cannot create topic {t}: {e}"))?;
            }
            println!("Created topic {name}.");
            Ok(())
        }
        TopicCmd::List { conn } => {
            let consumer: BaseConsumer = conn.config()?.create().map_err(|e| e.to_string())?;
            let md = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| format!("metadata: {e}"))?;
            let mut names: Vec<_> = md
                .topics()
                .iter()
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            names.sort();
            println!("{:<40} {:>10}", "NAME", "PARTITIONS");
            for (n, p) in names {
                println!("{n:<40} {p:>10}");
            }
            Ok(())
        }
        TopicCmd::Describe { name, conn } => {
            let consumer: BaseConsumer = conn.config()?.create().map_err(|e| e.to_string())?;
            let md = consumer
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map_err(|e| format!("metadata: {e}"))?;
            let t = md.topics().first().ok_or("no metadata returned")?;
            if let Some(e) = t.error() {
                return Err(format!(
                    "topic {name}: {}",
                    rdkafka::types::RDKafkaErrorCode::from(e)
                ));
            }
            let admin = conn.admin()?;
            let cfg = admin
                .describe_configs([&ResourceSpecifier::Topic(&name)], &opts())
                .await
                .map_err(|e| e.to_string())?;
            println!("Topic: {name}\tPartitionCount: {}", t.partitions().len());
            if let Some(Ok(res)) = cfg.first() {
                let set: Vec<String> = res
                    .entries
                    .iter()
                    .filter(|e| matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic))
                    .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
                    .collect();
                println!("Configs: {}", set.join(","));
            }
            println!(
                "{:>9} {:>7} {:>14} {:>14} {:>9}",
                "PARTITION", "LEADER", "LOG-START", "HIGH-WATERMARK", "ISR"
            );
            for p in t.partitions() {
                let (lo, hi) = consumer
                    .fetch_watermarks(&name, p.id(), Duration::from_secs(10))
                    .map_err(|e| format!("watermarks of {name}-{}: {e}", p.id()))?;
                println!(
                    "{:>9} {:>7} {:>14} {:>14} {:>9?}",
                    p.id(),
                    p.leader(),
                    lo,
                    hi,
                    p.isr()
                );
            }
            Ok(())
        }
        TopicCmd::Alter {
            name,
            partitions,
            configs,
            delete_configs,
            conn,
        } => {
            let admin = conn.admin()?;
            if let Some(n) = partitions {
                let r = admin
                    .create_partitions([&NewPartitions::new(&name, n)], &opts())
                    .await
                    .map_err(|e| e.to_string())?;
                for res in r {
                    res.map_err(|(t, e)| format!("cannot add partitions to {t}: {e}"))?;
                }
                println!("Topic {name} now has {n} partitions.");
            }
            if !configs.is_empty() || !delete_configs.is_empty() {
                // AlterConfigs replaces the whole set: start from the current overrides.
                let cur = admin
                    .describe_configs([&ResourceSpecifier::Topic(&name)], &opts())
                    .await
                    .map_err(|e| e.to_string())?;
                let res = cur
                    .into_iter()
                    .next()
                    .ok_or("no config result")?
                    .map_err(|e| format!("describe {name}: {e}"))?;
                let mut map: BTreeMap<String, String> = res
                    .entries
                    .into_iter()
                    .filter(|e| matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic))
                    .map(|e| (e.name, e.value.unwrap_or_default()))
                    .collect();
                for c in &configs {
                    let (k, v) = kv(c)?;
                    map.insert(k.to_string(), v.to_string());
                }
                for k in &delete_configs {
                    map.remove(k);
                }
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&name));
                for (k, v) in &map {
                    alter = alter.set(k, v);
                }
                let r = admin
                    .alter_configs([&alter], &opts())
                    .await
                    .map_err(|e| e.to_string())?;
                for res in r {
                    res.map_err(|(_, e)| format!("cannot alter configs of {name}: {e}"))?;
                }
                println!("Updated configs of topic {name}.");
            }
            Ok(())
        }
        TopicCmd::Delete { name, conn } => {
            let admin = conn.admin()?;
            let r = admin
                .delete_topics(&[&name], &opts())
                .await
                .map_err(|e| e.to_string())?;
            for res in r {
                res.map_err(|(t, e)| format!("cannot delete topic {t}: {e}"))?;
            }
            println!("Deleted topic {name}.");
            Ok(())
        }
    }
}

fn produce(args: ProduceArgs) -> Result<(), String> {
    let mut cfg = args.conn.config()?;
    cfg.set("acks", &args.acks);
    let producer: ThreadedProducer<DefaultProducerContext> = cfg
        .create()
        .map_err(|e| format!("cannot create producer: {e}"))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = kv(h)?;
        headers.push((k.to_string(), v.to_string()));
    }
    let stdin = std::io::stdin();
    let mut count = 0u64;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => return Err(format!("line {} has no key separator {sep:?}", count + 1)),
            },
            None => (None, line),
        };
        let mut hs = OwnedHeaders::new();
        for (k, v) in &headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut rec: BaseRecord<'_, String, String> =
            BaseRecord::to(&args.topic).payload(&value).headers(hs);
        if let Some(k) = &key {
            rec = rec.key(k);
        }
        if let Some(p) = args.partition {
            rec = rec.partition(p);
        }
        let mut rec = Some(rec);
        while let Some(r) = rec.take() {
            match producer.send(r) {
                Ok(()) => {}
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    std::thread::sleep(Duration::from_millis(5));
                    rec = Some(r);
                }
                Err((e, _)) => return Err(format!("produce failed: {e}")),
            }
        }
        count += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush failed: {e}"))?;
    eprintln!("Produced {count} records to {}.", args.topic);
    Ok(())
}

fn consume(args: ConsumeArgs) -> Result<(), String> {
    let mut cfg = args.conn.config()?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("kairos-cli-{}", std::process::id()));
    cfg.set("group.id", &group)
        .set(
            "enable.auto.commit",
            if args.group.is_some() {
                "true"
            } else {
                "false"
            },
        )
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| format!("cannot create consumer: {e}"))?;
    let explicit = args.offset.is_some()
        || args.timestamp.is_some()
        || args.partition.is_some()
        || args.group.is_none();
    if explicit {
        let md = consumer
            .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata: {e}"))?;
        let t = md.topics().first().ok_or("no metadata")?;
        if let Some(e) = t.error() {
            return Err(format!(
                "topic {}: {}",
                args.topic,
                rdkafka::types::RDKafkaErrorCode::from(e)
            ));
        }
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            if args.partition.is_some_and(|want| want != p.id()) {
                continue;
            }
            let offset = match (args.offset, args.timestamp) {
                (Some(o), _) => Offset::Offset(o),
                (None, Some(ts)) => Offset::Offset(ts),
                _ if args.from_beginning => Offset::Beginning,
                _ => Offset::End,
            };
            tpl.add_partition_offset(&args.topic, p.id(), offset)
                .map_err(|e| e.to_string())?;
        }
        if tpl.count() == 0 {
            return Err(format!(
                "topic {} has no partition {:?}",
                args.topic, args.partition
            ));
        }
        if args.timestamp.is_some() {
            tpl = consumer
                .offsets_for_times(tpl, Duration::from_secs(10))
                .map_err(|e| format!("offsets for times: {e}"))?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
    } else {
        consumer
            .subscribe(&[&args.topic])
            .map_err(|e| e.to_string())?;
    }
    let mut seen = 0u64;
    let mut last = Instant::now();
    let out = std::io::stdout();
    let mut out = out.lock();
    while args.max_messages.is_none_or(|m| seen < m) {
        if args
            .timeout_ms
            .is_some_and(|t| last.elapsed() > Duration::from_millis(t))
        {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg.map_err(|e| format!("consume failed: {e}"))?;
        last = Instant::now();
        seen += 1;
        let mut line = String::new();
        if args.print_partition {
            line.push_str(&format!("Partition:{}\t", msg.partition()));
        }
        if args.print_offset {
            line.push_str(&format!("Offset:{}\t", msg.offset()));
        }
        if args.print_timestamp {
            line.push_str(&format!(
                "CreateTime:{}\t",
                msg.timestamp().to_millis().unwrap_or(-1)
            ));
        }
        if args.print_headers {
            let hs: Vec<String> = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            format!(
                                "{}:{}",
                                h.key,
                                String::from_utf8_lossy(h.value.unwrap_or_default())
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            line.push_str(&if hs.is_empty() {
                "NO_HEADERS".to_string()
            } else {
                hs.join(",")
            });
            line.push('\t');
        }
        if args.print_key {
            line.push_str(
                &msg.key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_else(|| "null".into()),
            );
            line.push('\t');
        }
        line.push_str(
            &msg.payload()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| "null".into()),
        );
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    if args.group.is_some() {
        consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .ok();
    }
    eprintln!("Processed a total of {seen} messages");
    Ok(())
}

async fn group(cmd: GroupCmd) -> Result<(), String> {
    match cmd {
        GroupCmd::List { conn } => {
            let consumer: BaseConsumer = conn.config()?.create().map_err(|e| e.to_string())?;
            let groups = consumer
                .fetch_group_list(None, Duration::from_secs(10))
                .map_err(|e| format!("list groups: {e}"))?;
            println!("{:<40} {:<20} {:>8}", "GROUP", "STATE", "MEMBERS");
            for g in groups.groups() {
                println!(
                    "{:<40} {:<20} {:>8}",
                    g.name(),
                    g.state(),
                    g.members().len()
                );
            }
            Ok(())
        }
        GroupCmd::Describe { group, conn } => describe_group(&conn, &group),
        GroupCmd::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            execute,
            conn,
        } => {
            let mut cfg = conn.config()?;
            cfg.set("group.id", &group)
                .set("enable.auto.commit", "false");
            let consumer: BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
            let groups = consumer
                .fetch_group_list(Some(&group), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            if let Some(g) = groups.groups().first() {
                if !g.members().is_empty() {
                    return Err(format!(
                        "group {group} has {} active member(s); stop them before resetting offsets",
                        g.members().len()
                    ));
                }
            }
            let md = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let t = md.topics().first().ok_or("no metadata")?;
            if let Some(e) = t.error() {
                return Err(format!(
                    "topic {topic}: {}",
                    rdkafka::types::RDKafkaErrorCode::from(e)
                ));
            }
            let chosen = [
                to_earliest,
                to_latest,
                to_offset.is_some(),
                to_timestamp.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if chosen != 1 {
                return Err("choose exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime-ms".into());
            }
            let mut tpl = TopicPartitionList::new();
            for p in t.partitions() {
                let (lo, hi) = consumer
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                let target = if to_earliest {
                    lo
                } else if to_latest {
                    hi
                } else if let Some(o) = to_offset {
                    o.clamp(lo, hi)
                } else {
                    -1
                };
                tpl.add_partition_offset(&topic, p.id(), Offset::Offset(target))
                    .map_err(|e| e.to_string())?;
            }
            if let Some(ts) = to_timestamp {
                let mut q = TopicPartitionList::new();
                for p in t.partitions() {
                    q.add_partition_offset(&topic, p.id(), Offset::Offset(ts))
                        .map_err(|e| e.to_string())?;
                }
                let found = consumer
                    .offsets_for_times(q, Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                tpl = TopicPartitionList::new();
                for e in found.elements() {
                    let off = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => {
                            consumer
                                .fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))
                                .map_err(|e| e.to_string())?
                                .1
                        }
                    };
                    tpl.add_partition_offset(&topic, e.partition(), Offset::Offset(off))
                        .map_err(|e| e.to_string())?;
                }
            }
            println!(
                "{:<30} {:<30} {:>9} {:>12}",
                "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
            );
            for e in tpl.elements() {
                println!(
                    "{:<30} {:<30} {:>9} {:>12}",
                    group,
                    topic,
                    e.partition(),
                    e.offset().to_raw().unwrap_or(-1)
                );
            }
            if execute {
                consumer
                    .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                    .map_err(|e| format!("commit failed: {e}"))?;
            } else {
                eprintln!("(dry run: add --execute to apply)");
            }
            Ok(())
        }
        GroupCmd::Delete { group, conn } => {
            let admin = conn.admin()?;
            let r = admin
                .delete_groups(&[&group], &opts())
                .await
                .map_err(|e| e.to_string())?;
            for res in r {
                res.map_err(|(g, e)| format!("cannot delete group {g}: {e}"))?;
            }
            println!("Deleted group {group}.");
            Ok(())
        }
    }
}

fn describe_group(conn: &Conn, group: &str) -> Result<(), String> {
    let mut cfg = conn.config()?;
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
    let groups = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .map_err(|e| format!("describe group: {e}"))?;
    let g = groups
        .groups()
        .first()
        .ok_or_else(|| format!("group {group} not found"))?;
    if g.state() == "Dead" {
        return Err(format!("Consumer group '{group}' does not exist."));
    }
    // Committed offsets for every partition of every topic.
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| format!("offsets: {e}"))?;
    println!(
        "GROUP {group}  STATE {}  PROTOCOL {}  MEMBERS {}",
        g.state(),
        g.protocol(),
        g.members().len()
    );
    println!(
        "{:<30} {:>9} {:>15} {:>15} {:>8}",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    for e in committed.elements() {
        let Offset::Offset(cur) = e.offset() else {
            continue;
        };
        let (_, hi) = consumer
            .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        println!(
            "{:<30} {:>9} {:>15} {:>15} {:>8}",
            e.topic(),
            e.partition(),
            cur,
            hi,
            hi - cur
        );
    }
    if !g.members().is_empty() {
        println!();
        println!("{:<50} {:<25} {:<20}", "MEMBER-ID", "CLIENT-ID", "HOST");
        for m in g.members() {
            println!(
                "{:<50} {:<25} {:<20}",
                m.id(),
                m.client_id(),
                m.client_host()
            );
        }
    }
    Ok(())
}
