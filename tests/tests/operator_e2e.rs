//! End to end: kube-apiserver + kube-controller-manager (StatefulSet and garbage-collector
//! controllers) + the operator + a test kubelet running each broker Pod as a local
//! `kairos serve` from the operator's ConfigMap and start.sh. The KafkaCluster becomes Ready when
//! its three brokers are, lists them in its status, and a KafkaTopic with three replicas serves an
//! acks=all producer and a consumer.

use std::time::Duration;

use kairos_tests::cluster::{consume_all, produce_acked};
use kairos_tests::k8s::{KubeApiServer, Kubelet, Operator};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn ready(obj: &Value) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
        && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

#[test]
fn operator_run_brokers_become_ready_and_serve_a_declared_topic() {
    let mut api = KubeApiServer::start();
    api.start_controller_manager("statefulset,garbagecollector");
    api.install_crds();
    let kubelet = Kubelet::start(&api, "orders", 3);
    let mut flags = kubelet.resolve_args("orders");
    flags.push("--resync-seconds=1".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _op = Operator::start(&api, "a", &flags);

    let out = api.kubectl_stdin(
        &["apply", "--validate=false", "-f", "-"],
        Some(
            "apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: orders}\nspec: {replicas: 3}\n",
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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

    let out = api.kubectl_stdin(
        &["apply", "--validate=false", "-f", "-"],
        Some(
            "apiVersion: kairos.dev/v1alpha1\nkind: KafkaTopic\nmetadata: {name: payments}\nspec: {clusterRef: orders, partitions: 3, replicas: 3}\n",
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    api.wait_for("the topic Ready", WAIT, |api| {
        api.get_json(&["kafkatopic", "payments"]).filter(ready)
    });
    let acked = produce_acked(&kubelet.bootstrap(), "payments", 3, "p", 30);
    let read = consume_all(&kubelet.bootstrap(), "payments", 3, acked.len());
    assert_eq!(read, acked);
}
