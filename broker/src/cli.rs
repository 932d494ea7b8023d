//! The `kairos` command line: `serve` runs the broker; the rest is an admin CLI over librdkafka
//! (like Redpanda's rpk). Errors are one line on stderr and exit status 1.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, ResourceSpecifier};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod delay;
mod dlq;
mod perf;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "Kairos: a Kafka-compatible broker with time built in"
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    admin: delay::AdminConn,
    #[command(subcommand)]
    command: Command,
}

/// Connection options, accepted before or after the subcommand.
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
    /// Extra librdkafka client properties, key=value (repeatable).
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
                .ok_or_else(|| format!("-X {p}: expected key=value"))?;
            c.set(k, v);
        }
        Ok(c)
    }

    /// The context every CLI client is created with (quiet logs, broker errors remembered).
    fn context(&self) -> CliContext {
        CliContext {
            bootstrap: self.bootstrap.clone(),
            transport_error: Arc::new(Mutex::new(None)),
        }
    }

    fn admin(&self) -> Result<AdminClient<CliContext>, String> {
        self.config()?
            .create_with_context(self.context())
            .map_err(|e| format!("cannot create admin client: {e}"))
    }

    fn consumer(&self, cfg: ClientConfig) -> Result<BaseConsumer<CliContext>, String> {
        cfg.create_with_context(self.context())
            .map_err(|e| format!("cannot create consumer: {e}"))
    }

    /// Bound for blocking metadata, watermark and group calls: `-X socket.timeout.ms` when given
    /// (so a dead bootstrap server fails as fast as the user asked), else 10 s.
    fn timeout(&self) -> Duration {
        self.properties
            .iter()
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim() == "socket.timeout.ms")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(10))
    }
}

/// Client context of the CLI: librdkafka's own log lines are dropped (errors reach the user as
/// one line through the command's result), and the last transport-level error is kept so that a
/// timeout can be reported as what it is (no broker reachable, and why).
#[derive(Clone)]
pub struct CliContext {
    bootstrap: String,
    transport_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for CliContext {
    /// Not printed; a connection failure ("Connect to ipv4#... failed: Connection refused") is
    /// kept for the error line. Logs arrive through the client's main queue: see `cfail`.
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if fac == "FAIL" {
            // "[thrd:host:port/bootstrap]: host:port/bootstrap: Connect to ... failed: ..."
            let msg = match msg.strip_prefix("[thrd:") {
                Some(rest) => rest.split_once("]: ").map_or(msg, |(_, m)| m),
                None => msg,
            };
            *self.transport_error.lock() = Some(msg.to_string());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Resolve
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SSL
            )
        ) {
            *self.transport_error.lock() = Some(reason.to_string());
        }
    }
}

impl ConsumerContext for CliContext {}

