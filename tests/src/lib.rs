//! Fixtures for end-to-end tests: real `kairos serve` processes on free loopback ports, each
//! with its own data directory, stopped by PID (SIGTERM or SIGKILL); [`k8s`]: a real
//! kube-apiserver for the operator's tests.

pub mod differential;
pub mod k8s;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the `kairos` binary, built once per test process with the same cargo and profile.
pub fn kairos_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // scripts/test.sh builds the workspace first and says where the binary is; building
        // `-p kairos-broker` here would resolve features per package and rebuild it.
        if let Some(bin) = std::env::var_os("KAIROS_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.exists(), "KAIROS_BIN={} does not exist", bin.display());
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "kairos-broker", "--bin", "kairos"]);
        let release = !cfg!(debug_assertions);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the kairos binary");
        assert!(status.success(), "cargo build of kairos failed");
        // target/<profile>/deps/<test-exe> → target/<profile>/kairos
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir");
        let bin = profile_dir.join("kairos");
        assert!(bin.exists(), "{} not found after build", bin.display());
        bin
    })
    .clone()
}

/// Exit status and output of one CLI run.
pub struct CliOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CliOut {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    pub fn ok(self, what: &str) -> CliOut {
        assert_eq!(
            self.code,
            Some(0),
            "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// A failure as the CLI promises it: non-zero exit, exactly one stderr line, starting with
    /// `kairos:` and containing `needle` (case-insensitive).
    pub fn fails_with(&self, what: &str, needle: &str) {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "{what}: expected a non-zero exit, got {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: expected one stderr line, got:\n{}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("kairos: "),
            "{what}: stderr does not start with 'kairos: ': {}",
            lines[0]
        );
        assert!(
            lines[0].to_lowercase().contains(&needle.to_lowercase()),
            "{what}: stderr does not mention {needle:?}: {}",
            lines[0]
        );
    }
}

/// Runs `kairos <args>` with `stdin` piped in; killed (and the test failed) after `limit`.
pub fn run_kairos(args: &[&str], stdin: &str, limit: Duration) -> CliOut {
    let start = Instant::now();
    let mut child = Command::new(kairos_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kairos");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "kairos {args:?} did not finish in {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    CliOut {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// A port free now, below Linux's ephemeral range (32768-60999): a broker restarted on its old
/// port must not find it taken by some client's outgoing connection meanwhile, which an
/// OS-chosen (ephemeral) port invites. Picked at random per process and then in sequence, so
/// parallel tests and test binaries rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        1 + (std::process::id().wrapping_mul(2_654_435_761) % SPAN),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// One `kairos serve` process.
pub struct Broker {
    pub port: u16,
    /// `metrics.listener` port (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_port: u16,
    /// `admin.listener` port (gRPC admin API).
    pub admin_port: u16,
    pub dir: PathBuf,
    /// The controller listener's port, for members of a [`Cluster`].
    pub controller_port: Option<u16>,
    /// `process.roles=controller`: no Kafka listener; ready once `/readyz` says so.
    pub controller_only: bool,
    overrides: Vec<String>,
    /// `KAIROS_FAULT` for the next start (failure points; see `kairos_broker::fault`).
    pub fault: Option<String>,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with a fresh data directory and the given `key=value` overrides.
    pub fn start(overrides: &[&str]) -> Broker {
        let mut b = Broker::prepare(overrides, None);
        b.spawn();
        b
    }

    /// A broker with its ports and data directory chosen, not started yet.
    pub fn prepare(overrides: &[&str], controller_port: Option<u16>) -> Broker {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        Broker {
            port: free_port(),
            metrics_port: free_port(),
            admin_port: free_port(),
            dir,
            controller_port,
            controller_only: false,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            fault: None,
            child: None,
            _temp: Some(temp),
        }
    }

    /// Runs `kairos serve` expecting it to fail at start-up; returns its exit code and output.
    pub fn start_expecting_failure(&mut self, within: Duration) -> (Option<i32>, String) {
        self.spawn_child();
        match self.wait_child(within) {
            Some(status) => (status.code(), self.log()),
            None => {
                self.kill9();
                panic!(
                    "kairos kept running for {within:?}; expected a start-up failure; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Starts the process without waiting for it to serve (see [`Broker::wait_ready`]).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "launch of a running broker");
        self.spawn_child();
    }

    /// Adds a `key=value` override for the next start (later overrides win).
    pub fn add_override(&mut self, o: &str) {
        self.overrides.push(o.to_string());
    }

    /// Sends a signal (SIGSTOP, SIGCONT, ...) to the running process.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child PID we own and have not reaped.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:<metrics port>`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// `127.0.0.1:<admin port>` for the gRPC admin API.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn spawn(&mut self) {
        self.spawn_child();
        self.wait_ready();
    }

    fn spawn_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("broker log file");
        let mut cmd = Command::new(kairos_bin());
        let listeners = match self.controller_port {
            Some(c) if self.controller_only => format!("listeners=CONTROLLER://127.0.0.1:{c}"),
            Some(c) => format!(
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{c}",
                self.port
            ),
            None => format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port),
        };
        cmd.arg("serve")
            .arg("--override")
            .arg(listeners)
            .arg("--override")
            .arg(format!("log.dirs={}", self.dir.join("data").display()))
            .arg("--override")
            .arg(format!("metrics.listener=127.0.0.1:{}", self.metrics_port))
            .arg("--override")
            .arg(format!("admin.listener=127.0.0.1:{}", self.admin_port))
            // Tests must not wait 3 s for every new group.
            .arg("--override")
            .arg("group.initial.rebalance.delay.ms=0");
        for o in &self.overrides {
            cmd.arg("--override").arg(o);
        }
        match &self.fault {
            Some(f) => cmd.env("KAIROS_FAULT", f),
            None => cmd.env_remove("KAIROS_FAULT"),
        };
        cmd.env(
            "KAIROS_LOG",
            std::env::var("KAIROS_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log);
        let child = cmd.spawn().expect("spawning kairos serve");
        self.child = Some(child);
    }

    /// Waits until the broker answers an ApiVersions request (bounded: 30 s).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "kairos exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if self.controller_only {
                if try_http_get(&format!("{}/readyz", self.metrics_url())).map(|r| r.0) == Ok(200) {
                    return;
                }
            } else if let Ok(mut s) =
                TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
            {
                // ApiVersions v0: size, api_key 18, version 0, correlation 1, client id "t".
                let req = [0u8, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 1, 0, 1, b't'];
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut size = [0u8; 4];
                if s.write_all(&req).is_ok() && s.read_exact(&mut size).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("kairos did not become ready in 30 s; log:\n{}", self.log());
    }

    /// The broker's stderr/stdout so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, with no flush and no clean-shutdown marker.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on a child PID we own and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Waits (up to `within`) for the process to exit by itself; returns whether it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        self.child.is_none() || self.wait_child(within).is_some()
    }

    /// Waits up to `within` for the running process to exit; its status, once it did (the
    /// child is then forgotten).
    fn wait_child(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let status = wait_exit(self.child.as_mut()?, within)?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let status = terminate(self.child.as_mut()?, Duration::from_secs(30));
        self.child = None;
        match status {
            Some(status) => status.code(),
            None => panic!("kairos did not stop within 30 s of SIGTERM"),
        }
    }

    /// Starts the process again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart of a running broker: stop or kill it first"
        );
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        // KAIROS_TEST_KEEP=1 keeps the data directory for a post-mortem.
        if std::env::var_os("KAIROS_TEST_KEEP").is_some() {
            if let Some(t) = self._temp.take() {
                eprintln!("kept broker data dir {}", t.keep().display());
            }
        }
    }
}

/// `child`'s exit status once it exits within `within` (None if it is still running then).
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then `child`'s exit status within `within`; past that, SIGKILL and None.
pub fn terminate(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(child, within);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Several `kairos serve` processes forming one cluster: node ids 1..=n, every node a voter
/// (`process.roles=broker,controller`), each with its own ports and data directory.
pub struct Cluster {
    pub brokers: Vec<Broker>,
}

impl Cluster {
    /// Starts `n` nodes at once and waits until each serves Kafka requests.
    pub fn start(n: usize, overrides: &[&str]) -> Cluster {
        Cluster::prepare(n, overrides).start_prepared()
    }

    /// The nodes configured (ports, voters, data directories) but not started.
    pub fn prepare(n: usize, overrides: &[&str]) -> Cluster {
        Cluster::layout(n, 0, "broker,controller", overrides)
    }

    /// KRaft's split layout: `controllers` controller-only nodes (ids 1..=controllers, the
    /// voters) and `brokers` broker-only nodes after them, configured but not started.
    pub fn prepare_split(controllers: usize, brokers: usize, overrides: &[&str]) -> Cluster {
        Cluster::layout(controllers, brokers, "controller", overrides)
    }

    /// `voters` nodes with `voter_roles` (ids 1..=voters), then `brokers` broker-only nodes.
    fn layout(voters: usize, brokers: usize, voter_roles: &str, overrides: &[&str]) -> Cluster {
        let ports: Vec<u16> = (0..voters).map(|_| free_port()).collect();
        let quorum = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = (0..voters + brokers)
            .map(|i| {
                let voter = i < voters;
                let mut o = vec![
                    format!("node.id={}", i + 1),
                    format!("controller.quorum.voters={quorum}"),
                    format!(
                        "process.roles={}",
                        if voter { voter_roles } else { "broker" }
                    ),
                ];
                o.extend(overrides.iter().map(|s| s.to_string()));
                let o: Vec<&str> = o.iter().map(String::as_str).collect();
                let mut b = Broker::prepare(&o, voter.then(|| ports[i]));
                b.controller_only = voter && voter_roles == "controller";
                b
            })
            .collect();
        Cluster { brokers }
    }

    /// Starts every prepared node and waits until each serves.
    pub fn start_prepared(mut self) -> Cluster {
        for b in &mut self.brokers {
            b.spawn_child();
        }
        for b in &mut self.brokers {
            b.wait_ready();
        }
        self
    }

    /// The nodes that serve Kafka clients (every node but the controller-only ones).
    pub fn broker_nodes(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.iter().filter(|b| !b.controller_only)
    }

    /// `host:port` of every node's Kafka listener, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.broker_nodes()
            .map(Broker::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The broker with node id `id`.
    pub fn node(&mut self, id: i32) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }
}

/// A raw Kafka-protocol connection for byte-level tests.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        RawConn { stream }
    }

    /// Sends one size-prefixed frame.
    pub fn send(&mut self, frame: &[u8]) {
        let mut buf = (frame.len() as i32).to_be_bytes().to_vec();
        buf.extend_from_slice(frame);
        self.stream.write_all(&buf).expect("write");
    }

    /// Reads one response frame; None when the broker closed the connection.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(body)
    }

    /// True when the broker closed the connection (EOF or reset) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// A real `prometheus` server (Debian's package) on a free port, scraping the given
/// `host:port` targets every second. Stopped (SIGKILL) and its data removed on drop.
pub struct Prometheus {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kairos\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawning prometheus (apt-get install prometheus; scripts/test.sh does)");
        let p = Prometheus {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ureq::get(&format!("{}/-/ready", p.url())).call().is_ok() {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant query; returns the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let mut resp = ureq::get(&format!("{}/api/v1/query", self.url()))
            .query("query", promql)
            .call()
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let text = resp.body_mut().read_to_string().expect("response body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json body");
        assert_eq!(body["status"], "success", "query {promql}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A librdkafka client configuration pointed at `b`.
pub fn client(b: &Broker) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap());
    c
}

/// Creates topic `name` (replication factor 1) through librdkafka's admin API, as an
/// application would; an error comes back as librdkafka words it.
pub fn create_topic(
    b: &Broker,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client(b).create().map_err(|e| e.to_string())?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for r in rt
        .block_on(admin.create_topics([&t], &AdminOptions::new()))
        .map_err(|e| e.to_string())?
    {
        r.map_err(|(_, e)| e.to_string())?;
    }
    Ok(())
}

/// Runs a kafka-python script from `tests/python` against `bootstrap`; panics with its output
/// (and `context`, e.g. broker logs) unless it exits 0 and prints `done`.
pub fn run_python(script: &str, bootstrap: &str, done: &str, context: impl Fn() -> String) {
    let python = std::env::var("KAIROS_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(&python)
        .arg(&path)
        .arg(bootstrap)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {python}: {e} (scripts/test.sh sets KAIROS_PYTHON up)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        context()
    );
    eprintln!("{stdout}");
}

/// Prints `name: n=.. min .. ms, median .. ms, max .. ms` for a benchmark's figures in ms.
pub fn print_summary(name: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        println!("{name}: no rounds");
        return;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: n={} min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms.len(),
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

/// GET a URL and return (status, body), e.g. a broker's `/metrics`.
pub fn http_get(url: &str) -> (u16, String) {
    try_http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET with a 5 s bound (a stopped process accepts connections but never answers): the status
/// and body, or why there is none.
pub fn try_http_get(url: &str) -> Result<(u16, String), String> {
    let mut r = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .call()
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string().unwrap_or_default()))
}

/// The value of one sample in Prometheus text format, matched by its full series text
/// (`name{label="v",...}` exactly as the broker prints it).
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// A real `redis-server` (Debian's package) on a free port with append-only persistence,
/// SIGKILLed on drop.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TLS mode: (password, CA file) — the server speaks only TLS and requires the password.
    tls: Option<(String, PathBuf)>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            tls: None,
        };
        r.spawn();
        r
    }

    /// A TLS-only server (self-signed certificate made with `openssl`) requiring `password`.
    pub fn start_tls(password: &str) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        // A CA, and a server certificate for 127.0.0.1 signed by it (webpki refuses a
        // self-signed certificate used as its own CA).
        let d = dir.path();
        std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext.cnf");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl (apt-get install openssl)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kairos-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        let ca = dir.path().join("ca.pem");
        let mut r = Redis {
            port: free_port(),
            dir,
            child: None,
            tls: Some((password.to_string(), ca)),
        };
        r.spawn();
        r
    }

