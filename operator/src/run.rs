//! `kairos-operator run`: connects to the API server, serves metrics, takes the leader Lease and
//! runs the controllers until SIGTERM (or until the Lease is lost: then it exits, and the
//! Deployment starts a fresh replica).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use kube::api::ApiResource;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use kube_lease_manager::LeaseManagerBuilder;

use crate::context::{serves, service_monitor_resource, Context, Scope, Settings};
use crate::kafka::Resolver;
use crate::metrics::Metrics;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// kubeconfig for out-of-cluster use; else $KUBECONFIG, ~/.kube/config or the pod's service
    /// account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces to watch (repeatable or comma-separated); all when unset.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of /metrics and /healthz (port 0: any free port, printed at start).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Take a Lease before acting, so several replicas can run with one active.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "kairos-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Out-of-cluster mode: reach a broker address the operator derives (bootstrap Service or
    /// pod DNS name, `host:port`) at another address, e.g. a `kubectl port-forward`
    /// (`--resolve kairos-bootstrap.default.svc:9092=127.0.0.1:9092`; repeatable).
    #[arg(long = "resolve", value_name = "HOST:PORT=ADDR:PORT")]
    pub resolve: Vec<String>,
    /// Seconds between checks of each topic against the cluster (changes made outside
    /// Kubernetes raise no watch event).
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// This replica's name in the Lease and in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    // A malformed flag fails before anything is contacted.
    let resolver = Resolver::parse(&opts.resolve).map_err(anyhow::Error::msg)?;
    let client = client(&opts).await?;
    let metrics = Metrics::new()?;
    let listener = tokio::net::TcpListener::bind(&opts.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", opts.metrics_addr))?;
    // Tests and scripts read the bound address from this line.
    println!(
        "kairos-operator: serving /metrics and /healthz on {}",
        listener.local_addr()?
    );
    tokio::spawn(crate::http::serve(listener, metrics.clone()));

    let pdb = pdb_resource(&client).await?;
    let service_monitor = service_monitor_resource(&client)
        .await
        .context("discovering monitoring.coreos.com/v1")?;
    let identity = opts.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "kairos-operator".into()),
            std::process::id()
        )
    });
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kairos-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    let scope = Scope {
        namespaces: opts.namespaces.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        metrics.clone(),
        Settings {
            pdb,
            service_monitor,
            scope,
            resolver,
            resync: Duration::from_secs(opts.resync_seconds.max(1)),
        },
    ));

    if !opts.leader_election {
        metrics.leader.set(1);
        controllers(ctx).await;
        return Ok(());
    }
    let manager = LeaseManagerBuilder::new(client, &opts.lease_name)
        .with_namespace(&opts.lease_namespace)
        .with_identity(&identity)
        .with_duration(opts.lease_duration.max(2))
        .with_grace((opts.lease_duration / 3).max(1))
        .build()
        .await
        .context("preparing the leader Lease")?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(
        "waiting for Lease {}/{} as {identity}",
        opts.lease_namespace,
        opts.lease_name
    );
    tokio::select! {
        got = async { leader.wait_for(|l| *l).await.map(|_| ()) } => {
            got.context("the Lease manager stopped")?;
        }
        _ = shutdown_signal() => return Ok(()),
    }
    tracing::info!("leading as {identity}");
    metrics.leader.set(1);
    let lost = tokio::select! {
        _ = controllers(ctx) => false,
        _ = leader.wait_for(|l| !*l) => true,
    };
    metrics.leader.set(0);
    // Dropping the receiver releases the Lease, so a standby takes over at once.
    drop(leader);
    let _ = lease_task.await;
    if lost {
        bail!("lost the leader Lease; exiting so that a single replica acts");
    }
    Ok(())
}

/// The controllers, until SIGTERM/SIGINT.
async fn controllers(ctx: Arc<Context>) {
    tokio::join!(
        crate::cluster::reconcile::run(ctx.clone()),
        crate::child::run::<crate::crd::KafkaTopic>(ctx.clone()),
        crate::child::run::<crate::crd::DelayQueue>(ctx),
    );
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn client(opts: &Options) -> anyhow::Result<Client> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer()
            .await
            .context("no kubeconfig and not in a pod")?,
    };
    Ok(Client::try_from(config)?)
}

/// PodDisruptionBudgets are `policy/v1` from Kubernetes 1.21; older servers only have v1beta1
/// (same fields for what the operator sets).
async fn pdb_resource(client: &Client) -> anyhow::Result<ApiResource> {
    let served = serves(client, "policy/v1", "poddisruptionbudgets")
        .await
        .context("discovering policy/v1")?;
    let version = if served { "v1" } else { "v1beta1" };
    Ok(ApiResource::from_gvk(&GroupVersionKind::gvk(
        "policy",
        version,
        "PodDisruptionBudget",
    )))
}
