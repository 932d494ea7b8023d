//! `kairos-operator run` runs the operator; `kairos-operator crdgen [DIR]` prints the CRDs as one
//! YAML stream, or writes one file per CRD into DIR (the checked-in `crds/`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kairos-operator",
    version,
    about = "Kubernetes operator for Kairos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile KafkaCluster, KafkaTopic and DelayQueue resources.
    Run(kairos_operator::run::Options),
    /// Print the CRDs, or write them into DIR.
    Crdgen { dir: Option<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crdgen { dir } => crdgen(dir.as_deref()),
        Command::Run(opts) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(kairos_operator::run::run(opts)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kairos-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn crdgen(dir: Option<&str>) -> anyhow::Result<()> {
    let crds = kairos_operator::crd::crds()?;
    match dir {
        None => {
            for (_, yaml) in crds {
                print!("---\n{yaml}");
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (file, yaml) in crds {
                std::fs::write(std::path::Path::new(dir).join(file), yaml)?;
            }
        }
    }
    Ok(())
}
