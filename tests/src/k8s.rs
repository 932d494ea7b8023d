//! A real kube-apiserver (v1.20.2, built from Debian's source by `tests/k8s/build.sh`) with its
//! etcd, on free loopback ports, stopped by PID on drop. See `../shared/k8s-apiserver.md`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub struct KubeApiServer {
    dir: tempfile::TempDir,
    pids: Vec<i32>,
    /// Processes started here (kube-controller-manager), killed and reaped on drop.
    children: Vec<Child>,
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver and waits until the API answers. The binaries come from
    /// `KAIROS_K8S_BIN` (scripts/test.sh sets it) or from running `tests/k8s/build.sh`.
    pub fn start() -> KubeApiServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = workspace_root().join("tests/k8s/start-apiserver.sh");
        let mut cmd = Command::new(&script);
        cmd.arg(dir.path());
        if let Some(bin) = std::env::var_os("KAIROS_K8S_BIN") {
            cmd.arg(bin);
        }
        let status = cmd
            .stdin(Stdio::null())
            .status()
            .expect("running tests/k8s/start-apiserver.sh");
        let pids = ["etcd.pid", "apiserver.pid"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(dir.path().join(f)).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let server = KubeApiServer {
            dir,
            pids,
            children: Vec::new(),
        };
        assert!(status.success(), "the API server did not start");
        server
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `input` on its standard input.
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        if let Some(text) = input {
            stdin
                .write_all(text.as_bytes())
                .expect("writing to kubectl");
        }
        drop(stdin);
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The events.k8s.io Events with `reason`, oldest first by `eventTime`.
    pub fn events(&self, reason: &str) -> Vec<serde_json::Value> {
        let all = self.get_json(&["events.v1.events.k8s.io"]).expect("events");
        let mut events: Vec<serde_json::Value> = all["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["reason"] == reason)
            .cloned()
            .collect();
        events.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
        events
    }

    /// The Prometheus Operator's ServiceMonitor CRD (schema-less: only its presence matters to
    /// the chart and the operator).
    pub fn install_service_monitor_crd(&self) {
        self.apply(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#,
        );
        self.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/servicemonitors.monitoring.coreos.com",
        ]);
    }

    /// Creates the chart's ServiceAccount and RBAC objects (rendered with the default values into
    /// release namespace `ns`) and returns a kubeconfig that authenticates as that ServiceAccount
    /// with a token from the TokenRequest API (`kubectl create token`). The API server authorizes
    /// with RBAC, so whatever runs with this kubeconfig has exactly the chart's permissions.
    pub fn chart_service_account(&self, ns: &str) -> PathBuf {
        self.kubectl_ok(&["create", "namespace", ns]);
        let manifests = render_chart(&["--namespace", ns]);
        let rbac: Vec<&str> = manifests
            .split("\n---")
            .filter(|doc| {
                doc.lines().any(|l| {
                    [
                        "kind: ServiceAccount",
                        "kind: ClusterRole",
                        "kind: ClusterRoleBinding",
                        "kind: Role",
                        "kind: RoleBinding",
                    ]
                    .contains(&l.trim_end())
                })
            })
            .collect();
        assert_eq!(rbac.len(), 5, "the chart's RBAC objects:\n{manifests}");
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(&rbac.join("\n---\n")));
        assert!(
            out.status.success(),
            "applying the chart's RBAC: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = self.kubectl_ok(&["-n", ns, "create", "token", "kairos-operator"]);
        let admin = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        let cluster: String = admin
            .lines()
            .take_while(|l| !l.starts_with("users:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = format!(
            "{cluster}users:\n- name: operator\n  user:\n    token: {}\ncontexts:\n- name: operator\n  context: {{cluster: test, user: operator, namespace: default}}\ncurrent-context: operator\n",
            token.trim()
        );
        let path = self.dir.path().join(format!("operator-{ns}.kubeconfig"));
        std::fs::write(&path, config).expect("writing the operator's kubeconfig");
        path
    }

    /// Starts kube-controller-manager with only `controllers` (e.g. `garbagecollector`, which
    /// deletes objects whose owner is gone); stopped with the API server.
    pub fn start_controller_manager(&mut self, controllers: &str) {
        let bin = built("KAIROS_K8S_BIN", "tests/k8s/build.sh");
        let log = std::fs::File::create(self.dir.path().join("controller-manager.log"))
            .expect("controller-manager log");
        let child = Command::new(bin.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", self.kubeconfig().display()))
            .arg(format!("--controllers={controllers}"))
            .args(["--leader-elect=false", "--port=0", "--secure-port=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting kube-controller-manager");
        self.children.push(child);
    }

    /// `kubectl get ARGS -o json`, parsed; None when the object does not exist.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("NotFound"), "kubectl {}: {err}", all.join(" "));
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("kubectl JSON"))
    }

    /// `kubectl apply` of `yaml` (client-side validation off: kubectl does not know the CRDs'
    /// CEL rules), which must succeed.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl patch WHAT --type=merge -p PATCH`, which must succeed.
    pub fn merge_patch(&self, what: &[&str], patch: &str) {
        let mut args = vec!["patch"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--type=merge", "-p", patch]);
        self.kubectl_ok(&args);
    }

    /// Waits (30 s at most) until `what`'s condition `type_` is True with `reason`, computed for
    /// its current generation; returns the object.
    pub fn wait_condition(&self, what: &[&str], type_: &str, reason: &str) -> serde_json::Value {
        self.wait_for(
            &format!("{what:?}: {type_}={reason}"),
            Duration::from_secs(30),
            |api| {
                let obj = api.get_json(what)?;
                holds(&obj, type_, reason).then_some(obj)
            },
        )
    }

    /// Waits (polling the API server every 100 ms) until `probe` returns Some, at most `limit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut(&KubeApiServer) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Applies the CRDs in `crds/` and waits until they are Established. (kubectl 1.20 does not
    /// know `x-kubernetes-validations`: client-side validation is off, the server drops them.)
    pub fn install_crds(&self) {
        let crds = workspace_root().join("crds");
        let crds = crds.to_string_lossy();
        self.kubectl_ok(&["apply", "--validate=false", "-f", &crds]);
        self.kubectl_ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "-f",
            &crds,
        ]);
    }
}