impl CliContext {
    /// The last connection failure; waits briefly, as an admin client's logs are served by its
    /// polling thread and may trail the failed request.
    fn transport_reason(&self) -> Option<String> {
        for _ in 0..5 {
            if let Some(why) = self.transport_error.lock().clone() {
                return Some(why);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// One line for a failed client call: a local failure (timeout, transport) after a
    /// connection error names the unreachable broker and librdkafka's reason.
    fn fail(&self, what: &str, e: &KafkaError) -> String {
        let code = match e {
            KafkaError::AdminOp(c) => Some(*c),
            e => e.rdkafka_error_code(),
        };
        let local = code.is_some_and(|c| (c as i32) < 0);
        if local {
            if let Some(why) = self.transport_reason() {
                return format!("cannot reach a broker at {}: {why}", self.bootstrap);
            }
        }
        format!("{what}: {e}")
    }

    /// As `fail`, for admin results that carry only a code.
    fn fail_code(&self, what: &str, code: RDKafkaErrorCode) -> String {
        if (code as i32) < 0 {
            if let Some(why) = self.transport_reason() {
                return format!("cannot reach a broker at {}: {why}", self.bootstrap);
            }
        }
        format!("{what}: {}", code_text(code))
    }
}

/// Kafka-tool wording for the errors users meet most, else librdkafka's description.
fn code_text(code: RDKafkaErrorCode) -> String {
    match code {
        RDKafkaErrorCode::UnknownTopicOrPartition => "topic does not exist".into(),
        RDKafkaErrorCode::TopicAlreadyExists => "topic already exists".into(),
        RDKafkaErrorCode::GroupIdNotFound => "consumer group does not exist".into(),
        RDKafkaErrorCode::NonEmptyGroup => "consumer group has active members".into(),
        c => format!("{c} ({c:?})"),
    }
}

/// Admin calls made directly on librdkafka where the `rdkafka` crate loses the broker's answer:
/// its CreateTopics result keeps only the error code (not "Unknown topic config name: x"), and
/// its AlterConfigs result ignores per-resource errors altogether (a rejected change looked
/// like success).
mod raw {
    use std::collections::BTreeMap;
    use std::ffi::{c_char, CStr, CString};
    use std::time::Duration;

    use rdkafka::bindings as rd;
    use rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR as NO_ERROR;

    fn text(p: *const c_char) -> String {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: librdkafka returns NUL-terminated strings owned by the object we read them
            // from, alive until that object is destroyed (after this copy).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    }

    fn cstring(s: &str) -> Result<CString, String> {
        CString::new(s).map_err(|_| format!("{s:?}: contains a NUL byte"))
    }

    fn err_name(e: rd::rd_kafka_resp_err_t) -> String {
        // SAFETY: rd_kafka_err2name returns a static string for any code.
        text(unsafe { rd::rd_kafka_err2name(e) })
    }

    /// Owns the queue, options and result event of one admin request.
    struct Request {
        queue: *mut rd::rd_kafka_queue_t,
        options: *mut rd::rd_kafka_AdminOptions_t,
        event: *mut rd::rd_kafka_event_t,
    }

    impl Request {
        fn new(rk: *mut rd::rd_kafka_t, op: rd::rd_kafka_admin_op_t, timeout: Duration) -> Request {
            // SAFETY: rk is a live client handle; the objects are destroyed in Drop.
            unsafe {
                let options = rd::rd_kafka_AdminOptions_new(rk, op);
                // The request timeout stays librdkafka's (socket.timeout.ms, so -X shortens it);
                // the operation timeout is how long the broker may take to create the topic.
                if op == rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS {
                    let mut errstr = [0 as c_char; 256];
                    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                    rd::rd_kafka_AdminOptions_set_operation_timeout(
                        options,
                        ms,
                        errstr.as_mut_ptr(),
                        errstr.len(),
                    );
                }
                Request {
                    queue: rd::rd_kafka_queue_new(rk),
                    options,
                    event: std::ptr::null_mut(),
                }
            }
        }

        /// Waits for the result event; Err on a request-level failure.
        fn wait(&mut self, timeout: Duration) -> Result<(), (rd::rd_kafka_resp_err_t, String)> {
            // librdkafka answers by its own timeouts; this bound only guards against a lost event.
            let ms = (timeout * 2 + Duration::from_secs(60))
                .as_millis()
                .min(i32::MAX as u128) as i32;
            // SAFETY: the queue is live; the event is destroyed in Drop.
            unsafe {
                self.event = rd::rd_kafka_queue_poll(self.queue, ms);
                if self.event.is_null() {
                    return Err((
                        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
                        "no answer in time".into(),
                    ));
                }
                let e = rd::rd_kafka_event_error(self.event);
                if e != NO_ERROR {
                    return Err((e, text(rd::rd_kafka_event_error_string(self.event))));
                }
            }
            Ok(())
        }
    }

    impl Drop for Request {
        fn drop(&mut self) {
            // SAFETY: each pointer was created by librdkafka for this request and is released once.
            unsafe {
                if !self.event.is_null() {
                    rd::rd_kafka_event_destroy(self.event);
                }
                rd::rd_kafka_AdminOptions_destroy(self.options);
                rd::rd_kafka_queue_destroy(self.queue);
            }
        }
    }

    /// Serves the client's main queue, where its log lines wait when nobody polls it (an admin
    /// client's thread polls only its result queue); returns the last connection failure.
    pub fn drain_logs(rk: *mut rd::rd_kafka_t) -> Option<String> {
        let mut found = None;
        // SAFETY: rk is live; the main-queue handle and each event are released here.
        unsafe {
            let q = rd::rd_kafka_queue_get_main(rk);
            for _ in 0..1000 {
                let ev = rd::rd_kafka_queue_poll(q, 0);
                if ev.is_null() {
                    break;
                }
                if rd::rd_kafka_event_type(ev) == rd::RD_KAFKA_EVENT_LOG {
                    let mut fac: *const c_char = std::ptr::null();
                    let mut msg: *const c_char = std::ptr::null();
                    let mut level = 0;
                    if rd::rd_kafka_event_log(ev, &mut fac, &mut msg, &mut level) == 0
                        && text(fac) == "FAIL"
                    {
                        found = Some(text(msg));
                    }
                }
                rd::rd_kafka_event_destroy(ev);
            }
            rd::rd_kafka_queue_destroy(q);
        }
        found
    }

    /// A failure: librdkafka's code name and the broker's (or client's) message.
    pub struct Failure {
        pub code: rd::rd_kafka_resp_err_t,
        pub message: String,
    }

    impl Failure {
        pub fn local(&self) -> bool {
            (self.code as i32) < 0
        }
        pub fn describe(&self) -> String {
            if self.message.is_empty() {
                err_name(self.code)
            } else {
                format!(
                    "{} ({})",
                    self.message.trim_end_matches('.'),
                    err_name(self.code)
                )
            }
        }
    }

    pub fn create_topic(
        rk: *mut rd::rd_kafka_t,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let cname = cstring(name).map_err(|message| Failure {
            code: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__INVALID_ARG,
            message,
        })?;
        let mut req = Request::new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS,
            timeout,
        );
        let mut errstr = [0 as c_char; 512];
        // SAFETY: valid C strings and buffer; the NewTopic is destroyed right after the call
        // (librdkafka copies it).
        unsafe {
            let t = rd::rd_kafka_NewTopic_new(
                cname.as_ptr(),
                partitions,
                replication_factor,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if t.is_null() {
                return Err(Failure {
                    code: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__INVALID_ARG,
                    message: text(errstr.as_ptr()),
                });
            }
            for (k, v) in configs {
                let (ck, cv) = match (cstring(k), cstring(v)) {
                    (Ok(k), Ok(v)) => (k, v),
                    (Err(message), _) | (_, Err(message)) => {
                        rd::rd_kafka_NewTopic_destroy(t);
                        return Err(Failure {
                            code: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__INVALID_ARG,
                            message,
                        });
                    }
                };
                rd::rd_kafka_NewTopic_set_config(t, ck.as_ptr(), cv.as_ptr());
            }
            let mut ts = [t];
            rd::rd_kafka_CreateTopics(rk, ts.as_mut_ptr(), 1, req.options, req.queue);
            rd::rd_kafka_NewTopic_destroy(t);
        }
        req.wait(timeout)
            .map_err(|(code, message)| Failure { code, message })?;
        // SAFETY: the event is a CreateTopics result (or null-checked); its topic results live
        // as long as the event.
        unsafe {
            let res = rd::rd_kafka_event_CreateTopics_result(req.event);
            if res.is_null() {
                return Err(Failure {
                    code: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FAIL,
                    message: "unexpected admin result".into(),
                });
            }
            let mut n = 0usize;
            let topics = rd::rd_kafka_CreateTopics_result_topics(res, &mut n);
            for i in 0..n {
                let tr = *topics.add(i);
                let code = rd::rd_kafka_topic_result_error(tr);
                if code != NO_ERROR {
                    return Err(Failure {
                        code,
                        message: text(rd::rd_kafka_topic_result_error_string(tr)),
                    });
                }
            }
        }
        Ok(())
    }

    /// AlterConfigs (replaces the topic's whole set of overrides).
    pub fn alter_topic_configs(
        rk: *mut rd::rd_kafka_t,
        name: &str,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let invalid = |message| Failure {
            code: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__INVALID_ARG,
            message,
        };
        let cname = cstring(name).map_err(invalid)?;
        let mut pairs = Vec::new();
        for (k, v) in configs {
            pairs.push((cstring(k).map_err(invalid)?, cstring(v).map_err(invalid)?));
        }
        let mut req = Request::new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONFIGS,
            timeout,
        );
        // SAFETY: valid C strings; the ConfigResource is destroyed right after the call
        // (librdkafka copies it).
        unsafe {
            let r = rd::rd_kafka_ConfigResource_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                cname.as_ptr(),
            );
            for (k, v) in &pairs {
                rd::rd_kafka_ConfigResource_set_config(r, k.as_ptr(), v.as_ptr());
            }
            let mut rs = [r];
            rd::rd_kafka_AlterConfigs(rk, rs.as_mut_ptr(), 1, req.options, req.queue);
            rd::rd_kafka_ConfigResource_destroy(r);
        }
        req.wait(timeout)
            .map_err(|(code, message)| Failure { code, message })?;
        // SAFETY: as in create_topic.
        unsafe {
            let res = rd::rd_kafka_event_AlterConfigs_result(req.event);
            if res.is_null() {
                return Err(Failure {
                    code: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FAIL,
                    message: "unexpected admin result".into(),
                });
            }
            let mut n = 0usize;
            let resources = rd::rd_kafka_AlterConfigs_result_resources(res, &mut n);
            for i in 0..n {
                let r = *resources.add(i);
                let code = rd::rd_kafka_ConfigResource_error(r);
                if code != NO_ERROR {
                    return Err(Failure {
                        code,
                        message: text(rd::rd_kafka_ConfigResource_error_string(r)),
                    });
                }
            }
        }
        Ok(())
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
    /// Delay topics: schedule, cancel, list pending, stats.
    #[command(subcommand)]
    Delay(delay::DelayCmd),
    /// Dead-letter topics: list records, redrive them to their source.
    #[command(subcommand)]
    Dlq(dlq::DlqCmd),
    /// Retry topics: stats.
    #[command(subcommand)]
    Retry(dlq::RetryCmd),
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
    },
    List,
    Describe {
        name: String,
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
    },
    Delete {
        name: String,
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
}

#[derive(Subcommand)]
enum GroupCmd {
    List,
    Describe {
        group: String,
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
    },
    Delete {
        group: String,
    },
}

/// Entry point of the binary; returns the exit status.
pub fn main() -> i32 {
    let mut cli = Cli::parse();
    cli.admin.default_from(&cli.conn.bootstrap);
    let result = match cli.command {
        Command::Serve { config, overrides } => serve(config, overrides),
        Command::Topic(cmd) => block_on(topic(cmd, &cli.conn)),
        Command::Produce(args) => produce(args, &cli.conn),
        Command::Consume(args) => consume(args, &cli.conn),
        Command::Group(cmd) => block_on(group(cmd, &cli.conn)),
        Command::Perf(cmd) => perf::run(cmd, &cli.conn),
        Command::Delay(cmd) => block_on(delay::run(cmd, &cli.conn, &cli.admin)),
        Command::Dlq(cmd) => block_on(dlq::dlq(cmd, &cli.conn, &cli.admin)),
        Command::Retry(cmd) => block_on(dlq::retry(cmd, &cli.admin)),
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
        // Colour codes only for a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = crate::config::BrokerConfig::load(config.as_deref(), &overrides)
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = match cfg.listener {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            ),
            None => None,
        };
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

/// `CliContext::fail` for a consumer: first serves its queue, where librdkafka's log lines (the
/// reason a broker could not be reached) wait until someone polls.
fn cfail(consumer: &BaseConsumer<CliContext>, what: &str, e: &KafkaError) -> String {
    // One event per call, and a served log event also reads as None: no early exit.
    for _ in 0..100 {
        let _ = consumer.poll(Duration::ZERO);
    }
    consumer.context().fail(what, e)
}

/// Records the admin client's pending connection-failure log (see `raw::drain_logs`) and returns
/// its context, ready for `fail`/`fail_code`.
fn actx(admin: &AdminClient<CliContext>) -> &CliContext {
    let ctx = admin.inner().context();
    if let Some(msg) = raw::drain_logs(admin.inner().native_ptr()) {
        ctx.log(RDKafkaLogLevel::Error, "FAIL", &msg);
    }
    ctx
}

/// Metadata of one topic; a clear error when it does not exist.
fn topic_metadata(
    consumer: &BaseConsumer<CliContext>,
    conn: &Conn,
    name: &str,
) -> Result<Vec<(i32, i32, Vec<i32>)>, String> {
    let md = consumer
        .fetch_metadata(Some(name), conn.timeout())
        .map_err(|e| cfail(consumer, "metadata", &e))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| format!("no metadata returned for topic {name}"))?;
    if let Some(e) = t.error() {
        let code = RDKafkaErrorCode::from(e);
        return Err(match code {
            RDKafkaErrorCode::UnknownTopicOrPartition => {
                format!("topic {name} does not exist")
            }
            c => format!("topic {name}: {}", code_text(c)),
        });
    }
    Ok(t.partitions()
        .iter()
        .map(|p| (p.id(), p.leader(), p.isr().to_vec()))
        .collect())
}

async fn topic(cmd: TopicCmd, conn: &Conn) -> Result<(), String> {
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut pairs = Vec::new();
            for c in &configs {
                pairs.push(kv(c)?);
            }
            let admin = conn.admin()?;
            raw::create_topic(
                admin.inner().native_ptr(),
                &name,
                partitions,
                replication_factor,
                &pairs,
                Duration::from_secs(30),
            )
            .map_err(|f| {
                if f.local() {
                    if let Some(why) = actx(&admin).transport_reason() {
                        return format!("cannot reach a broker at {}: {why}", conn.bootstrap);
                    }
                }
                format!("cannot create topic {name}: {}", f.describe())
            })?;
            println!("Created topic {name}.");
            Ok(())
        }
        TopicCmd::List => {
            let consumer = conn.consumer(conn.config()?)?;
            let md = consumer
                .fetch_metadata(None, conn.timeout())
                .map_err(|e| cfail(&consumer, "metadata", &e))?;
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
        TopicCmd::Describe { name } => {
            let consumer = conn.consumer(conn.config()?)?;
            let parts = topic_metadata(&consumer, conn, &name)?;
            let admin = conn.admin()?;
            let cfg = admin
                .describe_configs([&ResourceSpecifier::Topic(&name)], &opts())
                .await
                .map_err(|e| actx(&admin).fail("describe configs", &e))?;
            println!("Topic: {name}\tPartitionCount: {}", parts.len());
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
            for (id, leader, isr) in parts {
                let (lo, hi) = consumer
                    .fetch_watermarks(&name, id, conn.timeout())
                    .map_err(|e| {
                        consumer
                            .context()
                            .fail(&format!("watermarks of {name}-{id}"), &e)
                    })?;
                let isr: Vec<String> = isr.iter().map(i32::to_string).collect();
                println!(
                    "{:>9} {:>7} {:>14} {:>14} {:>9}",
                    id,
                    leader,
                    lo,
                    hi,
                    isr.join(",")
                );
            }
            Ok(())
        }
        TopicCmd::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            let mut sets = Vec::new();
            for c in &configs {
                sets.push(kv(c)?);
            }
            if partitions.is_none() && sets.is_empty() && delete_configs.is_empty() {
                return Err(
                    "nothing to alter: give --partitions, --config or --delete-config".into(),
                );
            }
            // The admin results below cannot tell "no such topic" apart: ask first.
            topic_metadata(&conn.consumer(conn.config()?)?, conn, &name)?;
            let admin = conn.admin()?;
            if let Some(n) = partitions {
                let r = admin
                    .create_partitions([&NewPartitions::new(&name, n)], &opts())
                    .await
                    .map_err(|e| actx(&admin).fail("create partitions", &e))?;
                for res in r {
                    res.map_err(|(t, e)| {
                        actx(&admin).fail_code(&format!("cannot add partitions to {t}"), e)
                    })?;
                }
                println!("Topic {name} now has {n} partitions.");
            }
            if !sets.is_empty() || !delete_configs.is_empty() {
                // AlterConfigs replaces the whole set: start from the current overrides.
                let cur = admin
                    .describe_configs([&ResourceSpecifier::Topic(&name)], &opts())
                    .await
                    .map_err(|e| actx(&admin).fail("describe configs", &e))?;
                let res = cur
                    .into_iter()
                    .next()
                    .ok_or("no config result")?
                    .map_err(|e| format!("describe configs of {name}: {e}"))?;
                let mut map: BTreeMap<String, String> = res
                    .entries
                    .into_iter()
                    .filter(|e| matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic))
                    .map(|e| (e.name, e.value.unwrap_or_default()))
                    .collect();
                for (k, v) in &sets {
                    map.insert(k.to_string(), v.to_string());
                }
                for k in &delete_configs {
                    map.remove(k);
                }
                raw::alter_topic_configs(
                    admin.inner().native_ptr(),
                    &name,
                    &map,
                    Duration::from_secs(30),
                )
                .map_err(|f| {
                    if f.local() {
                        if let Some(why) = actx(&admin).transport_reason() {
                            return format!("cannot reach a broker at {}: {why}", conn.bootstrap);
                        }
                    }
                    format!("cannot alter configs of {name}: {}", f.describe())
                })?;
                println!("Updated configs of topic {name}.");
            }
            Ok(())
        }
        TopicCmd::Delete { name } => {
            let admin = conn.admin()?;
            let r = admin
                .delete_topics(&[&name], &opts())
                .await
                .map_err(|e| actx(&admin).fail("delete topics", &e))?;
            for res in r {
                res.map_err(|(t, e)| {
                    actx(&admin).fail_code(&format!("cannot delete topic {t}"), e)
                })?;
            }
            println!("Deleted topic {name}.");
            Ok(())
        }
    }
}

