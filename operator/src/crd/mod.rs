//! The custom resources (`kairos.dev/v1alpha1`) and the CRD YAML generated from them.

// Several `printcolumn(...)` entries share keys like `type_`: clippy takes them for duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod cluster;
pub mod delay_queue;
pub mod status;
pub mod topic;

use kube::CustomResourceExt;

pub use cluster::{KafkaCluster, KafkaClusterSpec, KafkaClusterStatus};
pub use delay_queue::{DelayQueue, DelayQueueSpec, DelayQueueStatus};
pub use topic::{KafkaTopic, KafkaTopicSpec, KafkaTopicStatus};

/// Every CRD as (file name in `crds/`, YAML).
pub fn crds() -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        (
            "kafkaclusters.yaml",
            serde_yaml::to_string(&KafkaCluster::crd())?,
        ),
        (
            "kafkatopics.yaml",
            serde_yaml::to_string(&KafkaTopic::crd())?,
        ),
        (
            "delayqueues.yaml",
            serde_yaml::to_string(&DelayQueue::crd())?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_crds_are_current() {
        // Proves crds/ matches the Rust types: a stale CRD fails here, not on a cluster.
        // ... and the Helm chart's copy (Helm installs CRDs only from the chart's crds/).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for dir in ["crds", "charts/kairos-operator/crds"] {
            for (file, yaml) in super::crds().expect("CRDs serialize") {
                let path = root.join(dir).join(file);
                let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    on_disk == yaml,
                    "{} is stale: run `cargo run -p kairos-operator -- crdgen {dir}`",
                    path.display()
                );
            }
        }
    }
}