/// Whether `obj`'s condition `type_` is True with `reason`, computed for its current generation.
pub fn holds(obj: &serde_json::Value, type_: &str, reason: &str) -> bool {
    condition(obj, type_).is_some_and(|(s, r, _)| s == "True" && r == reason)
        && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

/// Whether the operator's resource `obj` is Ready for its current generation.
pub fn ready(obj: &serde_json::Value) -> bool {
    holds(obj, "Ready", "Ready")
}

/// (status, reason, message) of condition `type_` in an object's status.
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// Path of the `kairos-operator` binary: `KAIROS_OPERATOR_BIN`, else next to `KAIROS_BIN`, else
/// built with cargo.
pub fn operator_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KAIROS_OPERATOR_BIN") {
        return PathBuf::from(bin);
    }
    let kairos = crate::kairos_bin();
    let bin = kairos.with_file_name("kairos-operator");
    if std::env::var_os("KAIROS_BIN").is_none() || !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "kairos-operator"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for kairos-operator");
        assert!(status.success(), "cargo build of kairos-operator failed");
    }
    assert!(bin.exists(), "{} not found", bin.display());
    bin
}

/// A `kairos-operator run` process against a [`KubeApiServer`], out of cluster, with its
/// metrics on a free port; SIGKILLed on drop.
pub struct Operator {
    child: Child,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator as the API server's admin, with leader election on a Lease in
    /// `default` (`extra` adds flags).
    pub fn start(api: &KubeApiServer, name: &str, extra: &[&str]) -> Operator {
        Operator::start_as(api, &api.kubeconfig(), "default", name, extra)
    }

