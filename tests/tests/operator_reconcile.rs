//! The operator against a real kube-apiserver (v1.20.2) with kube-controller-manager's garbage
//! collector: a KafkaCluster becomes its ConfigMap, Services, StatefulSet and
//! PodDisruptionBudget with a truthful status; changes made by others are reverted; a restart of
//! the operator writes nothing; invalid specs stall with a reason and touch nothing; deleting the
//! cluster deletes what it owns; two operator replicas elect one leader.

use std::time::{Duration, Instant};

use kairos_tests::k8s::{condition, KubeApiServer, Operator};

const WAIT: Duration = Duration::from_secs(30);

const CLUSTER: &str = r#"
apiVersion: kairos.dev/v1alpha1
kind: KafkaCluster
metadata:
  name: orders
spec:
  replicas: 3
  storage: {type: persistent, size: 20Gi}
  config: {num.partitions: "6"}
"#;

fn api_with_crds() -> KubeApiServer {
    let mut api = KubeApiServer::start();
    api.start_controller_manager("garbagecollector");
    api.install_crds();
    // Before the operator starts: it looks the ServiceMonitor CRD up once.
    api.install_service_monitor_crd();
    api
}

/// Waits until the cluster's condition `type_` is True with `reason`; returns its message.
fn wait_condition(api: &KubeApiServer, name: &str, type_: &str, reason: &str) -> String {
    let kc = api.wait_condition(&["kafkacluster", name], type_, reason);
    condition(&kc, type_).map(|c| c.2).unwrap_or_default()
}

const OWNED: [(&str, &str); 6] = [
    ("configmap", "orders-config"),
    ("service", "orders-brokers"),
    ("service", "orders-bootstrap"),
    ("statefulset", "orders-broker"),
    ("poddisruptionbudget.v1beta1.policy", "orders-broker"),
    ("servicemonitor", "orders-broker"),
];

