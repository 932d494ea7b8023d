//! What a `KafkaCluster` owns: [`desired`] builds each object from the spec.

pub mod desired;
