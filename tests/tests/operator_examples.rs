//! The walkthrough of examples/README.md, step by step, on real parts: kube-apiserver +
//! kube-controller-manager (StatefulSet and garbage-collector controllers), the operator with the
//! Helm chart's ServiceAccount and RBAC, the test kubelet running each broker Pod as a local
//! `kairos serve` (with the container's environment, the Redis URL from the Secret included),
//! and a real `redis-server` with a password. The files in `examples/` are applied as they are;
//! only the Redis Secret's host is changed, as the README says to edit it. Then the README's
//! `kairos` CLI lines run against the brokers, and the clean-up section.
//!
//! Not covered here: `helm install` itself (the chart's Deployment needs an image; the chart's
//! RBAC is what the operator runs with) and the Grafana step (no Grafana here; the dashboards are
//! checked by the chart and metrics tests).

use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;

use kairos_tests::k8s::{ready, workspace_root, KubeApiServer, Kubelet, Operator};
use kairos_tests::{http_get, kafka_call, run_kairos, sample, Redis};

const WAIT: Duration = Duration::from_secs(60);

fn example(file: &str) -> String {
    std::fs::read_to_string(workspace_root().join("examples").join(file))
        .unwrap_or_else(|e| panic!("examples/{file}: {e}"))
}

/// Runs `kairos -b <bootstrap> args...` with `stdin`; returns stdout, failing the test unless it
/// exits 0 within a minute.
fn kairos(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let mut all = vec!["-b", bootstrap];
    all.extend_from_slice(args);
    run_kairos(&all, stdin, Duration::from_secs(60))
        .ok(&format!("kairos {args:?}"))
        .stdout
}

