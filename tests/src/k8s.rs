//! A real kube-apiserver (v1.20.2, built from Debian's source by `tests/k8s/build.sh`) with its
//! etcd, on free loopback ports, stopped by PID on drop. See `../shared/k8s-apiserver.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        let server = KubeApiServer { dir, pids };
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

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: kill(2) on PIDs the start script wrote for processes it started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}
