//! `order-cancel`: "cancel the order if it is still unpaid after 30 minutes" with a Kairos delay
//! topic and nothing but plain Kafka client calls (librdkafka through `rdkafka`).
//!
//! * `setup` creates `orders.cancel-requests` (a delay topic: `kairos.delay.target=orders.cancel`,
//!   `kairos.delay.ms=<delay>`) and its target `orders.cancel`.
//! * `place` is the order service: per order it produces "cancel if unpaid" to the delay topic
//!   (key = order id); when an order is paid it produces a tombstone with the same key, which
//!   cancels the pending request inside the broker.
//! * `cancel-worker` is the cancellation service: a consumer group on `orders.cancel`, which only
//!   ever sees the requests that became due and were not cancelled.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::executor::block_on;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

/// The delay topic: the order service writes "cancel if unpaid" requests (and payments) here.
const DELAY_TOPIC: &str = "orders.cancel-requests";
/// Its target: requests that became due without being cancelled.
const CANCEL_TOPIC: &str = "orders.cancel";
/// Header the broker adds to a forwarded record: when it was produced to the delay topic.
const ORIGINAL_TIMESTAMP: &str = "kairos.original.timestamp";
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "order-cancel",
    about = "Cancel orders still unpaid after a delay, with a Kairos delay topic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the delay topic orders.cancel-requests and its target orders.cancel (idempotent).
    Setup {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// How long an order may stay unpaid: 30m, 5s, 1500ms, 2h.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        delay: Duration,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// The order service: place orders order-1..order-N, then pay a deterministic share of them.
    Place {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Number of orders to place.
        #[arg(long)]
        orders: u32,
        /// Share of the orders that get paid (0.5: every other order, starting with order-2).
        #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
        pay_ratio: f64,
    },
    /// The cancellation service: consume orders.cancel in a consumer group and cancel each order.
    CancelWorker {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long, default_value = "order-cancel-worker")]
        group: String,
        /// Exit after this many cancellations (default: run until --idle-ms or Ctrl-C).
        #[arg(long)]
        max: Option<u64>,
        /// Exit after this long without a record (default: wait forever).
        #[arg(long = "idle-ms")]
        idle_ms: Option<u64>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup {
            bootstrap,
            delay,
            partitions,
        } => setup(&bootstrap, delay, partitions),
        Command::Place {
            bootstrap,
            orders,
            pay_ratio,
        } => place(&bootstrap, orders, pay_ratio),
        Command::CancelWorker {
            bootstrap,
            group,
            max,
            idle_ms,
        } => cancel_worker(&bootstrap, &group, max, idle_ms.map(Duration::from_millis)),
    };
    if let Err(e) = result {
        eprintln!("order-cancel: {e:#}");
        std::process::exit(1);
    }
}

/// `30m`, `5s`, `1500ms`, `2h`, `1d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h or d), e.g. 30m"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m, h or d"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h or d)")),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?}: too long"))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?}: expected a number between 0 and 1")),
    }
}

/// Whether order `i` (1-based) gets paid: spreads `floor(n * ratio)` payments evenly over
/// orders 1..=n, the same ones on every run (0.5: order-2, order-4, ...).
fn is_paid(i: u32, ratio: f64) -> bool {
    (f64::from(i) * ratio).floor() > (f64::from(i - 1) * ratio).floor()
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn setup(bootstrap: &str, delay: Duration, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap)
        .create()
        .context("creating the admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let delay_ms = delay.as_millis().to_string();
    // The target first: it is an ordinary topic the cancellation service consumes.
    let target = NewTopic::new(CANCEL_TOPIC, partitions, TopicReplication::Fixed(1));
    let delay_topic = NewTopic::new(DELAY_TOPIC, partitions, TopicReplication::Fixed(1))
        .set("kairos.delay.target", CANCEL_TOPIC)
        .set("kairos.delay.ms", &delay_ms);
    for topic in [&target, &delay_topic] {
        let results = block_on(admin.create_topics([topic], &opts))
            .with_context(|| format!("creating {}", topic.name))?;
        for r in results {
            match r {
                Ok(name) => println!("created {name}"),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    println!("{name} already exists")
                }
                Err((name, code)) => bail!("creating {name}: {code}"),
            }
        }
    }
    // Re-running setup with another --delay updates the existing delay topic.
    let alter = AlterConfig::new(ResourceSpecifier::Topic(DELAY_TOPIC))
        .set("kairos.delay.target", CANCEL_TOPIC)
        .set("kairos.delay.ms", &delay_ms);
    for r in block_on(admin.alter_configs([&alter], &opts)).context("altering configs")? {
        if let Err((_, code)) = r {
            bail!("setting kairos.delay.ms on {DELAY_TOPIC}: {code}");
        }
    }
    let described =
        block_on(admin.describe_configs([&ResourceSpecifier::Topic(DELAY_TOPIC)], &opts))
            .context("describing configs")?;
    let actual = described
        .into_iter()
        .next()
        .and_then(|r| r.ok())
        .and_then(|r| r.get("kairos.delay.ms").and_then(|e| e.value.clone()));
    if actual.as_deref() != Some(delay_ms.as_str()) {
        bail!("{DELAY_TOPIC} has kairos.delay.ms={actual:?}, expected {delay_ms}");
    }
    println!("{DELAY_TOPIC} -> {CANCEL_TOPIC} after {delay_ms} ms");
    Ok(())
}

