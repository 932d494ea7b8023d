//! The Kairos operator: `KafkaCluster`, `KafkaTopic` and `DelayQueue` custom resources.
//!
//! - [`crd`] — the resource types (`kairos.dev/v1alpha1`), their status conditions, and the CRD
//!   YAML `kairos-operator crdgen` writes to `crds/`.
//! - [`cluster`] — what a `KafkaCluster` owns, as pure functions of its spec ([`cluster::desired`])
//!   and the controller applying them ([`cluster::reconcile`]).
//! - [`topic`] and [`delay_queue`] — what a `KafkaTopic` and a `DelayQueue` keep in their cluster;
//!   [`child`] — the controller both run under (cluster lookup, finalizer, status write);
//!   [`kafka`] — the admin calls against the brokers.
//! - [`apply`] — server-side apply that writes only what differs; [`context`] — what reconciles
//!   share (client, events, metrics, backoff); [`run`] — leader election and the controllers.

pub mod apply;
pub mod child;
pub mod cluster;
pub mod context;
pub mod crd;
pub mod delay_queue;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod run;
pub mod topic;
