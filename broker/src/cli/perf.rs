//! `kairos perf produce|consume|e2e`: the knobs and output columns of Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`, over librdkafka.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{CliContext, Conn};

#[derive(Subcommand)]
pub enum PerfCmd {
    /// Like kafka-producer-perf-test.
    Produce(ProduceArgs),
    /// Like kafka-consumer-perf-test.
    Consume(ConsumeArgs),
    /// Produce-to-consume latency at a fixed rate (payload carries the send time).
    E2e(E2eArgs),
    /// Delay-topic lateness: records scheduled at a steady rate, or a burst all due at once.
    Delay(DelayArgs),
    /// Retry throughput and lateness: failed records at a steady rate, each redelivered after
    /// --backoff-ms (through Redis when the broker has retry.redis.url).
    Retry(RetryArgs),
}

#[derive(Args)]
pub struct RetryArgs {
    /// The retry topic (created with --target when missing: kairos.retry.backoff.ms =
    /// --backoff-ms, one attempt).
    #[arg(long)]
    topic: String,
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    #[arg(long = "num-records", default_value_t = 100_000)]
    num_records: u64,
    #[arg(long = "record-size", default_value_t = 100)]
    record_size: usize,
    /// Failures produced per second.
    #[arg(long, default_value_t = 50_000)]
    throughput: u64,
    #[arg(long = "backoff-ms", default_value_t = 1_000)]
    backoff_ms: i64,
    /// Also report Redis memory per pending retry (INFO memory before and after scheduling,
    /// measured before the first redelivery: use a --backoff-ms longer than producing takes).
    #[arg(long = "redis-url")]
    redis_url: Option<String>,
}

#[derive(Args)]
pub struct DelayArgs {
    /// The delay topic (created, with --target, when missing).
    #[arg(long)]
    topic: String,
    /// Its target topic (created when missing).
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    #[arg(long = "num-records", default_value_t = 50_000)]
    num_records: u64,
    #[arg(long = "record-size", default_value_t = 100)]
    record_size: usize,
    /// Records scheduled per second (steady mode): each due --delay-ms after it is sent.
    #[arg(long, default_value_t = 10_000)]
    throughput: u64,
    #[arg(long = "delay-ms", default_value_t = 2_000)]
    delay_ms: i64,
    /// Burst mode: every record due at the same instant, --delay-ms after the first is sent
    /// (make it longer than producing them all takes).
    #[arg(long)]
    burst: bool,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "num-records")]
    num_records: u64,
    #[arg(long = "record-size")]
    record_size: usize,
    /// Records per second; -1 for as fast as possible.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    /// librdkafka producer properties key=value (e.g. acks=1 linger.ms=5 batch.size=1048576).
    #[arg(long = "producer-props", num_args = 1..)]
    producer_props: Vec<String>,
    /// Interval between progress lines on stderr (ms).
    #[arg(long = "reporting-interval", default_value_t = 5_000)]
    reporting_interval_ms: u64,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    /// Number of records to consume.
    #[arg(long)]
    messages: u64,
    /// Give up after this long without progress (ms).
    #[arg(long = "timeout", default_value_t = 10_000)]
    timeout_ms: u64,
    #[arg(long = "consumer-props", num_args = 1..)]
    consumer_props: Vec<String>,
}

#[derive(Args)]
pub struct E2eArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "num-records", default_value_t = 50_000)]
    num_records: u64,
    #[arg(long = "record-size", default_value_t = 100)]
    record_size: usize,
    /// Records per second.
    #[arg(long, default_value_t = 10_000)]
    throughput: u64,
    #[arg(long = "producer-props", num_args = 1..)]
    producer_props: Vec<String>,
    #[arg(long = "consumer-props", num_args = 1..)]
    consumer_props: Vec<String>,
}

pub fn run(cmd: PerfCmd, conn: &Conn) -> Result<(), String> {
    match cmd {
        PerfCmd::Produce(a) => produce(a, conn),
        PerfCmd::Consume(a) => consume(a, conn),
        PerfCmd::E2e(a) => e2e(a, conn),
        PerfCmd::Delay(a) => delay(a, conn),
        PerfCmd::Retry(a) => retry(a, conn),
    }
}

