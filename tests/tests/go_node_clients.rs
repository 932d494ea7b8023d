//! franz-go (Go, with kadm) and kafkajs (Node) against a real `kairos serve`: each suite
//! (tests/go, tests/node) runs as its users would run it, with the broker's address in
//! KAIROS_BOOTSTRAP. scripts/test.sh installs the Node packages (`npm ci`); Go fetches its
//! modules from the module proxy into its own cache.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use kairos_tests::Broker;

fn suite_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Runs `program args` in `dir` with KAIROS_BOOTSTRAP set; fails with its output if it fails.
fn run_suite(b: &Broker, dir: &str, program: &str, args: &[&str]) {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(suite_dir(dir))
        .env("KAIROS_BOOTSTRAP", b.bootstrap())
        .output()
        .unwrap_or_else(|e| panic!("running {program} in tests/{dir}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "tests/{dir} failed ({}) after {:?}:\n{text}\nbroker log:\n{}",
        out.status,
        started.elapsed(),
        b.log()
    );
    eprintln!("tests/{dir} passed in {:?}", started.elapsed());
}

#[test]
fn franz_go_produces_consumes_in_groups_and_administers() {
    // Proves franz-go's kgo (every codec, idempotent acks=all, a two-member group, committed
    // offsets) and kadm (topics, configs, partitions, offsets, records, groups) work unchanged.
    let b = Broker::start(&[]);
    run_suite(&b, "go", "go", &["test", "-count=1", "./..."]);
}

#[test]
fn kafkajs_produces_consumes_in_groups_and_administers() {
    // Proves kafkajs (admin, idempotent and gzip producers, a two-member consumer group with
    // committed offsets) works unchanged.
    let b = Broker::start(&[]);
    run_suite(&b, "node", "node", &["--test"]);
}