/// Hands one record for the delay topic to the producer (`value` None: a tombstone); the
/// returned future resolves when the broker acknowledged it.
fn send(producer: &FutureProducer, order: &str, value: Option<&str>) -> Result<DeliveryFuture> {
    let mut record = FutureRecord::<str, str>::to(DELAY_TOPIC).key(order);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send_result(record)
        .map_err(|(e, _)| anyhow!("producing {order}: {e}"))
}

/// Waits for the acks in the order the records were sent and prints `<verb> <order>` for each.
fn acked(verb: &str, pending: Vec<(String, DeliveryFuture)>) -> Result<()> {
    for (order, delivery) in pending {
        match block_on(delivery) {
            Ok(Ok(_)) => println!("{verb} {order}"),
            Ok(Err((e, _))) => bail!("producing {order}: {e}"),
            Err(_) => bail!("producing {order}: producer dropped"),
        }
    }
    Ok(())
}

fn place(bootstrap: &str, orders: u32, pay_ratio: f64) -> Result<()> {
    let producer: FutureProducer = client(bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating the producer")?;
    // Placing an order: "cancel it unless paid" goes to the delay topic, keyed by the order id.
    // The broker holds it for kairos.delay.ms and then forwards it to orders.cancel.
    let mut placed = Vec::new();
    for i in 1..=orders {
        let order = format!("order-{i}");
        let value = format!("cancel {order} if unpaid");
        placed.push((order.clone(), send(&producer, &order, Some(&value))?));
    }
    acked("placed", placed)?;
    // Payment: a tombstone (same key, null value) cancels the pending request for that order.
    // Same key, same partition, produced after the request: the broker drops the request.
    let mut paid = Vec::new();
    for i in (1..=orders).filter(|&i| is_paid(i, pay_ratio)) {
        let order = format!("order-{i}");
        paid.push((order.clone(), send(&producer, &order, None)?));
    }
    acked("paid", paid)?;
    producer.flush(TIMEOUT).context("flushing the producer")?;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn cancel_worker(
    bootstrap: &str,
    group: &str,
    max: Option<u64>,
    idle: Option<Duration>,
) -> Result<()> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // At least once: an offset is stored only after its order was cancelled.
        .set("enable.auto.offset.store", "false")
        .create()
        .context("creating the consumer")?;
    consumer
        .subscribe(&[CANCEL_TOPIC])
        .context("subscribing to orders.cancel")?;
    let mut cancelled = 0u64;
    let mut last = Instant::now();
    while max.is_none_or(|m| cancelled < m) {
        if idle.is_some_and(|idle| last.elapsed() >= idle) {
            break;
        }
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => {
                eprintln!("order-cancel: consumer: {e}");
                continue;
            }
            Some(Ok(m)) => m,
        };
        last = Instant::now();
        let order = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| "(no key)".into());
        // When the order was placed: the broker keeps it in kairos.original.timestamp.
        let placed_ms = msg
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == ORIGINAL_TIMESTAMP)
                    .and_then(|h| h.value)
            })
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
            .or_else(|| msg.timestamp().to_millis());
        // A real service would cancel the order in its database here (idempotently).
        match placed_ms {
            Some(t) => println!(
                "cancelling {order} (placed at {t}, unpaid for {} ms)",
                now_ms().saturating_sub(t)
            ),
            None => println!("cancelling {order}"),
        }
        consumer
            .store_offset_from_message(&msg)
            .context("storing the offset")?;
        cancelled += 1;
    }
    // Commit what was stored before leaving the group (auto-commit would do it within 5 s).
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => bail!("committing offsets: {e}"),
    }
    eprintln!("cancelled {cancelled} orders");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "5", "s", "5x", "1.5s", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn half_of_the_orders_are_paid() {
        let paid: Vec<u32> = (1..=6).filter(|&i| is_paid(i, 0.5)).collect();
        assert_eq!(paid, [2, 4, 6]);
        assert_eq!((1..=20).filter(|&i| is_paid(i, 0.5)).count(), 10);
        assert_eq!((1..=7).filter(|&i| is_paid(i, 0.0)).count(), 0);
        assert_eq!((1..=7).filter(|&i| is_paid(i, 1.0)).count(), 7);
        assert_eq!((1..=10).filter(|&i| is_paid(i, 0.3)).count(), 3);
    }
}