/// Partitions of `topic`, via the CLI's metadata lookup (clear error for a missing topic).
fn partitions(
    consumer: &BaseConsumer<CliContext>,
    conn: &Conn,
    topic: &str,
) -> Result<Vec<i32>, String> {
    Ok(super::topic_metadata(consumer, conn, topic)?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect())
}

/// Assigns `consumer` to the end of every partition of `topic` and lets it resolve those
/// offsets before anything is produced (so it sees exactly the records produced afterwards).
fn assign_at_end(
    consumer: &BaseConsumer<CliContext>,
    conn: &Conn,
    topic: &str,
) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions(consumer, conn, topic)? {
        tpl.add_partition_offset(topic, p, Offset::End)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    for _ in 0..20 {
        consumer.poll(Duration::from_millis(50));
    }
    Ok(())
}

/// The producer the delay and retry benchmarks load the broker with.
fn bulk_producer(conn: &Conn) -> Result<BaseProducer, String> {
    let mut cfg = conn.config()?;
    cfg.set("linger.ms", "5")
        .set("acks", "1")
        .set("queue.buffering.max.messages", "1000000");
    cfg.create()
        .map_err(|e| format!("cannot create producer: {e}"))
}

/// Sends `rec`, waiting for room while librdkafka's queue is full.
fn send_waiting<C, K, P, D>(
    producer: &BaseProducer<C>,
    mut rec: BaseRecord<'_, K, P, D>,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: ProducerContext<DeliveryOpaque = D>,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    D: rdkafka::util::IntoOpaque,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                producer.poll(Duration::from_millis(1));
                rec = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Sleeps until record `i` of a run started at `start` is due at `rate` records per second.
fn pace(start: Instant, i: u64, rate: u64) {
    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// A whole-number header of a consumed record.
fn header_i64(m: &impl Message, key: &str) -> Option<i64> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    let v = h.iter().find(|h| h.key == key)?.value?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Latencies in TSC ticks: up to 10 min at up to ~10 GHz.
fn tick_hist() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 6_000_000_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

fn hist() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// A cheap monotonic tick source for per-record latency: the TSC on x86_64 (reading the clock
/// through `clock_gettime` cost ~14% of the producer's CPU on this VM's clock source), converted
/// to microseconds with a rate calibrated against `Instant` over the whole run.
mod ticks {
    use std::time::Instant;

    #[cfg(target_arch = "x86_64")]
    pub fn now() -> u64 {
        // SAFETY: RDTSC has no preconditions; it only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn now() -> u64 {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// Ticks per microsecond, measured between `start` and now.
    pub struct Calibration {
        instant: Instant,
        ticks: u64,
    }

    impl Calibration {
        pub fn start() -> Self {
            Self {
                instant: Instant::now(),
                ticks: now(),
            }
        }
        pub fn ticks_per_us(&self) -> f64 {
            let us = self.instant.elapsed().as_secs_f64() * 1e6;
            ((now() - self.ticks) as f64 / us.max(1.0)).max(1e-9)
        }
    }
}

struct Stats {
    latency_ticks: Histogram<u64>,
    acked: u64,
    errors: u64,
    last_error: Option<String>,
}

struct PerfContext {
    cli: CliContext,
    stats: Mutex<Stats>,
}

impl ClientContext for PerfContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        self.cli.log(level, fac, msg);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.cli.error(error, reason);
    }
}

impl ProducerContext for PerfContext {
    /// `ticks::now()` when the record was handed to the client.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: usize) {
        let now = ticks::now();
        let mut s = self.stats.lock();
        match result {
            Ok(_) => {
                s.acked += 1;
                // Recorded in ticks; converted to ms when printed.
                let _ = s
                    .latency_ticks
                    .record(now.saturating_sub(sent_at as u64).max(1));
            }
            Err((e, _)) => {
                s.errors += 1;
                s.last_error = Some(e.to_string());
            }
        }
    }
}

