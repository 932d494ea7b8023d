//! End to end, as operator_e2e (kube-apiserver + kube-controller-manager + the operator with the
//! chart's RBAC + the test kubelet running each broker Pod as a local `kairos serve`):
//! - rack awareness: each broker's `broker.rack` is its node's zone label, which the operator
//!   copies into the pod's annotation and the broker reads through the downward-API file;
//! - a live broker config (`leader.replication.throttled.rate`) in `spec.config` reaches the
//!   running brokers through IncrementalAlterConfigs, and no pod restarts;
//! - scale-up with `rebalance: OnScaleUp`: a fourth broker joins, the operator reassigns
//!   existing partitions until every broker holds as many replicas, and no acknowledged record
//!   is lost; the new broker also takes replicas of a new topic;
//! - scale-down: a topic whose replication factor needs four brokers stalls it with a reason
//!   and the StatefulSet keeps its size; once that topic is gone, the partitions on broker 3 are
//!   reassigned to the others first, then the StatefulSet shrinks, and every acknowledged record
//!   is still there.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{DescribeConfigsRequest, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use kairos_tests::cluster::{consume_all, produce_acked};
use kairos_tests::k8s::{condition, ready, KubeApiServer, Kubelet, Operator};
use kairos_tests::kafka_call;

const WAIT: Duration = Duration::from_secs(60);
const THROTTLE: &str = "leader.replication.throttled.rate";

fn metadata(kubelet: &Kubelet, pod: usize) -> Option<MetadataResponse> {
    kafka_call(
        kubelet.kafka_addr(pod),
        12,
        &MetadataRequest::default().with_topics(None),
    )
}

/// Brokers holding a replica of `topic`'s partitions, by partition.
fn replicas(md: &MetadataResponse, topic: &str) -> BTreeMap<i32, Vec<i32>> {
    md.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.replica_nodes.iter().map(|b| b.0).collect(),
            )
        })
        .collect()
}

/// The throttle as broker `pod` describes it: (value, config source).
fn throttle(kubelet: &Kubelet, pod: usize) -> Option<(String, i8)> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(pod.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str(THROTTLE)]))]);
    let res = kafka_call(kubelet.kafka_addr(pod), 4, &req)?;
    let c = res.results.first()?.configs.first()?;
    Some((c.value.as_ref()?.to_string(), c.config_source))
}

