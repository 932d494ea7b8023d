//! `kairos-operator crdgen [DIR]`: prints the CRDs as one YAML stream, or writes one file per CRD
//! into DIR (the checked-in `crds/`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("crdgen") => match crdgen(args.get(1).map(String::as_str)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kairos-operator crdgen: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: kairos-operator crdgen [DIR]");
            ExitCode::from(2)
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
