//! `KafkaCluster`: the owned objects as pure functions ([`desired`]) and the controller that
//! applies them ([`reconcile`]).

pub mod desired;
pub mod reconcile;
pub mod restart;
pub mod scale;