/// resourceVersion of every owned object and of the cluster.
fn versions(api: &KubeApiServer) -> Vec<String> {
    OWNED
        .iter()
        .chain([("kafkacluster", "orders")].iter())
        .map(|(kind, name)| {
            let obj = api
                .get_json(&[kind, name])
                .unwrap_or_else(|| panic!("{kind} {name} missing"));
            obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn a_cluster_becomes_its_owned_objects_with_status_and_a_restart_writes_nothing() {
    let api = api_with_crds();
    let op = Operator::start(&api, "a", &[]);
    let applied = Instant::now();
    api.apply(CLUSTER);

    // Every owned object exists, owned by the cluster (PDB as policy/v1beta1 on this v1.20).
    let uid = api.get_json(&["kafkacluster", "orders"]).expect("cluster")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    for (kind, name) in OWNED {
        let obj = api.wait_for(&format!("{kind} {name}"), WAIT, |api| {
            api.get_json(&[kind, name])
        });
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], uid.as_str(), "{kind} {name} owner");
        assert_eq!(owner["controller"], true);
    }
    println!(
        "all owned objects present {:?} after the apply",
        applied.elapsed()
    );
    let sts = api
        .get_json(&["statefulset", "orders-broker"])
        .expect("sts");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    // The brokers' ServiceMonitor scrapes the headless Service's metrics port.
    let sm = api
        .get_json(&["servicemonitor", "orders-broker"])
        .expect("servicemonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "orders"
    );
    let cm = api.get_json(&["configmap", "orders-config"]).expect("cm");
    let props = cm["data"]["server.properties"].as_str().expect("props");
    assert!(props.contains("num.partitions=6\n"), "{props}");
    assert!(props.contains("orders-broker-2.orders-brokers.default.svc:9093"));

    // Status: no kubelet here, so no broker is ready and the cluster says so.
    let message = wait_condition(&api, "orders", "Reconciling", "BrokersStarting");
    assert_eq!(message, "0 of 3 brokers ready");
    let kc = api.get_json(&["kafkacluster", "orders"]).expect("cluster");
    assert_eq!(
        kc["status"]["bootstrapServers"],
        "orders-bootstrap.default.svc:9092"
    );
    assert_eq!(kc["status"]["voters"], serde_json::json!([0, 1, 2]));
    assert_eq!(
        kc["status"]["observedGeneration"],
        kc["metadata"]["generation"]
    );
    assert_eq!(
        condition(&kc, "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    let events = api.kubectl_ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=orders",
    ]);
    assert!(events.contains("Applied"), "{events}");

    // Each object was written once: later reconciles (triggered by the objects' own watch
    // events) found them as wanted.
    for kind in [
        "ConfigMap",
        "StatefulSet",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        let series = format!(r#"kairos_operator_writes_total{{kind="{kind}"}}"#);
        assert_eq!(op.sample(&series), 1.0, "{series}");
    }
    assert_eq!(
        op.sample(r#"kairos_operator_writes_total{kind="Service"}"#),
        2.0
    );

    // A change made by someone else is reverted.
    api.kubectl_ok(&["scale", "statefulset", "orders-broker", "--replicas=1"]);
    api.wait_for("the StatefulSet back at 3 replicas", WAIT, |api| {
        let sts = api.get_json(&["statefulset", "orders-broker"])?;
        (sts["spec"]["replicas"] == 3).then_some(())
    });

    // A restarted operator finds everything as it should be and writes nothing.
    let before = versions(&api);
    let status = op.stop();
    assert!(status.success(), "operator exit: {status:?}");
    let op = Operator::start(&api, "a", &[]);
    api.wait_for("a reconcile by the restarted operator", WAIT, |_| {
        (op.sample(r#"kairos_operator_reconcile_total{kind="KafkaCluster",result="ok"}"#) >= 1.0)
            .then_some(())
    });
    let metrics = op.metrics();
    assert!(
        !metrics.contains("kairos_operator_writes_total{"),
        "the restarted operator wrote:\n{metrics}"
    );
    assert_eq!(versions(&api), before, "resourceVersions changed");

    // A spec change reaches the ConfigMap and the pod template (its config hash).
    let hash = |api: &KubeApiServer| {
        api.get_json(&["statefulset", "orders-broker"])
            .expect("sts")["spec"]["template"]["metadata"]["annotations"]["kairos.dev/config-hash"]
            .clone()
    };
    let old_hash = hash(&api);
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"config":{"log.retention.hours":"1"}}}"#,
    );
    api.wait_for("the new config in the ConfigMap", WAIT, |api| {
        let cm = api.get_json(&["configmap", "orders-config"])?;
        let props = cm["data"]["server.properties"].as_str()?.to_string();
        props.contains("log.retention.hours=1\n").then_some(())
    });
    api.wait_for("a new config hash on the pod template", WAIT, |api| {
        (hash(api) != old_hash).then_some(())
    });

    // Deleting the cluster deletes what it owns (garbage collector, through owner references).
    api.kubectl_ok(&["delete", "kafkacluster", "orders"]);
    for (kind, name) in OWNED {
        api.wait_for(&format!("{kind} {name} deleted"), WAIT, |api| {
            api.get_json(&[kind, name]).is_none().then_some(())
        });
    }
}

#[test]
fn invalid_specs_stall_with_what_to_fix_and_touch_nothing() {
    let api = api_with_crds();
    let _op = Operator::start(&api, "a", &[]);
    api.apply(CLUSTER);
    wait_condition(&api, "orders", "Reconciling", "BrokersStarting");
    let before = versions(&api);

    // A key the operator owns (the server's schema cannot know this one).
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"config":{"node.id":"7"}}}"#,
    );
    let message = wait_condition(&api, "orders", "Stalled", "InvalidSpec");
    assert_eq!(
        message,
        "spec.config: node.id is set by the operator; remove it"
    );
    let after = versions(&api);
    assert_eq!(
        after[..OWNED.len()],
        before[..OWNED.len()],
        "owned objects changed"
    );
    let events = api.kubectl_ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=orders",
    ]);
    assert!(events.contains("InvalidSpec"), "{events}");
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"config":{"node.id":null}}}"#,
    );
    wait_condition(&api, "orders", "Reconciling", "BrokersStarting");

    // Fewer brokers than the Raft voters it was created with.
    api.merge_patch(&["kafkacluster", "orders"], r#"{"spec":{"replicas":2}}"#);
    let message = wait_condition(&api, "orders", "Stalled", "BelowQuorum");
    assert!(message.contains("at least 3"), "{message}");
    let sts = api
        .get_json(&["statefulset", "orders-broker"])
        .expect("sts");
    assert_eq!(sts["spec"]["replicas"], 3, "nothing removed");
    api.merge_patch(&["kafkacluster", "orders"], r#"{"spec":{"replicas":3}}"#);
    wait_condition(&api, "orders", "Reconciling", "BrokersStarting");

    // A Redis Secret that does not exist: stalled until it appears.
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"redis":{"secretName":"orders-redis"}}}"#,
    );
    let message = wait_condition(&api, "orders", "Stalled", "RedisSecretMissing");
    assert!(
        message.contains("Secret default/orders-redis does not exist"),
        "{message}"
    );
    api.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "orders-redis",
        "--from-literal=url=redis://redis:6379/0",
    ]);
    wait_condition(&api, "orders", "Reconciling", "BrokersStarting");
    let sts = api
        .get_json(&["statefulset", "orders-broker"])
        .expect("sts");
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "orders-redis");
}

