//! End to end: kube-apiserver + kube-controller-manager (StatefulSet and garbage-collector
//! controllers) + the operator + a test kubelet running each broker Pod as a local
//! `kairos serve` from the operator's ConfigMap and start.sh. The KafkaCluster becomes Ready when
//! its three brokers are, lists them in its status, and a KafkaTopic with three replicas serves an
//! acks=all producer and a consumer. A config change rolls the brokers one at a time, the active
//! controller last, while an acks=all producer keeps writing without a single failed record.
//! The operator runs with the Helm chart's ServiceAccount, on an API server that authorizes
//! with RBAC: all of this works with the chart's least-privilege ClusterRole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;
use rdkafka::producer::FutureRecord;

use kairos_tests::cluster::{acks_all_producer, consume_all, produce_acked};
use kairos_tests::k8s::{ready, KubeApiServer, Kubelet, Operator};
use kairos_tests::kafka_call;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn operator_run_brokers_become_ready_and_serve_a_declared_topic() {
    let mut api = KubeApiServer::start();
    api.start_controller_manager("statefulset,garbagecollector");
    api.install_crds();
    let kubelet = Kubelet::start(&api, "orders", 3);
    // The operator runs with the chart's ServiceAccount and RBAC only.
    let (_op, sa) = Operator::start_for_kubelet(&api, &kubelet, "orders");
    // ... and that is all it has: what the chart does not grant is refused.
    let can_i = |verb: &str, what: &str| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&sa)
            .args(["auth", "can-i", verb, what])
            .output()
            .expect("kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can_i("delete", "pods"), "yes");
    assert_eq!(can_i("patch", "statefulsets.apps"), "yes");
    assert_eq!(can_i("delete", "statefulsets.apps"), "no");
    assert_eq!(can_i("list", "secrets"), "no");

    api.apply(
        "apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: orders}\nspec: {replicas: 3}\n",
    );
    let kc = api.wait_for("the cluster Ready", WAIT, |api| {
        api.get_json(&["kafkacluster", "orders"]).filter(ready)
    });
    assert_eq!(kc["status"]["readyReplicas"], 3);
    // The brokers as the cluster's metadata lists them (advertised on loopback by the kubelet).
    let brokers = api.wait_for("three registered brokers in the status", WAIT, |api| {
        let kc = api.get_json(&["kafkacluster", "orders"])?;
        let b = kc["status"]["brokers"].as_array()?.clone();
        (b.len() == 3).then_some(b)
    });
    let ids: Vec<i64> = brokers.iter().filter_map(|b| b["id"].as_i64()).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert!(brokers[0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));

    api.apply(
        "apiVersion: kairos.dev/v1alpha1\nkind: KafkaTopic\nmetadata: {name: payments}\nspec: {clusterRef: orders, partitions: 3, replicas: 3}\n",
    );
    api.wait_for("the topic Ready", WAIT, |api| {
        api.get_json(&["kafkatopic", "payments"]).filter(ready)
    });
    let acked = produce_acked(&kubelet.bootstrap(), "payments", 3, "p", 30);
    let read = consume_all(&kubelet.bootstrap(), "payments", 3, acked.len());
    assert_eq!(read, acked);

    // A DelayQueue with two replicas of three partitions on three brokers: no broker hosts every
    // partition, and the pending count (each partition asked of its leader) covers all of them.
    api.apply(
        "apiVersion: kairos.dev/v1alpha1\nkind: DelayQueue\nmetadata: {name: reminders}\nspec: {clusterRef: orders, delay: 30m, targetTopic: reminders.due, partitions: 3, replicas: 2}\n",
    );
    api.wait_for("the delay queue Ready", WAIT, |api| {
        api.get_json(&["delayqueue", "reminders"]).filter(ready)
    });
    let md = kafka_call(
        kubelet.kafka_addr(0),
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .expect("metadata");
    let mut leaders: Vec<i32> = md
        .topics
        .iter()
        .filter(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == "reminders.delay")
        })
        .flat_map(|t| t.partitions.iter().map(|p| p.leader_id.0))
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    assert!(
        leaders.len() > 1,
        "reminders.delay on one broker only: {leaders:?}"
    );
    let scheduled = produce_acked(&kubelet.bootstrap(), "reminders.delay", 3, "r", 6);
    assert_eq!(scheduled.len(), 6);
    api.wait_for("six pending reminders in the status", WAIT, |api| {
        let dq = api.get_json(&["delayqueue", "reminders"])?;
        (dq["status"]["pending"] == 6).then_some(())
    });
    // Its topics (two replicas, min.insync.replicas 2) would hold the rolling restart below:
    // restarting any of their brokers takes a partition under min.insync.replicas.
    api.kubectl_ok(&["delete", "delayqueue", "reminders", "--timeout=60s"]);

    // A config change (the pod template's config hash) rolls the brokers one at a time.
    let controller = kafka_call(
        kubelet.kafka_addr(0),
        12,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )
    .expect("metadata")
    .controller_id
    .0;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (bootstrap, stop) = (kubelet.bootstrap(), stop.clone());
        std::thread::spawn(move || keep_producing(&bootstrap, &stop))
    };
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"config":{"log.retention.hours":"100"}}}"#,
    );
    api.wait_for("a rolling restart in the status", WAIT, |api| {
        let kc = api.get_json(&["kafkacluster", "orders"])?;
        kc["status"]["restart"].is_object().then_some(())
    });
    api.wait_for(
        "the rolling restart done and the cluster Ready",
        Duration::from_secs(120),
        |api| {
            let kc = api.get_json(&["kafkacluster", "orders"])?;
            (ready(&kc) && kc["status"]["restart"].is_null()).then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = writer.join().expect("producer thread");
    assert!(
        failures.is_empty(),
        "failed records during the restart: {failures:?}"
    );
    assert!(!acked.is_empty());

    // Every pod was restarted once, the active controller last.
    let restarts: Vec<String> = api
        .events("RestartingPod")
        .iter()
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    assert!(
        restarts[2].contains(&format!("orders-broker-{controller} ")),
        "controller {controller} not last: {restarts:?}"
    );
    // Every record acknowledged before or during the restart is there.
    let after = consume_all(
        &kubelet.bootstrap(),
        "payments",
        3,
        acked.len() + read.len(),
    );
    let payloads: std::collections::BTreeSet<&String> = after.values().collect();
    let lost: Vec<&String> = acked
        .iter()
        .chain(read.values())
        .filter(|p| !payloads.contains(p))
        .collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
}

/// Produces acks=all, idempotent records to `payments` until `stop`; (acknowledged payloads,
/// failures).
fn keep_producing(bootstrap: &str, stop: &AtomicBool) -> (Vec<String>, Vec<String>) {
    let (producer, rt) = acks_all_producer(bootstrap);
    let mut failures = Vec::new();
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("r{i}");
        i += 1;
        match rt.block_on(producer.send(
            FutureRecord::<(), _>::to("payments").payload(&payload),
            Duration::from_secs(60),
        )) {
            Ok(_) => acked.push(payload),
            Err((e, _)) => failures.push(format!("{payload}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (acked, failures)
}