fn topics(kubelet: &Kubelet) -> Vec<String> {
    let md = kafka_call(
        kubelet.kafka_addr(0),
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .expect("metadata");
    md.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

#[test]
fn the_examples_walkthrough_runs_end_to_end() {
    // Redis with the password of examples/redis-secret.yaml.
    let redis = Redis::start();
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(["CONFIG", "SET", "requirepass", "change-me"])
        .output()
        .expect("redis-cli");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let mut api = KubeApiServer::start();
    api.start_controller_manager("statefulset,garbagecollector");
    // 1. The operator: the chart's CRDs, RBAC and ServiceAccount.
    api.install_crds();
    let kubelet = Kubelet::start(&api, "kairos", 3);
    // The operator runs with the chart's ServiceAccount and RBAC only.
    let (_op, _) = Operator::start_for_kubelet(&api, &kubelet, "kairos");

    // 2. A cluster: the Redis Secret (host edited), then cluster.yaml as it is.
    let secret = example("redis-secret.yaml");
    let edited = secret.replace(
        "redis.default.svc:6379",
        &format!("127.0.0.1:{}", redis.port),
    );
    assert_ne!(edited, secret, "the Secret's URL host moved");
    api.apply(&edited);
    api.apply(&example("cluster.yaml"));
    let kc = api.wait_for("the cluster Ready", WAIT, |api| {
        api.get_json(&["kafkacluster", "kairos"]).filter(ready)
    });
    assert_eq!(kc["status"]["readyReplicas"], 3);
    assert_eq!(
        kc["status"]["bootstrapServers"],
        "kairos-bootstrap.default.svc:9092"
    );
    for name in ["kairos-config", "kairos-brokers", "kairos-bootstrap"] {
        let kind = if name == "kairos-config" {
            "configmap"
        } else {
            "service"
        };
        assert!(api.get_json(&[kind, name]).is_some(), "{kind} {name}");
    }
    let sts = api
        .get_json(&["statefulset", "kairos-broker"])
        .expect("sts");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    // Every broker reached Redis with the Secret's URL and password.
    for (i, ports) in kubelet.ports.iter().enumerate() {
        api.wait_for(&format!("broker {i} connected to Redis"), WAIT, |_| {
            let (_, scrape) = http_get(&format!("http://127.0.0.1:{}/metrics", ports.metrics));
            (sample(&scrape, "kairos_redis_up") == Some(1.0)).then_some(())
        });
    }

    // 3. Topics and the delay queue.
    api.apply(&example("topic.yaml"));
    api.apply(&example("delayqueue-order-cancel.yaml"));
    api.wait_for("topic orders Ready", WAIT, |api| {
        api.get_json(&["kafkatopic", "orders"]).filter(ready)
    });
    let dq = api.wait_for("delay queue order-cancel Ready", WAIT, |api| {
        api.get_json(&["delayqueue", "order-cancel"]).filter(ready)
    });
    let status = &dq["status"];
    assert_eq!(status["delayTopic"], "order-cancel.delay");
    assert_eq!(status["targetTopic"], "orders.cancel");
    assert_eq!(status["retryTopic"], "orders.cancel.retry");
    assert_eq!(status["deadLetterTopic"], "orders.cancel.dlq");
    let listed = topics(&kubelet);
    for t in [
        "orders",
        "order-cancel.delay",
        "orders.cancel",
        "orders.cancel.retry",
        "orders.cancel.dlq",
    ] {
        assert!(listed.iter().any(|l| l == t), "{t} not in {listed:?}");
    }

    // 4. Produce and consume: the README's CLI lines. In a pod the admin API's default address
    // is the bootstrap Service's port 9095, which reaches any broker; here that is broker 1
    // (which leads one of the delay topic's three partitions and forwards for the others).
    let b = kubelet.bootstrap();
    let admin = format!("--admin-server=127.0.0.1:{}", kubelet.ports[1].admin);
    let md = kafka_call(
        kubelet.kafka_addr(1),
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .expect("metadata");
    // The delay topic's partition leaders, by partition.
    let leaders: std::collections::BTreeMap<i32, i32> = md
        .topics
        .iter()
        .filter(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == "order-cancel.delay")
        })
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
        })
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(
        leaders.values().any(|l| *l != 1),
        "broker 1 leads every delay partition: {leaders:?}"
    );
    kairos(
        &b,
        &["produce", "orders", "--key-separator", ":"],
        "o-1:created\no-2:created\n",
    );
    let consumed = kairos(
        &b,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--print-key",
            "--max-messages",
            "2",
        ],
        "",
    );
    for key in ["o-1", "o-2"] {
        assert!(
            consumed
                .lines()
                .any(|l| l.contains(key) && l.contains("created")),
            "{key}: {consumed}"
        );
    }
    kairos(
        &b,
        &[
            "delay",
            "send",
            "order-cancel.delay",
            "cancel o-3 if unpaid",
            "--key",
            "o-3",
            "--delay",
            "30m",
            &admin,
        ],
        "",
    );
    let pending = kairos(&b, &["delay", "ls", "order-cancel.delay", &admin], "");
    assert!(pending.contains("o-3"), "{pending}");
    api.wait_for("the delay queue counting one pending", WAIT, |api| {
        let dq = api.get_json(&["delayqueue", "order-cancel"])?;
        (dq["status"]["pending"] == 1).then_some(())
    });
    kairos(
        &b,
        &[
            "delay",
            "cancel",
            "order-cancel.delay",
            "--key",
            "o-3",
            &admin,
        ],
        "",
    );
    let pending = kairos(&b, &["delay", "ls", "order-cancel.delay", &admin], "");
    assert!(!pending.contains("o-3"), "{pending}");
    // A cancel by record, asked of the leader of the record's partition, which does not lead
    // every partition of the topic.
    kairos(
        &b,
        &[
            "delay",
            "send",
            "order-cancel.delay",
            "cancel o-4 if unpaid",
            "--key",
            "o-4",
            "--delay",
            "30m",
            &admin,
        ],
        "",
    );
    let listed = kairos(
        &b,
        &["delay", "ls", "order-cancel.delay", "--key", "o-4", &admin],
        "",
    );
    let (partition, offset) = listed
        .lines()
        .find(|l| l.contains("o-4"))
        .and_then(|l| {
            let mut fields = l.split_whitespace();
            Some((
                fields.next()?.parse::<i32>().ok()?,
                fields.next()?.to_string(),
            ))
        })
        .unwrap_or_else(|| panic!("o-4 not listed: {listed}"));
    let leader = leaders[&partition];
    assert!(
        leaders.values().any(|l| *l != leader),
        "broker {leader} leads every partition: {leaders:?}"
    );
    let at_leader = format!(
        "--admin-server=127.0.0.1:{}",
        kubelet.ports[leader as usize].admin
    );
    let cancelled = kairos(
        &b,
        &[
            "delay",
            "cancel",
            "order-cancel.delay",
            "--partition",
            &partition.to_string(),
            "--offset",
            &offset,
            &at_leader,
        ],
        "",
    );
    assert!(cancelled.contains("cancelled 1"), "{cancelled}");
    api.wait_for("the delay queue counting none pending", WAIT, |api| {
        let dq = api.get_json(&["delayqueue", "order-cancel"])?;
        (dq["status"]["pending"] == 0).then_some(())
    });
    let group = kairos(&b, &["group", "describe", "billing"], "");
    assert!(group.contains("STATE Empty"), "{group}");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("orders") && l.trim_end().ends_with(" 0")),
        "no lag-0 line for orders: {group}"
    );

    // Clean up: the topics stay (deletionPolicy Retain), the cluster's objects go with it.
    let dir = workspace_root().join("examples");
    let file = |f: &str| dir.join(f).to_string_lossy().to_string();
    api.kubectl_ok(&[
        "delete",
        "-f",
        &file("delayqueue-order-cancel.yaml"),
        "-f",
        &file("topic.yaml"),
    ]);
    api.wait_for("the topic and queue resources gone", WAIT, |api| {
        (api.get_json(&["kafkatopic", "orders"]).is_none()
            && api.get_json(&["delayqueue", "order-cancel"]).is_none())
        .then_some(())
    });
    let listed = topics(&kubelet);
    for t in ["orders", "order-cancel.delay", "orders.cancel.dlq"] {
        assert!(listed.iter().any(|l| l == t), "{t} deleted: {listed:?}");
    }
    api.kubectl_ok(&["delete", "-f", &file("cluster.yaml")]);
    api.wait_for("the StatefulSet gone with the cluster", WAIT, |api| {
        api.get_json(&["statefulset", "kairos-broker"])
            .is_none()
            .then_some(())
    });
}