    /// The CA file of a TLS server.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, ca)| ca.as_path())
    }

    pub fn url(&self) -> String {
        match &self.tls {
            Some((password, _)) => format!("rediss://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            Some((password, ca)) => {
                let ca = ca.to_string_lossy().to_string();
                let cert = self
                    .dir
                    .path()
                    .join("cert.pem")
                    .to_string_lossy()
                    .to_string();
                let key = self
                    .dir
                    .path()
                    .join("key.pem")
                    .to_string_lossy()
                    .to_string();
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .args([
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &ca,
                ])
                .args(["--requirepass", password]);
            }
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server (apt-get install redis-server; scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some((password, ca)) = &self.tls {
            loop {
                let out = Command::new("redis-cli")
                    .args(["--tls", "--cacert"])
                    .arg(ca)
                    .args([
                        "-p",
                        &self.port.to_string(),
                        "-a",
                        password,
                        "--no-auth-warning",
                        "PING",
                    ])
                    .output();
                if out
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
                    .unwrap_or(false)
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "TLS redis-server not ready in 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_millis(200),
            ) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server not ready in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (data kept in the append-only file).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A local 3-master Redis Cluster (`redis-server --cluster-enabled yes` ×3 joined with
/// `redis-cli --cluster create`), SIGKILLed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _dirs: Vec<tempfile::TempDir>,
    children: Vec<Child>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut dirs = Vec::new();
        let mut children = Vec::new();
        for p in &ports {
            let dir = tempfile::tempdir().expect("temp dir");
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &p.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning redis-server");
            dirs.push(dir);
            children.push(child);
        }
        let cluster = RedisCluster {
            ports,
            _dirs: dirs,
            children,
        };
        for p in &cluster.ports {
            cluster.wait_ping(*p);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(status.success(), "creating the Redis Cluster failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ports.iter().all(|p| {
            cluster
                .cli(*p, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) {
            assert!(Instant::now() < deadline, "Redis Cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn wait_ping(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.cli(port, &["PING"]).contains("PONG") {
            assert!(Instant::now() < deadline, "redis-server {port} not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one redis-cli command against a node; its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `retry.redis.url` for the cluster: every node, comma-separated.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends one request on a new connection and decodes the answer (kafka-protocol types).
pub fn kafka_call<R: kafka_protocol::protocol::Request>(
    addr: SocketAddr,
    version: i16,
    req: &R,
) -> Option<R::Response> {
    use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let key = ApiKey::try_from(R::KEY).ok()?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("kairos-tests")));
    let mut buf = bytes::BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    req.encode(&mut buf, version).ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.write_all(&(buf.len() as u32).to_be_bytes()).ok()?;
    s.write_all(&buf).ok()?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut frame = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut frame).ok()?;
    let mut b = bytes::Bytes::from(frame);
    ResponseHeader::decode(&mut b, key.response_header_version(version)).ok()?;
    <R::Response as Decodable>::decode(&mut b, version).ok()
}

/// Helpers for multi-broker tests: the cluster view through raw Kafka requests.
pub mod cluster {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{
        CreateTopicsRequest, MetadataRequest, MetadataResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::{kafka_call, Broker};

    /// Fast sessions and elections so failures show within a second or two.
    pub const FAST: &[&str] = &[
        "broker.session.timeout.ms=2000",
        "broker.heartbeat.interval.ms=200",
        "controller.quorum.election.timeout.ms=1000",
    ];

    pub fn metadata(b: &Broker) -> Option<MetadataResponse> {
        kafka_call(b.addr(), 12, &MetadataRequest::default().with_topics(None))
    }

    /// Waits (10 s) until every broker of `c` is registered, as its first broker sees it.
    pub fn wait_registered(c: &super::Cluster) {
        // Each broker applies the metadata log at its own pace: wait until every one of them
        // sees all the others, not only the first.
        let n = c.broker_nodes().count();
        wait_until(Duration::from_secs(10), "every broker registered", || {
            c.broker_nodes()
                .all(|b| live_broker_ids(b).is_some_and(|ids| ids.len() == n))
                .then_some(())
        });
    }

    /// Whether `b`'s `/metrics` say it is the active controller
    /// (`kafka_controller_kafkacontroller_activecontrollercount` 1).
    pub fn is_active_controller(b: &Broker) -> bool {
        let url = format!("{}/metrics", b.metrics_url());
        super::try_http_get(&url).is_ok_and(|(status, body)| {
            status == 200
                && super::sample(
                    &body,
                    "kafka_controller_kafkacontroller_activecontrollercount",
                ) == Some(1.0)
        })
    }

    /// The ids of the running nodes that say they are the active controller.
    pub fn active_controllers(c: &super::Cluster) -> Vec<i32> {
        (1..=c.brokers.len() as i32)
            .filter(|i| {
                let b = &c.brokers[*i as usize - 1];
                b.pid().is_some() && is_active_controller(b)
            })
            .collect()
    }

    /// The leader of `topic`-`partition` once its ISR holds all `replicas` (as `b` sees it).
    pub fn in_sync_leader(b: &Broker, topic: &str, partition: i32, replicas: usize) -> Option<i32> {
        leader_and_isr(b, topic, partition)
            .filter(|(l, isr)| *l > 0 && isr.len() == replicas)
            .map(|(l, _)| l)
    }

    /// Polls `consumer`, handing `step` each message (or None after a quiet 100 ms), until it
    /// answers Ok; panics after `within` with the progress its last Err described. Transport
    /// events are printed, not fatal (librdkafka reports a killed broker's connection so).
    pub fn poll_until(
        consumer: &rdkafka::consumer::BaseConsumer,
        within: Duration,
        mut step: impl FnMut(Option<&rdkafka::message::BorrowedMessage<'_>>) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + within;
        let mut progress = String::from("nothing read");
        loop {
            assert!(Instant::now() < deadline, "timed out: {progress}");
            let m = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    eprintln!("consumer event: {e}");
                    None
                }
                None => None,
            };
            match step(m.as_ref()) {
                Ok(()) => return,
                Err(p) => progress = p,
            }
        }
    }

    /// Polls `f` every 50 ms until it returns Some, or panics after `within`.
    pub fn wait_until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn create_topic(b: &Broker, name: &str, partitions: i32, rf: i16) -> i16 {
        create_topic_with(b, name, partitions, rf, &[])
    }

    /// CreateTopics with topic configs (`key`, `value`); returns the topic's error code.
    pub fn create_topic_with(
        b: &Broker,
        name: &str,
        partitions: i32,
        rf: i16,
        configs: &[(&str, &str)],
    ) -> i16 {
        use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_value(Some(StrBytes::from_string(v.to_string())))
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(rf)
                .with_configs(configs)])
            .with_timeout_ms(10_000);
        let resp = kafka_call(b.addr(), 5, &req).expect("CreateTopics answer");
        resp.topics[0].error_code
    }

    /// (leader per partition) of `topic` as broker `b` sees it.
    pub fn leaders(b: &Broker, topic: &str) -> Option<Vec<i32>> {
        let m = metadata(b)?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))?;
        let mut parts: Vec<_> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        parts.sort();
        Some(parts.into_iter().map(|(_, l)| l).collect())
    }

    /// The unfenced brokers as `b` sees them (DescribeCluster: Metadata keeps listing a broker
    /// for two seconds after it was fenced).
    pub fn live_broker_ids(b: &Broker) -> Option<BTreeSet<i32>> {
        use kafka_protocol::messages::DescribeClusterRequest;
        let r = kafka_call(b.addr(), 0, &DescribeClusterRequest::default())?;
        (r.error_code == 0).then(|| r.brokers.iter().map(|x| x.broker_id.0).collect())
    }

    /// (leader, ISR sorted) of `topic`-`partition` as broker `b` sees it.
    pub fn leader_and_isr(b: &Broker, topic: &str, partition: i32) -> Option<(i32, Vec<i32>)> {
        let m = metadata(b)?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)?;
        let mut isr: Vec<i32> = p.isr_nodes.iter().map(|n| n.0).collect();
        isr.sort_unstable();
        Some((p.leader_id.0, isr))
    }

    /// Produces one record to `topic`-`partition` on broker `b` with `acks`, by a raw Produce
    /// v9 request (so the error code is seen as the broker sent it, without client retries).
    /// Returns (error code, base offset).
    pub fn produce_one(
        b: &Broker,
        topic: &str,
        partition: i32,
        acks: i16,
        value: &str,
    ) -> Option<(i16, i64)> {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::ProduceRequest;
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: now,
            key: None,
            value: Some(bytes::Bytes::from(value.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &[record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .ok()?;
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(buf.freeze()))])]);
        let resp = kafka_call(b.addr(), 9, &req)?;
        let p = resp.responses.first()?.partition_responses.first()?;
        Some((p.error_code, p.base_offset))
    }

    /// The node id FindCoordinator names for group `group` (retrying while unavailable).
    pub fn coordinator(b: &Broker, group: &str) -> Option<i32> {
        use kafka_protocol::messages::FindCoordinatorRequest;
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        wait_until(Duration::from_secs(10), "a coordinator", || {
            let resp = kafka_call(b.addr(), 3, &req)?;
            (resp.error_code == 0 && resp.node_id.0 >= 0).then_some(resp.node_id.0)
        })
        .into()
    }

    /// An idempotent acks=all producer, and a runtime to wait on its sends.
    pub fn acks_all_producer(bootstrap: &str) -> (FutureProducer, tokio::runtime::Runtime) {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .expect("producer");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (producer, rt)
    }

    /// Sends `n` records to `topic` (partition `i % partitions`), acks=all, idempotent; returns
    /// (partition, offset) → payload of every acknowledged one.
    pub fn produce_acked(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        tag: &str,
        n: i32,
    ) -> BTreeMap<(i32, i64), String> {
        let (producer, rt) = acks_all_producer(bootstrap);
        let mut acked = BTreeMap::new();
        for i in 0..n {
            let payload = format!("{tag}{i}");
            let d = rt
                .block_on(
                    producer.send(
                        FutureRecord::<(), _>::to(topic)
                            .payload(&payload)
                            .partition(i % partitions),
                        Duration::from_secs(15),
                    ),
                )
                .unwrap_or_else(|(e, _)| panic!("produce {tag}{i}: {e}"));
            acked.insert((d.partition, d.offset), payload);
        }
        acked
    }

    /// Reads `topic` (partitions `0..partitions`) from the beginning until `want` records came
    /// (20 s at most): (partition, offset) → payload.
    pub fn consume_all(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        want: usize,
    ) -> BTreeMap<(i32, i64), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "cluster-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut got = BTreeMap::new();
        poll_until(&consumer, Duration::from_secs(20), |m| {
            if let Some(m) = m {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                got.insert((m.partition(), m.offset()), v);
            }
            if got.len() >= want {
                Ok(())
            } else {
                Err(format!("{} of {want} read", got.len()))
            }
        });
        got
    }
}

/// A real Apache Kafka 4.4 (scripts/kafka-reference.sh), one node, stopped by PID on drop.
pub struct KafkaReference {
    pub bootstrap: String,
    dir: PathBuf,
    _temp: tempfile::TempDir,
}

impl KafkaReference {
    pub fn start() -> KafkaReference {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("kafka");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-reference.sh");
        let out = Command::new(&script)
            .args(["start", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/kafka-reference.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kafka-reference.sh start failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = stdout
            .lines()
            .find_map(|l| l.strip_prefix("BOOTSTRAP="))
            .expect("BOOTSTRAP= line")
            .trim()
            .to_string();
        KafkaReference {
            bootstrap,
            dir,
            _temp: temp,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        let first = self.bootstrap.split(',').next().unwrap_or_default();
        first.parse().expect("bootstrap is ip:port")
    }
}

impl Drop for KafkaReference {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-reference.sh");
        let _ = Command::new(script)
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