/// Producer context of `kairos produce`: failed deliveries are counted, not ignored.
struct ProduceContext {
    cli: CliContext,
    failed: Mutex<(u64, Option<KafkaError>)>,
}

impl ClientContext for ProduceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.cli.log(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.cli.error(error, reason);
    }
}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut f = self.failed.lock();
            f.0 += 1;
            if f.1.is_none() {
                f.1 = Some(e.clone());
            }
        }
    }
}

fn produce(args: ProduceArgs, conn: &Conn) -> Result<(), String> {
    let mut cfg = conn.config()?;
    cfg.set("acks", &args.acks);
    let producer: ThreadedProducer<ProduceContext> = cfg
        .create_with_context(ProduceContext {
            cli: conn.context(),
            failed: Mutex::new((0, None)),
        })
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
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    std::thread::sleep(Duration::from_millis(5));
                    rec = Some(r);
                }
                Err((e, _)) => return Err(producer.context().cli.fail("produce failed", &e)),
            }
        }
        count += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| producer.context().cli.fail("flush failed", &e))?;
    let (failed, first) = {
        let f = producer.context().failed.lock();
        (f.0, f.1.clone())
    };
    if let Some(e) = first {
        return Err(producer.context().cli.fail(
            &format!(
                "{failed} of {count} records to {} were not delivered",
                args.topic
            ),
            &e,
        ));
    }
    eprintln!("Produced {count} records to {}.", args.topic);
    Ok(())
}