fn pod_uids(api: &KubeApiServer) -> BTreeMap<String, String> {
    let pods = api
        .get_json(&["pods", "-l", "app.kubernetes.io/instance=orders"])
        .expect("pods");
    pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The notes of the Events with `reason`.
fn events(api: &KubeApiServer, reason: &str) -> Vec<String> {
    api.events(reason)
        .iter()
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn operator_applies_live_config_and_scales_brokers_up_and_down() {
    let mut api = KubeApiServer::start();
    api.start_controller_manager("statefulset,garbagecollector");
    api.install_crds();
    // Three nodes in three zones; pod i runs on node i % 3.
    for (node, zone) in [
        ("node-0", "zone-a"),
        ("node-1", "zone-b"),
        ("node-2", "zone-c"),
    ] {
        api.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{topology.kubernetes.io/zone: {zone}}}}}\n"
        ));
    }
    let kubelet = Kubelet::start_on_nodes(&api, "orders", 4, &["node-0", "node-1", "node-2"]);
    // The operator runs with the chart's ServiceAccount and RBAC only.
    let (_op, _) = Operator::start_for_kubelet(&api, &kubelet, "orders");

    api.apply(
        "apiVersion: kairos.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: orders}\nspec: {replicas: 3, rack: {topologyKey: topology.kubernetes.io/zone}}\n",
    );
    api.wait_for("the cluster Ready", WAIT, |api| {
        api.get_json(&["kafkacluster", "orders"]).filter(ready)
    });
    // Each broker's rack is its node's zone, as the cluster's metadata reports it.
    let racks = api.wait_for("the brokers' racks in the status", WAIT, |api| {
        let kc = api.get_json(&["kafkacluster", "orders"])?;
        let racks: Vec<(i64, String)> = kc["status"]["brokers"]
            .as_array()?
            .iter()
            .filter_map(|b| Some((b["id"].as_i64()?, b["rack"].as_str()?.to_string())))
            .collect();
        (racks.len() == 3).then_some(racks)
    });
    assert_eq!(
        racks,
        [
            (0, "zone-a".to_string()),
            (1, "zone-b".to_string()),
            (2, "zone-c".to_string())
        ]
    );
    let hash = |api: &KubeApiServer| {
        api.get_json(&["statefulset", "orders-broker"])
            .expect("sts")["spec"]["template"]["metadata"]["annotations"]
            ["kairos.dev/template-hash"]
            .clone()
    };
    let (uids, template) = (pod_uids(&api), hash(&api));
    assert_eq!(uids.len(), 3);

    // Live config: the cluster-wide default on every broker, no restart.
    api.merge_patch(
        &["kafkacluster", "orders"],
        &format!(r#"{{"spec":{{"config":{{"{THROTTLE}":"10485760"}}}}}}"#),
    );
    let kc = api.wait_for("the live config in the status", WAIT, |api| {
        let kc = api.get_json(&["kafkacluster", "orders"])?;
        (ready(&kc) && kc["status"]["liveConfig"][THROTTLE] == "10485760").then_some(kc)
    });
    assert!(kc["status"]["restart"].is_null());
    for pod in 0..3 {
        // Source 3: DYNAMIC_DEFAULT_BROKER_CONFIG, the cluster-wide default.
        assert_eq!(
            throttle(&kubelet, pod),
            Some(("10485760".to_string(), 3)),
            "broker {pod}"
        );
    }
    assert_eq!(
        hash(&api),
        template,
        "a live config changed the pod template"
    );
    assert_eq!(pod_uids(&api), uids, "a live config restarted pods");
    assert_eq!(events(&api, "LiveConfigApplied").len(), 1);
    // Taken out of the spec, it is taken off the brokers.
    api.merge_patch(&["kafkacluster", "orders"], r#"{"spec":{"config":null}}"#);
    api.wait_for("the live config removed", WAIT, |_| {
        throttle(&kubelet, 1).filter(|(_, source)| *source != 3)
    });
    assert_eq!(
        pod_uids(&api),
        uids,
        "removing a live config restarted pods"
    );

    // A topic on the three brokers: 6 partitions x 2 replicas, 4 replicas per broker.
    api.apply("apiVersion: kairos.dev/v1alpha1\nkind: KafkaTopic\nmetadata: {name: early}\nspec: {clusterRef: orders, partitions: 6, replicas: 2}\n");
    api.wait_for("early Ready", WAIT, |api| {
        api.get_json(&["kafkatopic", "early"]).filter(ready)
    });
    let early = produce_acked(&kubelet.bootstrap(), "early", 6, "e", 60);

    // Scale-up with a rebalance: broker 3 joins and takes its share of early's replicas.
    api.merge_patch(
        &["kafkacluster", "orders"],
        r#"{"spec":{"replicas":4,"rebalance":"OnScaleUp"}}"#,
    );
    let kc = api.wait_for(
        "four brokers registered, rebalanced and Ready",
        WAIT,
        |api| {
            let kc = api.get_json(&["kafkacluster", "orders"])?;
            (ready(&kc)
                && kc["status"]["readyReplicas"] == 4
                && kc["status"]["brokers"].as_array()?.len() == 4)
                .then_some(kc)
        },
    );
    assert!(kc["status"]["rebalance"].is_null(), "{}", kc["status"]);
    let rebalancing = events(&api, "Rebalancing");
    assert!(
        rebalancing.iter().any(|e| e
            .contains("to spread replicas over brokers 0, 1, 2, 3 after scaling up from 3 to 4")),
        "{rebalancing:?}"
    );
    assert_eq!(events(&api, "Rebalanced").len(), 1);
    let spread = api.wait_for(
        "early's replicas spread on broker 0's metadata",
        WAIT,
        |_| {
            let early = replicas(&metadata(&kubelet, 0)?, "early");
            let mut per_broker = BTreeMap::<i32, usize>::new();
            for b in early.values().flatten() {
                *per_broker.entry(*b).or_default() += 1;
            }
            (per_broker.values().all(|n| *n == 3) && per_broker.len() == 4).then_some(per_broker)
        },
    );
    assert_eq!(spread.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    // (early's records are read at the end, after the scale-down moved them again: reading
    // now would create __consumer_offsets, whose partitions the scale-down would move too.)
    for (name, partitions, rf) in [("spread", 4, 2), ("wide", 1, 4)] {
        api.apply(&format!(
            "apiVersion: kairos.dev/v1alpha1\nkind: KafkaTopic\nmetadata: {{name: {name}}}\nspec: {{clusterRef: orders, partitions: {partitions}, replicas: {rf}}}\n"
        ));
        api.wait_for("the topic Ready", WAIT, |api| {
            api.get_json(&["kafkatopic", name]).filter(ready)
        });
    }
    let md = metadata(&kubelet, 0).expect("metadata");
    let before = replicas(&md, "spread");
    assert!(
        before.values().any(|r| r.contains(&3)),
        "the new broker holds no replica of spread: {before:?}"
    );
    let acked = produce_acked(&kubelet.bootstrap(), "spread", 4, "s", 40);

    // Scale-down blocked: `wide` needs four brokers; nothing is removed.
    api.merge_patch(&["kafkacluster", "orders"], r#"{"spec":{"replicas":3}}"#);
    let kc = api.wait_condition(&["kafkacluster", "orders"], "Stalled", "ScaleDownBlocked");
    let (_, _, message) = condition(&kc, "Stalled").expect("Stalled");
    assert!(
        message.contains("partition wide-0 has 4 replicas but only 3 broker(s) would remain"),
        "{message}"
    );
    let sts = api
        .get_json(&["statefulset", "orders-broker"])
        .expect("sts");
    assert_eq!(sts["spec"]["replicas"], 4);
    assert_eq!(kc["status"]["scaleDown"]["from"], 4);
    assert_eq!(kc["status"]["scaleDown"]["to"], 3);
    assert_eq!(kc["status"]["scaleDown"]["brokers"], serde_json::json!([3]));

    // Once `wide` is gone, partitions move off broker 3 first, then the StatefulSet shrinks.
    api.kubectl_ok(&["delete", "kafkatopic", "wide"]);
    api.wait_for(
        "the cluster scaled down to three and Ready",
        Duration::from_secs(120),
        |api| {
            let kc = api.get_json(&["kafkacluster", "orders"])?;
            let sts = api.get_json(&["statefulset", "orders-broker"])?;
            (ready(&kc)
                && kc["status"]["scaleDown"].is_null()
                && kc["status"]["readyReplicas"] == 3
                && sts["spec"]["replicas"] == 3)
                .then_some(())
        },
    );
    let moved = events(&api, "ReassigningPartitions");
    assert!(
        moved
            .iter()
            .any(|e| e.contains("off broker(s) 3 before scaling down from 4 to 3")),
        "{moved:?}"
    );
    api.wait_for("pod orders-broker-3 gone", WAIT, |api| {
        (!pod_uids(api).contains_key("orders-broker-3")).then_some(())
    });
    let md = metadata(&kubelet, 0).expect("metadata");
    for t in &md.topics {
        for p in &t.partitions {
            assert!(
                !p.replica_nodes.iter().any(|b| b.0 == 3),
                "{:?}-{} still on broker 3",
                t.name,
                p.partition_index
            );
        }
    }
    let after = replicas(&md, "spread");
    assert_eq!(after.len(), 4);
    assert!(after.values().all(|r| r.len() == 2), "{after:?}");
    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2]);
    let read = consume_all(&kubelet.bootstrap(), "spread", 4, acked.len());
    assert_eq!(read, acked);
    let read = consume_all(&kubelet.bootstrap(), "early", 6, early.len());
    assert_eq!(read, early);
}