#[test]
fn two_replicas_elect_one_leader_and_the_standby_takes_over() {
    let api = api_with_crds();
    let a = Operator::start(&api, "a", &["--lease-duration=2"]);
    let b = Operator::start(&api, "b", &["--lease-duration=2"]);
    let leader = r#"kairos_operator_leader"#;
    let (first, standby) = api.wait_for("one leader", WAIT, |_| {
        match (a.sample(leader), b.sample(leader)) {
            (1.0, 0.0) => Some(("a", "b")),
            (0.0, 1.0) => Some(("b", "a")),
            _ => None,
        }
    });
    let lease = api.get_json(&["lease", "kairos-operator"]).expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], first);
    let (leading, waiting) = if first == "a" { (a, b) } else { (b, a) };

    // The leader dies without releasing the Lease; the standby takes it when it expires.
    leading.kill();
    let killed = Instant::now();
    api.wait_for("the standby leading", WAIT, |_| {
        (waiting.sample(leader) == 1.0).then_some(())
    });
    println!(
        "standby {standby} took over {:?} after the kill",
        killed.elapsed()
    );
    api.apply(CLUSTER);
    api.wait_for("the new leader reconciling", WAIT, |api| {
        api.get_json(&["statefulset", "orders-broker"])
    });
}

#[test]
fn a_service_monitor_follows_the_prometheus_operator_crd_and_spec_metrics() {
    // The Prometheus Operator is installed after the operator started, and the operator runs
    // with the chart's RBAC only (watching that CRD, deleting ServiceMonitors).
    let api = KubeApiServer::start();
    api.install_crds();
    let (op, _) = Operator::start_with_chart_rbac(&api, &[]);
    api.apply(
        "apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: orders}\nspec: {replicas: 1}\n",
    );
    api.wait_for("the StatefulSet", WAIT, |api| {
        api.get_json(&["statefulset", "orders-broker"])
    });
    assert_eq!(
        op.sample(r#"kairos_operator_writes_total{kind="ServiceMonitor"}"#),
        0.0
    );

    api.install_service_monitor_crd();
    let sm = api.wait_for("the ServiceMonitor after the CRD appeared", WAIT, |api| {
        api.get_json(&["servicemonitor", "orders-broker"])
    });
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");

    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"metrics":{"enabled":false}}}"#,
    );
    api.wait_for("the ServiceMonitor deleted", WAIT, |api| {
        api.get_json(&["servicemonitor", "orders-broker"])
            .is_none()
            .then_some(())
    });
    let deleted = api.events("Deleted");
    assert!(
        deleted.iter().any(|e| e["note"]
            .as_str()
            .is_some_and(|n| n.contains("ServiceMonitor orders-broker"))),
        "{deleted:?}"
    );

    // One of that name that the cluster does not own is left alone.
    api.apply(
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: orders-broker}\nspec: {endpoints: [{port: web}]}\n",
    );
    let reconciles = |op: &Operator| {
        op.sample(r#"kairos_operator_reconcile_total{kind="KafkaCluster",result="ok"}"#)
    };
    let before = reconciles(&op);
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"metadata":{"annotations":{"touched":"1"}}}"#,
    );
    api.wait_for("a reconcile after the annotation", WAIT, |_| {
        (reconciles(&op) > before).then_some(())
    });
    let mine = api
        .get_json(&["servicemonitor", "orders-broker"])
        .expect("a ServiceMonitor the cluster does not own was deleted");
    assert_eq!(mine["spec"]["endpoints"][0]["port"], "web");
    api.kubectl_ok(&["delete", "servicemonitor", "orders-broker"]);

    // Turned back on, it comes back.
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"metrics":{"enabled":true}}}"#,
    );
    let sm = api.wait_for("the ServiceMonitor back", WAIT, |api| {
        api.get_json(&["servicemonitor", "orders-broker"])
    });
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
}