fn apply_props(cfg: &mut rdkafka::ClientConfig, props: &[String]) -> Result<(), String> {
    for p in props {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?}: expected key=value"))?;
        cfg.set(k, v);
    }
    Ok(())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn produce(a: ProduceArgs, conn: &Conn) -> Result<(), String> {
    let mut cfg = conn.config()?;
    cfg.set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    apply_props(&mut cfg, &a.producer_props)?;
    let calibration = ticks::Calibration::start();
    let ctx = PerfContext {
        cli: conn.context(),
        stats: Mutex::new(Stats {
            latency_ticks: tick_hist(),
            acked: 0,
            errors: 0,
            last_error: None,
        }),
    };
    let producer: BaseProducer<PerfContext> = cfg
        .create_with_context(ctx)
        .map_err(|e| format!("cannot create producer: {e}"))?;
    let payload: Vec<u8> = (0..a.record_size).map(|i| b'A' + (i % 26) as u8).collect();
    let start = Instant::now();
    let mut window_start = Instant::now();
    let mut window_acked = 0u64;
    for i in 0..a.num_records {
        if a.throughput > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / a.throughput as f64);
            let now = Instant::now();
            if due > now {
                producer.poll(due - now);
            }
        }
        let sent_at = ticks::now() as usize;
        let rec: BaseRecord<'_, (), [u8], usize> =
            BaseRecord::with_opaque_to(&a.topic, sent_at).payload(&payload[..]);
        send_waiting(&producer, rec)
            .map_err(|e| producer.context().cli.fail("produce failed", &e))?;
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
            if window_start.elapsed() >= Duration::from_millis(a.reporting_interval_ms) {
                let s = producer.context().stats.lock();
                let n = s.acked - window_acked;
                let secs = window_start.elapsed().as_secs_f64();
                let tpu = calibration.ticks_per_us();
                eprintln!(
                    "{n} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                    n as f64 / secs,
                    n as f64 * a.record_size as f64 / secs / 1048576.0,
                    s.latency_ticks.mean() / tpu / 1000.0,
                    s.latency_ticks.max() as f64 / tpu / 1000.0
                );
                window_acked = s.acked;
                window_start = Instant::now();
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| producer.context().cli.fail("flush failed", &e))?;
    let elapsed = start.elapsed().as_secs_f64();
    let s = producer.context().stats.lock();
    if s.errors > 0 {
        return Err(format!(
            "{} of {} records failed; last error: {}",
            s.errors,
            a.num_records,
            s.last_error.clone().unwrap_or_default()
        ));
    }
    let h = &s.latency_ticks;
    let tick_ms = |t: u64| t as f64 / calibration.ticks_per_us() / 1000.0;
    println!(
        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
        s.acked,
        s.acked as f64 / elapsed,
        s.acked as f64 * a.record_size as f64 / elapsed / 1048576.0,
        h.mean() / calibration.ticks_per_us() / 1000.0,
        tick_ms(h.max()),
        tick_ms(h.value_at_quantile(0.5)),
        tick_ms(h.value_at_quantile(0.95)),
        tick_ms(h.value_at_quantile(0.99)),
        tick_ms(h.value_at_quantile(0.999)),
    );
    Ok(())
}

