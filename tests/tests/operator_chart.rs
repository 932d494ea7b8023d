//! The Helm chart `charts/kairos-operator`, rendered as `helm template` would (Go text/template
//! and Sprig: tests/helm/render.go, since no helm binary can be installed here) with the default
//! values and with a non-default values file, and applied to a real kube-apiserver with
//! server-side dry-run: every object validates against the server's schemas.

use kairos_tests::k8s::{render_chart, workspace_root, KubeApiServer};

fn dry_run(api: &KubeApiServer, manifests: &str) -> String {
    let out = api.kubectl_stdin(
        &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
        Some(manifests),
    );
    assert!(
        out.status.success(),
        "server-side dry-run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_chart_renders_and_applies_with_default_and_custom_values() {
    // The chart's CRDs are the generated ones.
    for f in ["kafkaclusters.yaml", "kafkatopics.yaml", "delayqueues.yaml"] {
        let root = workspace_root();
        let generated = std::fs::read_to_string(root.join("crds").join(f)).expect("crds/");
        let charted = std::fs::read_to_string(root.join("charts/kairos-operator/crds").join(f))
            .unwrap_or_default();
        assert!(
            generated == charted,
            "charts/kairos-operator/crds/{f} is stale: run `cargo run -p kairos-operator -- crdgen charts/kairos-operator/crds`"
        );
    }

    let api = KubeApiServer::start();
    api.install_crds();

    let default = render_chart(&["--include-crds"]);
    let applied = dry_run(&api, &default);
    for object in [
        "deployment.apps/kairos-operator",
        "serviceaccount/kairos-operator",
        "clusterrole.rbac.authorization.k8s.io/kairos-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/kairos-operator",
        "role.rbac.authorization.k8s.io/kairos-operator-leader",
        "service/kairos-operator-metrics",
        "configmap/kairos-operator-dashboards",
        "customresourcedefinition.apiextensions.k8s.io/delayqueues.kairos.dev",
    ] {
        assert!(applied.contains(object), "{object} not in:\n{applied}");
    }
    assert!(default.contains("- --resync-seconds=60"));
    assert!(
        !default.contains("--namespace="),
        "all namespaces by default"
    );
    assert!(!default.contains("kind: ServiceMonitor"));
    assert!(default.contains("grafana_dashboard: \"1\""));
    assert!(default.contains("\"title\": \"Kairos / Cluster overview\""));

    // Non-default values: watched namespaces, two replicas, an image tag, a ServiceMonitor (its
    // CRD installed first), no dashboards, a release in another namespace.
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
image: {tag: "9.9.9"}
replicaCount: 2
watchNamespaces: [shop, billing]
logLevel: "info,kairos_operator=debug"
metrics:
  serviceMonitor: {enabled: true, labels: {release: prom}}
dashboards: {enabled: false}
nodeSelector: {kubernetes.io/os: linux}
"#,
    )
    .expect("values file");
    api.kubectl_ok(&["create", "namespace", "kairos-system"]);
    api.install_service_monitor_crd();
    let custom = render_chart(&[
        "-f",
        &values.to_string_lossy(),
        "--namespace",
        "kairos-system",
        "--name",
        "ops",
    ]);
    let applied = dry_run(&api, &custom);
    assert!(
        applied.contains("servicemonitor.monitoring.coreos.com/ops-kairos-operator"),
        "{applied}"
    );
    assert!(custom.contains("replicas: 2"));
    assert!(custom.contains("image: \"ghcr.io/kairos-dev/kairos-operator:9.9.9\""));
    assert!(custom.contains("- --namespace=shop,billing"));
    assert!(custom.contains("value: \"info,kairos_operator=debug\""));
    assert!(custom.contains("release: prom"));
    assert!(custom.contains("namespace: kairos-system"));
    assert!(custom.contains("kubernetes.io/os: linux"));
    assert!(!custom.contains("grafana_dashboard"), "dashboards disabled");
}
