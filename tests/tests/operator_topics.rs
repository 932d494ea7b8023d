//! KafkaTopic against a live broker: the operator (out of cluster, `--resolve` mapping the
//! cluster's bootstrap Service name to a real `kairos serve` process) creates the topic, grows it,
//! sets its configs, reverts changes made with the `kairos` CLI (librdkafka) behind its back and
//! reports them, refuses a shrink or a rename with a Stalled condition, and deletes or keeps the
//! topic on deletion as `deletionPolicy` says. A KafkaTopic for a missing cluster stalls. A
//! DelayQueue becomes its four topics with their `kairos.*` configs and counts what is pending.

use std::process::Command;
use std::time::Duration;

use kairos_tests::k8s::{condition, KubeApiServer, Operator};
use kairos_tests::{kairos_bin, Broker};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `kairos topic ARGS` against the broker (librdkafka, not the operator's client).
fn kairos_topic(b: &Broker, args: &[&str]) -> (bool, String) {
    let out = Command::new(kairos_bin())
        .arg("topic")
        .args(args)
        .args(["--bootstrap-server", &b.bootstrap()])
        .output()
        .expect("running kairos");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// (partition count, configs line) from `kairos topic describe`, None when the topic is absent.
fn describe(b: &Broker, topic: &str) -> Option<(usize, String)> {
    let (ok, out) = kairos_topic(b, &["describe", topic]);
    if !ok {
        assert!(out.contains("does not exist"), "{out}");
        return None;
    }
    let count = out
        .split("PartitionCount:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let configs = out
        .lines()
        .find_map(|l| l.strip_prefix("Configs:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    Some((count, configs))
}

fn setup() -> (KubeApiServer, Broker, Operator) {
    let api = KubeApiServer::start();
    api.install_crds();
    let broker = Broker::start(&[]);
    let op = Operator::start(
        &api,
        "a",
        &[
            &format!(
                "--resolve=orders-bootstrap.default.svc:9092={}",
                broker.bootstrap()
            ),
            // The queue's pending counts come from each partition leader's pod (node id 1).
            &format!(
                "--resolve=orders-broker-1.orders-brokers.default.svc:9095={}",
                broker.admin_addr()
            ),
            "--resync-seconds=1",
        ],
    );
    api.apply("apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: orders}\nspec: {replicas: 1}\n",
    );
    (api, broker, op)
}

const TOPIC: &str = r#"
apiVersion: kairos.dev/v1alpha1
kind: KafkaTopic
metadata: {name: payments}
spec:
  clusterRef: orders
  partitions: 3
  config: {retention.ms: "86400000", cleanup.policy: delete}
"#;

#[test]
fn a_topic_is_created_grown_configured_and_kept_as_declared() {
    let (api, broker, _op) = setup();
    api.apply(TOPIC);
    let kt = api.wait_condition(&["kafkatopic", "payments"], "Ready", "Ready");
    let (count, configs) = describe(&broker, "payments").expect("topic created");
    assert_eq!(count, 3);
    assert!(configs.contains("retention.ms=86400000"), "{configs}");
    assert_eq!(kt["status"]["topicName"], "payments");
    assert_eq!(kt["status"]["partitions"], 3);
    assert_eq!(kt["status"]["config"]["retention.ms"], "86400000");
    let finalizers = kt["metadata"]["finalizers"].to_string();
    assert!(finalizers.contains("kairos.dev/topic"), "{finalizers}");

    // Grow and reconfigure through the spec.
    api.apply(
        &TOPIC
            .replace("partitions: 3", "partitions: 5")
            .replace("cleanup.policy: delete", "max.message.bytes: \"2097152\""),
    );
    let kt = api.wait_condition(&["kafkatopic", "payments"], "Ready", "Ready");
    let (count, configs) = describe(&broker, "payments").expect("topic");
    assert_eq!(count, 5);
    assert!(configs.contains("max.message.bytes=2097152"), "{configs}");
    assert!(
        !configs.contains("cleanup.policy"),
        "removed from the spec: {configs}"
    );
    assert_eq!(
        kt["status"]["drift"],
        Value::Null,
        "a spec change is not drift"
    );

    // Changed behind the operator's back: reported in status and an event, then reverted.
    let (ok, out) = kairos_topic(&broker, &["alter", "payments", "-c", "retention.ms=1000"]);
    assert!(ok, "{out}");
    let kt = api.wait_for("the drift reported", WAIT, |api| {
        let kt = api.get_json(&["kafkatopic", "payments"])?;
        kt["status"]["drift"].as_array().filter(|d| !d.is_empty())?;
        Some(kt)
    });
    let drift = kt["status"]["drift"].to_string();
    assert!(
        drift.contains(r#"config retention.ms was \"1000\", set to \"86400000\""#),
        "{drift}"
    );
    let (_, configs) = describe(&broker, "payments").expect("topic");
    assert!(
        configs.contains("retention.ms=86400000"),
        "reverted: {configs}"
    );
    let events = api.kubectl_ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=payments",
    ]);
    assert!(events.contains("DriftReverted"), "{events}");

    // Shrinking and renaming are refused (the CRD's CEL rules, dropped by this v1.20 server).
    api.apply(&TOPIC.replace("partitions: 3", "partitions: 2"));
    let kt = api.wait_condition(
        &["kafkatopic", "payments"],
        "Stalled",
        "PartitionsDecreased",
    );
    let (_, _, message) = condition(&kt, "Stalled").expect("Stalled");
    assert!(
        message.contains("set partitions to at least 5"),
        "{message}"
    );
    assert_eq!(describe(&broker, "payments").expect("topic").0, 5);
    api.apply(&TOPIC.replace("partitions: 3", "partitions: 5\n  topicName: refunds"));
    let kt = api.wait_condition(&["kafkatopic", "payments"], "Stalled", "TopicNameImmutable");
    let (_, _, message) = condition(&kt, "Stalled").expect("Stalled");
    assert!(
        message.contains("set topicName back to \"payments\""),
        "{message}"
    );
    assert!(
        describe(&broker, "refunds").is_none(),
        "no topic made by a rename"
    );

    // deletionPolicy Delete: the topic goes with the resource.
    api.kubectl_ok(&["delete", "kafkatopic", "payments", "--timeout=30s"]);
    assert!(describe(&broker, "payments").is_none(), "topic deleted");
}

#[test]
fn retain_keeps_the_topic_and_a_missing_cluster_stalls() {
    let (api, broker, _op) = setup();
    api.apply(&TOPIC.replace("partitions: 3", "partitions: 1\n  deletionPolicy: Retain"));
    api.wait_condition(&["kafkatopic", "payments"], "Ready", "Ready");
    api.kubectl_ok(&["delete", "kafkatopic", "payments", "--timeout=30s"]);
    assert_eq!(describe(&broker, "payments").expect("kept").0, 1);

    api.apply(
        &TOPIC
            .replace("metadata: {name: payments}", "metadata: {name: lost}")
            .replace("clusterRef: orders", "clusterRef: nosuch"),
    );
    let kt = api.wait_condition(&["kafkatopic", "lost"], "Stalled", "ClusterNotFound");
    let (_, _, message) = condition(&kt, "Stalled").expect("Stalled");
    assert!(
        message.contains("KafkaCluster \"nosuch\" does not exist"),
        "{message}"
    );

    // A config the broker refuses: Stalled with the broker's own words.
    api.apply(
        &TOPIC
            .replace("metadata: {name: payments}", "metadata: {name: bad}")
            .replace("cleanup.policy: delete", "no.such.config: \"1\""),
    );
    let kt = api.wait_condition(&["kafkatopic", "bad"], "Stalled", "RefusedByCluster");
    let (_, _, message) = condition(&kt, "Stalled").expect("Stalled");
    assert!(message.contains("no.such.config"), "{message}");
    assert!(describe(&broker, "bad").is_none());

    // Deleting a KafkaTopic whose cluster is gone releases the finalizer.
    api.kubectl_ok(&["delete", "kafkatopic", "lost", "--timeout=30s"]);
}

const QUEUE: &str = r#"
apiVersion: kairos.dev/v1alpha1
kind: DelayQueue
metadata: {name: order-cancel}
spec:
  clusterRef: orders
  delay: 30m
  targetTopic: orders.cancel
  partitions: 2
  retry: {backoff: ["10s", "1m", "10m"], maxAttempts: 5}
"#;

#[test]
fn a_delay_queue_becomes_its_topics_and_reports_pending_records() {
    let (api, broker, _op) = setup();
    api.apply(QUEUE);
    let dq = api.wait_condition(&["delayqueue", "order-cancel"], "Ready", "Ready");
    assert_eq!(dq["status"]["delayTopic"], "order-cancel.delay");
    assert_eq!(dq["status"]["retryTopic"], "orders.cancel.retry");
    assert_eq!(dq["status"]["deadLetterTopic"], "orders.cancel.dlq");
    assert_eq!(dq["status"]["pending"], 0);
    let (count, configs) = describe(&broker, "order-cancel.delay").expect("delay topic");
    assert_eq!(count, 2);
    assert!(configs.contains("kairos.delay.ms=1800000"), "{configs}");
    assert!(
        configs.contains("kairos.delay.target=orders.cancel"),
        "{configs}"
    );
    let (_, configs) = describe(&broker, "orders.cancel.retry").expect("retry topic");
    assert!(
        configs.contains("kairos.retry.backoff.ms=10000,60000,600000"),
        "{configs}"
    );
    assert!(
        configs.contains("kairos.dlq.topic=orders.cancel.dlq"),
        "{configs}"
    );
    assert_eq!(describe(&broker, "orders.cancel").expect("target").0, 2);
    assert!(describe(&broker, "orders.cancel.dlq").is_some());

    // A record produced to the delay topic is pending for 30 minutes; the status counts it.
    let mut produce = Command::new(kairos_bin())
        .args(["produce", "order-cancel.delay", "--key-separator", ":"])
        .args(["--bootstrap-server", &broker.bootstrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kairos produce");
    {
        use std::io::Write;
        let mut stdin = produce.stdin.take().expect("stdin");
        stdin.write_all(b"order-1:cancel\n").expect("write");
    }
    assert!(produce.wait().expect("produce exit").success());
    api.wait_for("one pending record in the status", WAIT, |api| {
        let dq = api.get_json(&["delayqueue", "order-cancel"])?;
        (dq["status"]["pending"] == 1).then_some(())
    });

    // A duration the operator cannot read stalls and changes nothing.
    api.apply(&QUEUE.replace("delay: 30m", "delay: soon"));
    let dq = api.wait_condition(&["delayqueue", "order-cancel"], "Stalled", "InvalidSpec");
    let (_, _, message) = condition(&dq, "Stalled").expect("Stalled");
    assert!(
        message.starts_with("spec.delay: \"soon\" is not a duration"),
        "{message}"
    );
    let (_, configs) = describe(&broker, "order-cancel.delay").expect("delay topic");
    assert!(
        configs.contains("kairos.delay.ms=1800000"),
        "unchanged: {configs}"
    );

    // deletionPolicy Delete (the default): the topics go with the resource.
    api.kubectl_ok(&["delete", "delayqueue", "order-cancel", "--timeout=30s"]);
    for t in [
        "order-cancel.delay",
        "orders.cancel",
        "orders.cancel.retry",
        "orders.cancel.dlq",
    ] {
        assert!(describe(&broker, t).is_none(), "{t} deleted");
    }
}