fn consume(a: ConsumeArgs, conn: &Conn) -> Result<(), String> {
    let mut cfg = conn.config()?;
    cfg.set("group.id", format!("perf-consumer-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "52428800")
        .set("queued.max.messages.kbytes", "1048576");
    apply_props(&mut cfg, &a.consumer_props)?;
    let consumer = conn.consumer(cfg)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, conn, &a.topic)? {
        tpl.add_partition_offset(&a.topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let start_wall = chrono_like_now();
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut n = 0u64;
    let mut bytes = 0u64;
    let mut last = Instant::now();
    while n < a.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                bytes += m.payload_len() as u64;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(super::cfail(&consumer, "consume failed", &e)),
            None if last.elapsed() > Duration::from_millis(a.timeout_ms) => {
                return Err(format!(
                    "no record for {} ms after {n} of {} records",
                    a.timeout_ms, a.messages
                ));
            }
            None => {}
        }
    }
    let total = start.elapsed().as_secs_f64();
    let fetch = first
        .map(|f| f.elapsed().as_secs_f64())
        .unwrap_or(total)
        .max(1e-9);
    let mb = bytes as f64 / 1048576.0;
    println!("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec");
    println!(
        "{start_wall}, {}, {mb:.4}, {:.4}, {n}, {:.4}, {}, {}, {:.4}, {:.4}",
        chrono_like_now(),
        mb / total,
        n as f64 / total,
        ((total - fetch) * 1000.0) as u64,
        (fetch * 1000.0) as u64,
        mb / fetch,
        n as f64 / fetch
    );
    Ok(())
}

fn e2e(a: E2eArgs, conn: &Conn) -> Result<(), String> {
    if a.record_size < 8 {
        return Err("--record-size must be at least 8 (the payload carries the send time)".into());
    }
    let mut ccfg = conn.config()?;
    ccfg.set("group.id", format!("perf-e2e-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "500")
        .set("fetch.min.bytes", "1");
    apply_props(&mut ccfg, &a.consumer_props)?;
    let consumer = conn.consumer(ccfg)?;
    assign_at_end(&consumer, conn, &a.topic)?;
    let mut pcfg = conn.config()?;
    pcfg.set("linger.ms", "0").set("acks", "1");
    apply_props(&mut pcfg, &a.producer_props)?;
    let producer: BaseProducer = pcfg
        .create()
        .map_err(|e| format!("cannot create producer: {e}"))?;
    let epoch = Instant::now();
    // The producer paces itself on its own thread and sleeps between records; the consumer
    // blocks in poll. Neither spins, so neither steals CPU from the broker or the clients'
    // network threads (a spinning loop on this 2-core machine showed up as a 3 ms p99).
    let (topic, total, rate, size) = (
        a.topic.clone(),
        a.num_records,
        a.throughput.max(1),
        a.record_size,
    );
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut payload = vec![b'x'; size];
        let start = Instant::now();
        for i in 0..total {
            pace(start, i, rate);
            let t = epoch.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&t.to_be_bytes());
            send_waiting(
                &producer,
                BaseRecord::<(), [u8]>::to(&topic).payload(&payload[..]),
            )
            .map_err(|e| format!("produce failed: {e}"))?;
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(10))
            .map_err(|e| e.to_string())
    });
    let mut h = hist();
    let received = consume_until(
        &consumer,
        a.num_records,
        Duration::from_secs(10),
        "record received",
        |m| {
            let Some(p) = m.and_then(|m| m.payload()).filter(|p| p.len() >= 8) else {
                return Ok(false);
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[..8]);
            let sent_ns = u64::from_be_bytes(b);
            let now = epoch.elapsed().as_nanos() as u64;
            let _ = h.record((now.saturating_sub(sent_ns) / 1000).max(1));
            Ok(true)
        },
    )?;
    sender
        .join()
        .map_err(|_| "producer thread panicked".to_string())??;
    println!(
        "{received} records, {} records/sec target, end-to-end latency: {:.3} ms avg, {:.3} ms 50th, {:.3} ms 95th, {:.3} ms 99th, {:.3} ms 99.9th, {:.3} ms max.",
        a.throughput,
        h.mean() / 1000.0,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    Ok(())
}

/// Polls `consumer` until `each` has counted `want` records. `each` sees every message, and
/// every idle poll as `None`, and answers whether it counted one; `stall` without a counted
/// record is an error ("no <what> for N s").
fn consume_until(
    consumer: &BaseConsumer<CliContext>,
    want: u64,
    stall: Duration,
    what: &str,
    mut each: impl FnMut(Option<&rdkafka::message::BorrowedMessage<'_>>) -> Result<bool, String>,
) -> Result<u64, String> {
    let mut received = 0u64;
    let mut last_progress = Instant::now();
    while received < want {
        let m = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => return Err(format!("consume failed: {e}")),
            None => None,
        };
        if each(m.as_ref())? {
            received += 1;
            last_progress = Instant::now();
        } else if m.is_none() && last_progress.elapsed() > stall {
            return Err(format!(
                "no {what} for {} s ({received} of {want})",
                stall.as_secs()
            ));
        }
    }
    Ok(received)
}

/// Wall-clock time as `epoch-ms` (the Java tool prints a date; ms since epoch is unambiguous).
fn chrono_like_now() -> String {
    crate::partition::now_ms().to_string()
}

/// Creates `name` when it does not exist (other creation errors are reported).
fn ensure_topic(
    conn: &Conn,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let admin = conn.admin()?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let res = rt
        .block_on(admin.create_topics([&t], &AdminOptions::new()))
        .map_err(|e| format!("creating {name}: {e}"))?;
    for r in res {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("creating {t}: {e}")),
        }
    }
    Ok(())
}