    /// The operator as the Helm chart installs it: with the chart's ServiceAccount and RBAC only
    /// (release namespace `kairos-system`, where its Lease is too) and `extra` flags. Also
    /// returns that ServiceAccount's kubeconfig.
    pub fn start_with_chart_rbac(api: &KubeApiServer, extra: &[&str]) -> (Operator, PathBuf) {
        let sa = api.chart_service_account("kairos-system");
        let op = Operator::start_as(api, &sa, "kairos-system", "a", extra);
        (op, sa)
    }

    /// As [`Operator::start_with_chart_rbac`], for cluster `name` whose pods `kubelet` plays:
    /// its `--resolve` flags, and topics re-checked every second.
    pub fn start_for_kubelet(
        api: &KubeApiServer,
        kubelet: &Kubelet,
        name: &str,
    ) -> (Operator, PathBuf) {
        let mut flags = kubelet.resolve_args(name);
        flags.push("--resync-seconds=1".into());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Operator::start_with_chart_rbac(api, &flags)
    }

    /// Starts the operator with the credentials of `kubeconfig` (e.g. from
    /// [`KubeApiServer::chart_service_account`]) and its Lease in `lease_namespace`.
    pub fn start_as(
        api: &KubeApiServer,
        kubeconfig: &Path,
        lease_namespace: &str,
        name: &str,
        extra: &[&str],
    ) -> Operator {
        let log = api.dir.path().join(format!("operator-{name}.log"));
        let stderr = std::fs::File::create(&log).expect("operator log");
        let mut child = Command::new(operator_bin())
            .arg("run")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--metrics-addr=127.0.0.1:0")
            .arg(format!("--lease-namespace={lease_namespace}"))
            .arg(format!("--identity={name}"))
            .args(extra)
            .env("RUST_LOG", "info,kairos_operator=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting kairos-operator");
        let stdout = child.stdout.take().expect("operator stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the operator's first line");
        let metrics_addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| {
                panic!(
                    "no metrics address in {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Operator {
            child,
            metrics_addr,
            log,
        }
    }

    /// The operator's `/metrics` text.
    pub fn metrics(&self) -> String {
        crate::http_get(&format!("http://{}/metrics", self.metrics_addr)).1
    }

    /// One sample of `/metrics` (0 when the series is absent).
    pub fn sample(&self, series: &str) -> f64 {
        crate::sample(&self.metrics(), series).unwrap_or(0.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (30 s at most).
    pub fn stop(mut self) -> std::process::ExitStatus {
        crate::terminate(&mut self.child, Duration::from_secs(30))
            .expect("the operator did not exit within 30 s of SIGTERM")
    }

    /// SIGKILL (no Lease release), then reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of {}:\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in &self.pids {
            // SAFETY: kill(2) on PIDs the start script wrote for processes it started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

/// Ports of one broker pod played by a local process.
#[derive(Clone, Copy, Debug)]
pub struct PodPorts {
    pub kafka: u16,
    pub controller: u16,
    pub metrics: u16,
    pub admin: u16,
}

/// A broker pod's grace period (the operator's `terminationGracePeriodSeconds`).
const SHUTDOWN: Duration = Duration::from_secs(60);

/// Stands in for the kubelet of a KafkaCluster's broker pods: each Pod the StatefulSet controller
/// creates is run as a local `kairos serve` through the ConfigMap's own `start.sh` (so node ids
/// and roles come from the pod's ordinal, as in a cluster), with its ConfigMap's
/// `server.properties`; pod DNS names and ports are mapped to loopback ports fixed per ordinal,
/// and each pod's data directory outlives its process (a PersistentVolume's part). Readiness is
/// the broker's `/readyz`, written to the Pod's status. A deleted Pod's broker gets SIGTERM (the
/// preStop hook's part), then the Pod is removed so the StatefulSet recreates it.
pub struct Kubelet {
    pub ports: Vec<PodPorts>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct RunningPod {
    uid: String,
    child: Child,
    ready: bool,
}

impl Kubelet {
    /// Serves the pods of cluster `name` (at most `max_pods`), in the API server's `default`
    /// namespace.
    pub fn start(api: &KubeApiServer, name: &str, max_pods: usize) -> Kubelet {
        Kubelet::start_on_nodes(api, name, max_pods, &[])
    }

    /// As [`Kubelet::start`], and first binds each Pod to `nodes[ordinal % nodes.len()]` (the
    /// scheduler's part; the Node objects are the caller's), and keeps the Pod's
    /// `kairos.dev/rack` annotation in its downward-API file, as a kubelet would.
    pub fn start_on_nodes(
        api: &KubeApiServer,
        name: &str,
        max_pods: usize,
        nodes: &[&str],
    ) -> Kubelet {
        let ports: Vec<PodPorts> = (0..max_pods)
            .map(|_| PodPorts {
                kafka: crate::free_port(),
                controller: crate::free_port(),
                metrics: crate::free_port(),
                admin: crate::free_port(),
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ctx = KubeletLoop {
            kubeconfig: api.kubeconfig(),
            dir: api.dir.path().join(format!("kubelet-{name}")),
            name: name.to_string(),
            ports: ports.clone(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            stop: stop.clone(),
        };
        let thread = std::thread::spawn(move || ctx.run());
        Kubelet {
            ports,
            stop,
            thread: Some(thread),
        }
    }

    /// The operator's `--resolve` flags: the bootstrap Service reaches any pod's listener (tried
    /// in order, as a Service picks a ready pod); each pod's DNS name reaches its own admin API.
    pub fn resolve_args(&self, name: &str) -> Vec<String> {
        let mut args = vec![format!(
            "--resolve={name}-bootstrap.default.svc:9092={}",
            self.bootstrap()
        )];
        args.extend(self.ports.iter().enumerate().map(|(i, p)| {
            format!(
                "--resolve={name}-broker-{i}.{name}-brokers.default.svc:9095=127.0.0.1:{}",
                p.admin
            )
        }));
        args
    }

    /// Pod `pod`'s Kafka listener.
    pub fn kafka_addr(&self, pod: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.ports[pod].kafka))
    }

    /// `127.0.0.1:port,...` of every pod's Kafka listener.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.kafka))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct KubeletLoop {
    kubeconfig: PathBuf,
    dir: PathBuf,
    name: String,
    ports: Vec<PodPorts>,
    nodes: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl KubeletLoop {
    /// Binds Pod `name` to its node (by ordinal); false when there is nothing to bind it to.
    fn bind(&self, name: &str) -> bool {
        let Some(node) = ordinal(name).and_then(|o| self.nodes.get(o % self.nodes.len().max(1)))
        else {
            return false;
        };
        let binding = serde_json::json!({
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        });
        let file = self.dir.join(format!("binding-{name}.json"));
        std::fs::create_dir_all(&self.dir).is_ok()
            && std::fs::write(&file, binding.to_string()).is_ok()
            && self
                .kubectl(&[
                    "create",
                    "--raw",
                    &format!("/api/v1/namespaces/default/pods/{name}/binding"),
                    "-f",
                    &file.to_string_lossy(),
                ])
                .is_some()
    }

    /// The downward-API file with the Pod's rack annotation (written when it changes).
    fn write_podinfo(&self, pod: &serde_json::Value, name: &str) {
        let dir = self.dir.join(name).join("podinfo");
        let rack = pod["metadata"]["annotations"]["kairos.dev/rack"]
            .as_str()
            .unwrap_or_default();
        let file = dir.join("rack");
        if std::fs::read_to_string(&file).unwrap_or_default() != rack {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(&file, rack);
        }
    }

    fn kubectl(&self, args: &[&str]) -> Option<Vec<u8>> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }

    fn run(self) {
        let mut pods: std::collections::HashMap<String, RunningPod> = Default::default();
        let selector = format!("app.kubernetes.io/instance={}", self.name);
        while !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let Some(list) = self.kubectl(&["get", "pods", "-l", &selector, "-o", "json"]) else {
                continue;
            };
            let Ok(list) = serde_json::from_slice::<serde_json::Value>(&list) else {
                continue;
            };
            let items = list["items"].as_array().cloned().unwrap_or_default();
            // A Pod deleted at once (it never had a node) leaves no deletionTimestamp to see.
            let listed: std::collections::HashSet<&str> = items
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            let gone: Vec<String> = pods
                .keys()
                .filter(|n| !listed.contains(n.as_str()))
                .cloned()
                .collect();
            for name in gone {
                if let Some(mut p) = pods.remove(&name) {
                    crate::terminate(&mut p.child, SHUTDOWN);
                }
            }
            for pod in &items {
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let uid = pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if pod["metadata"]["deletionTimestamp"].is_string() {
                    if let Some(mut p) = pods.remove(&name) {
                        // The preStop hook's part: SIGTERM, then wait for the controlled shutdown
                        // (the pod's grace period, then SIGKILL).
                        crate::terminate(&mut p.child, SHUTDOWN);
                    }
                    self.kubectl(&["delete", "pod", &name, "--grace-period=0", "--force"]);
                    continue;
                }
                if !self.nodes.is_empty() && !pod["spec"]["nodeName"].is_string() {
                    self.bind(&name);
                    continue;
                }
                self.write_podinfo(pod, &name);
                if pods.get(&name).is_some_and(|p| p.uid != uid) {
                    if let Some(mut p) = pods.remove(&name) {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                    }
                }
                if !pods.contains_key(&name) {
                    if let Some(child) = self.launch(&name, pod) {
                        pods.insert(
                            name.clone(),
                            RunningPod {
                                uid,
                                child,
                                ready: false,
                            },
                        );
                    }
                    continue;
                }
                let Some(p) = pods.get_mut(&name) else {
                    continue;
                };
                let ordinal = ordinal(&name);
                let exited = matches!(p.child.try_wait(), Ok(Some(_)));
                let ready = !exited
                    && ordinal
                        .and_then(|o| self.ports.get(o))
                        .is_some_and(|ports| {
                            crate::try_http_get(&format!(
                                "http://127.0.0.1:{}/readyz",
                                ports.metrics
                            ))
                            .is_ok_and(|(code, _)| code == 200)
                        });
                let reported = pod["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .is_some_and(|c| c["status"] == "True");
                if ready != p.ready || ready != reported {
                    let status = if ready { "True" } else { "False" };
                    let patch = format!(
                        r#"{{"status":{{"phase":"Running","podIP":"127.0.0.1","conditions":[{{"type":"Ready","status":"{status}"}},{{"type":"ContainersReady","status":"{status}"}}]}}}}"#
                    );
                    if self
                        .kubectl(&[
                            "patch",
                            "pod",
                            &name,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &patch,
                        ])
                        .is_some()
                    {
                        p.ready = ready;
                    }
                }
                if exited {
                    // A crashed broker restarts, as a container would.
                    pods.remove(&name);
                }
            }
        }
        for (_, mut p) in pods {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// The broker container's environment: plain values and Secret keys, as a kubelet resolves
    /// them. None while a Secret or key it needs is missing (a kubelet does not start the
    /// container then).
    fn container_env(&self, pod: &serde_json::Value) -> Option<Vec<(String, String)>> {
        let mut env = Vec::new();
        let vars = pod["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for var in vars {
            let name = var["name"].as_str()?.to_string();
            if let Some(value) = var["value"].as_str() {
                env.push((name, value.to_string()));
                continue;
            }
            let secret = &var["valueFrom"]["secretKeyRef"];
            let (Some(secret), Some(key)) = (secret["name"].as_str(), secret["key"].as_str())
            else {
                continue;
            };
            let template = format!(r#"--template={{{{index .data "{key}" | base64decode}}}}"#);
            let value = self.kubectl(&["get", "secret", secret, "-o", "go-template", &template])?;
            let value = String::from_utf8(value).ok()?;
            if value == "<no value>" {
                return None;
            }
            env.push((name, value));
        }
        Some(env)
    }

    /// Starts pod `name`'s broker through the ConfigMap's start.sh, rewritten for loopback, with
    /// the container's environment.
    fn launch(&self, name: &str, pod: &serde_json::Value) -> Option<Child> {
        let env = self.container_env(pod)?;
        let ordinal = ordinal(name)?;
        let me = *self.ports.get(ordinal)?;
        let cm = self.kubectl(&[
            "get",
            "configmap",
            &format!("{}-config", self.name),
            "-o",
            "json",
        ])?;
        let cm: serde_json::Value = serde_json::from_slice(&cm).ok()?;
        let props = cm["data"]["server.properties"].as_str()?;
        let script = cm["data"]["start.sh"].as_str()?;
        let dir = self.dir.join(name);
        std::fs::create_dir_all(dir.join("data")).ok()?;
        let mut out = String::new();
        for line in props.lines() {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            let line = match key {
                "controller.quorum.voters" => format!(
                    "{key}={}",
                    value
                        .split(',')
                        .filter_map(|v| {
                            let (id, _) = v.split_once('@')?;
                            let port = self.ports.get(id.parse::<usize>().ok()?)?.controller;
                            Some(format!("{id}@127.0.0.1:{port}"))
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                "log.dirs" => format!("{key}={}", dir.join("data").display()),
                "metrics.listener" => format!("{key}=127.0.0.1:{}", me.metrics),
                "admin.listener" => format!("{key}=127.0.0.1:{}", me.admin),
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        let props_path = dir.join("server.properties");
        std::fs::write(&props_path, out).ok()?;
        let script: String = script
            .lines()
            .map(|l| {
                if l.contains("advertised.listeners=") {
                    format!(
                        "  --override \"advertised.listeners=PLAINTEXT://127.0.0.1:{}\"",
                        me.kafka
                    )
                } else {
                    l.replace(
                        "/etc/kairos/server.properties",
                        &props_path.to_string_lossy(),
                    )
                    .replace("0.0.0.0:9092", &format!("127.0.0.1:{}", me.kafka))
                    .replace("0.0.0.0:9093", &format!("127.0.0.1:{}", me.controller))
                    .replace("exec kairos serve", "exec \"$KAIROS\" serve")
                    .replace("/etc/kairos-pod", &dir.join("podinfo").to_string_lossy())
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let script_path = dir.join("start.sh");
        std::fs::write(&script_path, script).ok()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .ok()?;
        Command::new("/bin/sh")
            .arg(&script_path)
            .envs(env)
            .env("HOSTNAME", name)
            .env("KAIROS", crate::kairos_bin())
            .stdin(Stdio::null())
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn()
            .ok()
    }
}

fn ordinal(pod: &str) -> Option<usize> {
    pod.rsplit('-').next()?.parse().ok()
}

/// The Helm chart renderer (tests/helm/render.go): `KAIROS_HELM_RENDER`, else built by
/// tests/helm/build.sh.
pub fn helm_renderer() -> PathBuf {
    built("KAIROS_HELM_RENDER", "tests/helm/build.sh")
}

/// The path in `env`, else the one `script` (a build-and-cache script) prints.
fn built(env: &str, script: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let out = stdout_ok(&mut Command::new(workspace_root().join(script)), script);
    PathBuf::from(out.trim())
}

/// Runs `cmd`, which must exit 0; its standard output.
fn stdout_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// charts/kairos-operator rendered with the renderer's `args` (`-f`, `--namespace`, ...).
pub fn render_chart(args: &[&str]) -> String {
    let chart = workspace_root().join("charts/kairos-operator");
    stdout_ok(
        Command::new(helm_renderer()).args(args).arg(&chart),
        "the chart renderer",
    )
}
