//! The Kairos operator: `KafkaCluster`, `KafkaTopic` and `DelayQueue` custom resources.
//!
//! - [`crd`] — the resource types (`kairos.dev/v1alpha1`), their status conditions, and the CRD
//!   YAML `kairos-operator crdgen` writes to `crds/`.
//! - [`cluster`] — what a `KafkaCluster` owns, as pure functions of its spec: ConfigMap,
//!   Services, StatefulSet, PodDisruptionBudget.

pub mod cluster;
pub mod crd;