fn delay(a: DelayArgs, conn: &Conn) -> Result<(), String> {
    ensure_topic(conn, &a.target, a.partitions, &[])?;
    ensure_topic(
        conn,
        &a.topic,
        a.partitions,
        &[("kairos.delay.target", a.target.as_str())],
    )?;
    let mut ccfg = conn.config()?;
    ccfg.set("group.id", format!("perf-delay-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.min.bytes", "1");
    let consumer = conn.consumer(ccfg)?;
    assign_at_end(&consumer, conn, &a.target)?;
    let producer = bulk_producer(conn)?;
    let (topic, total, rate, size, delay_ms, burst) = (
        a.topic.clone(),
        a.num_records,
        a.throughput.max(1),
        a.record_size,
        a.delay_ms,
        a.burst,
    );
    let burst_due = crate::partition::now_ms() + delay_ms;
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let payload = vec![b'x'; size];
        let start = Instant::now();
        for i in 0..total {
            if !burst {
                pace(start, i, rate);
            }
            let at = if burst {
                burst_due
            } else {
                crate::partition::now_ms() + delay_ms
            }
            .to_string();
            let key = format!("k{i}");
            let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "kairos.deliver.at.ms",
                value: Some(at.as_bytes()),
            });
            let rec = BaseRecord::to(&topic)
                .key(key.as_bytes())
                .payload(&payload[..])
                .headers(headers);
            send_waiting(&producer, rec).map_err(|e| format!("produce failed: {e}"))?;
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .map_err(|e| e.to_string())
    });
    // Broker-side lateness: the forwarded record's timestamp (its append to the target) minus
    // its due time; consumer-side: when this consumer saw it minus its due time.
    let mut broker_ms = hist();
    let mut consumer_ms = hist();
    let mut last_forward = i64::MIN;
    // Nothing arrives before the first record is due.
    let stall = Duration::from_millis(a.delay_ms.max(0) as u64) + Duration::from_secs(30);
    let received = consume_until(&consumer, a.num_records, stall, "record", |m| {
        let now = crate::partition::now_ms();
        let Some((m, due)) = m.and_then(|m| Some((m, header_i64(m, "kairos.deliver.at.ms")?)))
        else {
            return Ok(false);
        };
        let forwarded = m.timestamp().to_millis().unwrap_or(now);
        last_forward = last_forward.max(forwarded);
        // Recorded in microseconds (ms precision from the clocks involved).
        let _ = broker_ms.record(((forwarded - due).max(0) * 1000 + 1) as u64);
        let _ = consumer_ms.record(((now - due).max(0) * 1000 + 1) as u64);
        Ok(true)
    })?;
    sender
        .join()
        .map_err(|_| "producer thread panicked".to_string())??;
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    if a.burst {
        println!(
            "{received} records due at the same instant: all forwarded within {} ms of their due time; lateness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (consumer saw the last {:.0} ms after due).",
            last_forward.saturating_sub(burst_due).max(0),
            p(&broker_ms, 0.5),
            p(&broker_ms, 0.99),
            broker_ms.max() as f64 / 1000.0,
            consumer_ms.max() as f64 / 1000.0
        );
    } else {
        println!(
            "{received} records at {} due/s: forwarding lateness {:.0} ms 50th, {:.0} ms 99th, {:.0} ms 99.9th, {:.0} ms max; seen by the consumer {:.0} ms 50th, {:.0} ms 99th, {:.0} ms 99.9th.",
            a.throughput,
            p(&broker_ms, 0.5),
            p(&broker_ms, 0.99),
            p(&broker_ms, 0.999),
            broker_ms.max() as f64 / 1000.0,
            p(&consumer_ms, 0.5),
            p(&consumer_ms, 0.99),
            p(&consumer_ms, 0.999)
        );
    }
    Ok(())
}

