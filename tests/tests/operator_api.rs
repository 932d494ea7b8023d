//! The operator's resources on a real kube-apiserver (v1.20.2 built from Debian's source): the
//! generated CRDs install and reach Established, every YAML in `examples/` applies, the schema
//! fills defaults and refuses what its OpenAPI bounds forbid.

use kairos_tests::k8s::{workspace_root, KubeApiServer};

#[test]
fn crds_install_and_every_example_applies() {
    let api = KubeApiServer::start();
    api.install_crds();
    let names = api.kubectl_ok(&["get", "crd", "-o", "name"]);
    for crd in [
        "kafkaclusters.kairos.dev",
        "kafkatopics.kairos.dev",
        "delayqueues.kairos.dev",
    ] {
        assert!(names.contains(crd), "{crd} missing from:\n{names}");
    }

    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for f in &files {
        api.kubectl_ok(&["apply", "--validate=false", "-f", &f.to_string_lossy()]);
    }
    // Every example is there (an apply that fails fails the test above).
    assert!(files.len() >= 4, "examples: {files:?}");

    // Read back: the server kept the spec and filled the schema's defaults.
    let kc = api
        .get_json(&["kafkacluster", "kairos"])
        .expect("KafkaCluster");
    assert_eq!(kc["spec"]["replicas"], 3);
    assert_eq!(kc["spec"]["storage"]["size"], "20Gi");
    assert_eq!(
        kc["spec"]["listeners"]["kafka"], 9092,
        "default port filled"
    );
    let dq = api
        .get_json(&["delayqueue", "order-cancel"])
        .expect("DelayQueue");
    assert_eq!(dq["spec"]["delay"], "30m");
    assert_eq!(dq["spec"]["retry"]["maxAttempts"], 5);

    // OpenAPI bounds hold on any server; each refusal names the field.
    for (doc, field) in [
        (
            r#"{"apiVersion":"kairos.dev/v1alpha1","kind":"KafkaCluster","metadata":{"name":"bad"},"spec":{"replicas":0}}"#,
            "spec.replicas",
        ),
        (
            r#"{"apiVersion":"kairos.dev/v1alpha1","kind":"KafkaCluster","metadata":{"name":"bad"},"spec":{"replicas":1,"storage":{"type":"nfs"}}}"#,
            "spec.storage.type",
        ),
        (
            r#"{"apiVersion":"kairos.dev/v1alpha1","kind":"DelayQueue","metadata":{"name":"bad"},"spec":{"clusterRef":"kairos","delay":"1m","targetTopic":"t","partitions":0}}"#,
            "spec.partitions",
        ),
        (
            r#"{"apiVersion":"kairos.dev/v1alpha1","kind":"KafkaTopic","metadata":{"name":"bad"},"spec":{"partitions":1}}"#,
            "spec.clusterRef",
        ),
    ] {
        let out = api.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(doc));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {doc}");
        assert!(
            err.contains(field),
            "refusal of {doc} does not name {field}: {err}"
        );
    }
}