fn consume(args: ConsumeArgs, conn: &Conn) -> Result<(), String> {
    let mut cfg = conn.config()?;
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
        // Offsets are stored by hand for the records actually printed: with automatic storing,
        // closing the consumer drains the prefetched records and commits past them.
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .set("enable.partition.eof", "false");
    let consumer = conn.consumer(cfg)?;
    let parts = topic_metadata(&consumer, conn, &args.topic)?;
    let explicit = args.offset.is_some()
        || args.timestamp.is_some()
        || args.partition.is_some()
        || args.group.is_none();
    if explicit {
        let mut tpl = TopicPartitionList::new();
        for (id, _, _) in &parts {
            if args.partition.is_some_and(|want| want != *id) {
                continue;
            }
            let offset = match (args.offset, args.timestamp) {
                (Some(o), _) => Offset::Offset(o),
                (None, Some(ts)) => Offset::Offset(ts),
                _ if args.from_beginning => Offset::Beginning,
                _ => Offset::End,
            };
            tpl.add_partition_offset(&args.topic, *id, offset)
                .map_err(|e| e.to_string())?;
        }
        if tpl.count() == 0 {
            return Err(format!(
                "topic {} has no partition {} (it has {})",
                args.topic,
                args.partition.unwrap_or(-1),
                parts.len()
            ));
        }
        if args.timestamp.is_some() {
            tpl = consumer
                .offsets_for_times(tpl, conn.timeout())
                .map_err(|e| cfail(&consumer, "offsets for times", &e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| cfail(&consumer, "assign", &e))?;
    } else {
        consumer
            .subscribe(&[&args.topic])
            .map_err(|e| cfail(&consumer, "subscribe", &e))?;
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
        let msg = msg.map_err(|e| cfail(&consumer, "consume failed", &e))?;
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
        if args.group.is_some() {
            consumer
                .store_offset_from_message(&msg)
                .map_err(|e| cfail(&consumer, "store offset", &e))?;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    if args.group.is_some() {
        match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => {}
            // Nothing consumed, nothing to commit.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => return Err(cfail(&consumer, "commit failed", &e)),
        }
    }
    eprintln!("Processed a total of {seen} messages");
    Ok(())
}

async fn group(cmd: GroupCmd, conn: &Conn) -> Result<(), String> {
    match cmd {
        GroupCmd::List => {
            let consumer = conn.consumer(conn.config()?)?;
            let groups = consumer
                .fetch_group_list(None, conn.timeout())
                .map_err(|e| cfail(&consumer, "list groups", &e))?;
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
        GroupCmd::Describe { group } => describe_group(conn, &group),
        GroupCmd::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            execute,
        } => {
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
            let mut cfg = conn.config()?;
            cfg.set("group.id", &group)
                .set("enable.auto.commit", "false");
            let consumer = conn.consumer(cfg)?;
            let groups = consumer
                .fetch_group_list(Some(&group), conn.timeout())
                .map_err(|e| cfail(&consumer, "describe group", &e))?;
            if let Some(g) = groups.groups().first() {
                if !g.members().is_empty() {
                    return Err(format!(
                        "group {group} has {} active member(s); stop them before resetting offsets",
                        g.members().len()
                    ));
                }
            }
            let parts = topic_metadata(&consumer, conn, &topic)?;
            let mut tpl = TopicPartitionList::new();
            for (id, _, _) in &parts {
                let (lo, hi) = consumer
                    .fetch_watermarks(&topic, *id, conn.timeout())
                    .map_err(|e| cfail(&consumer, &format!("watermarks of {topic}-{id}"), &e))?;
                let target = if to_earliest {
                    lo
                } else if to_latest {
                    hi
                } else if let Some(o) = to_offset {
                    o.clamp(lo, hi)
                } else {
                    -1
                };
                tpl.add_partition_offset(&topic, *id, Offset::Offset(target))
                    .map_err(|e| e.to_string())?;
            }
            if let Some(ts) = to_timestamp {
                let mut q = TopicPartitionList::new();
                for (id, _, _) in &parts {
                    q.add_partition_offset(&topic, *id, Offset::Offset(ts))
                        .map_err(|e| e.to_string())?;
                }
                let found = consumer
                    .offsets_for_times(q, conn.timeout())
                    .map_err(|e| cfail(&consumer, "offsets for times", &e))?;
                tpl = TopicPartitionList::new();
                for e in found.elements() {
                    let off = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => {
                            consumer
                                .fetch_watermarks(&topic, e.partition(), conn.timeout())
                                .map_err(|e| cfail(&consumer, "watermarks", &e))?
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
                    .map_err(|e| cfail(&consumer, "commit failed", &e))?;
            } else {
                eprintln!("(dry run: add --execute to apply)");
            }
            Ok(())
        }
        GroupCmd::Delete { group } => {
            let admin = conn.admin()?;
            let r = admin
                .delete_groups(&[&group], &opts())
                .await
                .map_err(|e| actx(&admin).fail("delete groups", &e))?;
            for res in r {
                res.map_err(|(g, e)| {
                    actx(&admin).fail_code(&format!("cannot delete group {g}"), e)
                })?;
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
    let consumer = conn.consumer(cfg)?;
    let groups = consumer
        .fetch_group_list(Some(group), conn.timeout())
        .map_err(|e| cfail(&consumer, "describe group", &e))?;
    let missing = || format!("consumer group {group} does not exist");
    let g = groups.groups().first().ok_or_else(missing)?;
    if g.state() == "Dead" {
        return Err(missing());
    }
    // Committed offsets for every partition of every topic.
    let md = consumer
        .fetch_metadata(None, conn.timeout())
        .map_err(|e| cfail(&consumer, "metadata", &e))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let committed = consumer
        .committed_offsets(tpl, conn.timeout())
        .map_err(|e| cfail(&consumer, "committed offsets", &e))?;
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
            .fetch_watermarks(e.topic(), e.partition(), conn.timeout())
            .map_err(|err| {
                cfail(
                    &consumer,
                    &format!("watermarks of {}-{}", e.topic(), e.partition()),
                    &err,
                )
            })?;
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
