//! The `examples/order-cancel` binary against a real broker, run as a user would run it.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kairos_tests::Broker;

/// Path of the `order-cancel` binary, built once per test process with the same cargo and
/// profile (as `kairos_tests::kairos_bin`).
fn order_cancel_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "order-cancel-example",
            "--bin",
            "order-cancel",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the order-cancel binary");
        assert!(status.success(), "cargo build of order-cancel failed");
        // target/<profile>/deps/<test-exe> → target/<profile>/order-cancel
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir");
        let bin = profile_dir.join("order-cancel");
        assert!(bin.exists(), "{} not found after build", bin.display());
        bin
    })
    .clone()
}

/// A child process killed (SIGKILL) and reaped when dropped, e.g. when an assertion fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Output {
    stdout: String,
    stderr: String,
}

/// Runs `order-cancel <args>` to completion within `limit` (killed and failed otherwise);
/// fails unless it exits 0.
fn run(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(order_cancel_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning order-cancel");
    let mut child = Killed(child);
    // Drained on threads: a full pipe must not stall the child.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.0.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.0.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("waiting for order-cancel") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "order-cancel {args:?} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        status.success(),
        "order-cancel {args:?}: {status}\nstdout:\n{}\nstderr:\n{}",
        output.stdout,
        output.stderr
    );
    output
}

#[test]
fn unpaid_orders_are_cancelled_after_the_delay_and_paid_ones_never() {
    // Proves the example's flow: with a 2 s delay topic, exactly the unpaid half of 20 orders
    // reaches the cancel worker, each once and no earlier than 2 s after it was placed.
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let limit = Duration::from_secs(60);

    let setup = run(&["setup", "--bootstrap", &b, "--delay", "2s"], limit);
    assert!(
        setup
            .stdout
            .contains("orders.cancel-requests -> orders.cancel after 2000 ms"),
        "setup:\n{}",
        setup.stdout
    );
    // Idempotent: a second run finds both topics.
    let again = run(&["setup", "--bootstrap", &b, "--delay", "2s"], limit);
    assert!(
        again
            .stdout
            .contains("orders.cancel-requests already exists"),
        "second setup:\n{}",
        again.stdout
    );

    let placing = Instant::now();
    let place = run(
        &[
            "place",
            "--bootstrap",
            &b,
            "--orders",
            "20",
            "--pay-ratio",
            "0.5",
        ],
        limit,
    );
    let lines: Vec<&str> = place.stdout.lines().collect();
    let placed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("placed "))
        .collect();
    let paid: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("paid "))
        .collect();
    assert_eq!(placed.len(), 20, "place:\n{}", place.stdout);
    assert_eq!(paid.len(), 10, "place:\n{}", place.stdout);
    let unpaid: BTreeSet<&str> = placed
        .iter()
        .copied()
        .filter(|o| !paid.contains(o))
        .collect();
    assert_eq!(unpaid.len(), 10);

    let started = Instant::now();
    let worker = run(
        &[
            "cancel-worker",
            "--bootstrap",
            &b,
            "--max",
            "1000",
            "--idle-ms",
            "4000",
        ],
        limit,
    );
    let ran = started.elapsed();
    let mut cancelled = Vec::new();
    for line in worker.stdout.lines() {
        // cancelling order-3 (placed at <epoch ms>, unpaid for <ms> ms)
        let rest = line
            .strip_prefix("cancelling ")
            .unwrap_or_else(|| panic!("unexpected worker line {line:?}"));
        let (order, rest) = rest.split_once(" (placed at ").expect(line);
        let waited: i64 = rest
            .split_once(", unpaid for ")
            .and_then(|(_, w)| w.strip_suffix(" ms)"))
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no wait time in {line:?}"));
        // Due 2 s after the broker appended it; the producer's timestamp is a little earlier.
        assert!(
            waited >= 1_950,
            "{order} reached the worker {waited} ms after it was placed (delay 2 s)"
        );
        cancelled.push(order.to_string());
    }
    let distinct: BTreeSet<&str> = cancelled.iter().map(String::as_str).collect();
    assert_eq!(
        distinct.len(),
        cancelled.len(),
        "duplicates:\n{}",
        worker.stdout
    );
    assert_eq!(
        distinct, unpaid,
        "worker:\n{}\nstderr:\n{}",
        worker.stdout, worker.stderr
    );
    // Records were still pending when the worker started (none is due before 2 s after
    // `place` began): it had to wait for the broker to deliver them.
    let head_start = started.duration_since(placing);
    assert!(
        head_start < Duration::from_secs(2),
        "the worker started {head_start:?} after placing began, when orders may already be due"
    );
    // The last order is due 2 s after placing began, and the worker then idles 4 s: it can
    // finish no earlier than 6 s after placing began (ran alone is >= 4 s by construction).
    assert!(
        head_start + ran >= Duration::from_millis(5_900),
        "worker finished {:?} after placing began",
        head_start + ran
    );
    assert!(
        worker.stderr.contains("cancelled 10 orders"),
        "{}",
        worker.stderr
    );

    // The group committed its offsets: a restarted worker has nothing left to cancel.
    let restarted = run(
        &["cancel-worker", "--bootstrap", &b, "--idle-ms", "2000"],
        limit,
    );
    assert_eq!(restarted.stdout, "", "restarted worker");
}
