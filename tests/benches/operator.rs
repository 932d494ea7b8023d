//! The operator's performance goals, measured against a real kube-apiserver (release builds):
//! - how long after a KafkaCluster is created, and after its spec changes, the operator has
//!   applied every owned object (goal: ≤ 1 s);
//! - the operator's resident memory while it manages 100 KafkaTopics on a live broker (goal:
//!   ≤ 30 MB).
//!
//! Latency is measured from just before `kubectl apply`/`patch` starts to the operator's log line
//! for its last write, so it includes kubectl's own start-up and request (an upper bound).
//! Run: `cargo bench -p kairos-tests --bench operator`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kairos_tests::k8s::{self, KubeApiServer, Operator};
use kairos_tests::Broker;

/// Seconds since midnight UTC of a tracing timestamp like `2026-11-21T16:29:18.926462Z`.
fn log_seconds(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn now_seconds() -> f64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    t % 86_400.0
}

/// Waits for the `n`-th log line containing `needle`; its time (seconds since midnight).
fn wait_line(op: &Operator, needle: &str, n: usize) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = op.log_text();
        if let Some(line) = log.lines().filter(|l| l.contains(needle)).nth(n - 1) {
            return log_seconds(line).expect("log timestamp");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} #{n} in the log"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    let mut api = KubeApiServer::start();
    api.start_controller_manager("garbagecollector");
    api.install_crds();
    let broker = Broker::start(&[]);
    let op = Operator::start(
        &api,
        "bench",
        &[&format!(
            "--resolve=orders-bootstrap.default.svc:9092={}",
            broker.bootstrap()
        )],
    );

    // 1. A new cluster: all five owned objects applied (the PodDisruptionBudget is the last).
    let mut create = Vec::new();
    for i in 0..10 {
        let t0 = now_seconds();
        api.apply(&format!("apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {{name: c{i}}}\nspec: {{replicas: 3}}\n"),
        );
        let t1 = wait_line(&op, &format!("created PodDisruptionBudget c{i}-broker"), 1);
        create.push((t1 - t0) * 1000.0);
    }
    kairos_tests::print_summary("KafkaCluster created -> all owned objects applied", create);

    // 2. A spec change: the ConfigMap and then the StatefulSet (new config hash) applied.
    let mut change = Vec::new();
    for i in 1..=10 {
        let t0 = now_seconds();
        api.merge_patch(
            &["kafkacluster", "c0"],
            &format!(r#"{{"spec":{{"config":{{"log.retention.hours":"{i}"}}}}}}"#),
        );
        let t1 = wait_line(&op, "updated StatefulSet c0-broker", i);
        change.push((t1 - t0) * 1000.0);
    }
    kairos_tests::print_summary(
        "KafkaCluster spec changed -> ConfigMap and StatefulSet applied",
        change,
    );

    // 3. Memory with 100 topics on a live broker.
    api.apply("apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: orders}\nspec: {replicas: 1}\n",
    );
    let topics: String = (0..100)
        .map(|i| {
            format!("---\napiVersion: kairos.dev/v1alpha1\nkind: KafkaTopic\nmetadata: {{name: t{i}}}\nspec: {{clusterRef: orders, partitions: 3, config: {{retention.ms: \"3600000\"}}}}\n")
        })
        .collect();
    let t0 = std::time::Instant::now();
    api.apply(&topics);
    api.wait_for("100 topics Ready", Duration::from_secs(120), |api| {
        let list = api.get_json(&["kafkatopics"])?;
        let ready = list["items"]
            .as_array()?
            .iter()
            .filter(|t| k8s::ready(t))
            .count();
        (ready == 100).then_some(())
    });
    println!(
        "100 KafkaTopics applied -> all Ready: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let rss = op.sample("process_resident_memory_bytes") / 1_048_576.0;
    println!("operator resident memory with 11 clusters and 100 topics: {rss:.1} MB");
}