fn redis_used_memory(url: &str) -> Result<i64, String> {
    let client = redis::Client::open(url).map_err(|e| format!("--redis-url: {e}"))?;
    let mut con = client.get_connection().map_err(|e| format!("redis: {e}"))?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut con)
        .map_err(|e| format!("redis: {e}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "redis INFO has no used_memory".to_string())
}

fn retry(a: RetryArgs, conn: &Conn) -> Result<(), String> {
    let dlq = format!("{}.dlq", a.target);
    ensure_topic(conn, &a.target, a.partitions, &[])?;
    ensure_topic(conn, &dlq, a.partitions, &[])?;
    let backoff = a.backoff_ms.to_string();
    ensure_topic(
        conn,
        &a.topic,
        a.partitions,
        &[
            ("kairos.retry.target", a.target.as_str()),
            ("kairos.retry.backoff.ms", backoff.as_str()),
            ("kairos.retry.max.attempts", "1"),
        ],
    )?;
    let mem_before = a.redis_url.as_deref().map(redis_used_memory).transpose()?;
    let mut ccfg = conn.config()?;
    ccfg.set("group.id", format!("perf-retry-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    let consumer = conn.consumer(ccfg)?;
    assign_at_end(&consumer, conn, &a.target)?;
    let producer = bulk_producer(conn)?;
    let (topic, total, rate, size) = (
        a.topic.clone(),
        a.num_records,
        a.throughput.max(1),
        a.record_size,
    );
    let produce_start = Instant::now();
    let sender = std::thread::spawn(move || -> Result<f64, String> {
        let payload = vec![b'x'; size];
        let start = Instant::now();
        for i in 0..total {
            pace(start, i, rate);
            let key = format!("r{i}");
            let rec = BaseRecord::<[u8], [u8]>::to(&topic)
                .key(key.as_bytes())
                .payload(&payload[..]);
            send_waiting(&producer, rec).map_err(|e| format!("produce failed: {e}"))?;
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        Ok(start.elapsed().as_secs_f64())
    });
    let mut late = hist();
    let mut first_at: Option<Instant> = None;
    let mut mem_peak: Option<(i64, u64)> = None;
    let stall = Duration::from_millis(a.backoff_ms.max(0) as u64) + Duration::from_secs(30);
    let received = consume_until(&consumer, a.num_records, stall, "redelivery", |m| {
        // Redis memory with everything scheduled and nothing redelivered yet.
        if let (Some(url), None, None) = (&a.redis_url, &mem_peak, first_at) {
            if sender.is_finished() {
                std::thread::sleep(Duration::from_millis(300));
                mem_peak = Some((redis_used_memory(url)?, a.num_records));
            }
        }
        let Some(m) = m else {
            return Ok(false);
        };
        first_at.get_or_insert_with(Instant::now);
        if let Some(t) = header_i64(m, "kairos.original.timestamp") {
            let forwarded = m.timestamp().to_millis().unwrap_or(t);
            let _ = late.record(((forwarded - (t + a.backoff_ms)).max(0) * 1000 + 1) as u64);
        }
        Ok(true)
    })?;
    let produce_secs = sender
        .join()
        .map_err(|_| "producer thread panicked".to_string())??;
    let redeliver_secs = first_at
        .map(|f| f.elapsed().as_secs_f64())
        .unwrap_or(1e-9)
        .max(1e-9);
    let p = |q: f64| late.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{received} retries: scheduled at {:.0}/s, redelivered at {:.0}/s; lateness {:.0} ms 50th, {:.0} ms 99th, {:.0} ms 99.9th, {:.0} ms max (total run {:.1} s).",
        a.num_records as f64 / produce_secs,
        received as f64 / redeliver_secs,
        p(0.5),
        p(0.99),
        p(0.999),
        late.max() as f64 / 1000.0,
        produce_start.elapsed().as_secs_f64()
    );
    if let (Some(before), Some((after, n))) = (mem_before, mem_peak) {
        println!(
            "Redis memory: {} bytes per pending retry ({} pending, {} → {} bytes used).",
            (after - before) / n.max(1) as i64,
            n,
            before,
            after
        );
    }
    Ok(())
}
