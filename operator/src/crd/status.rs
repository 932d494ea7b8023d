//! What every Kairos resource's status shares: `observedGeneration` and kstatus conditions
//! (`Ready`, `Reconciling`, `Stalled`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition types, as kstatus reads them.
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// One condition (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word a program can match on.
    pub reason: String,
    /// What happened and, when something must change, what to fix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time the status last changed (kept while it stays the same).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where a reconcile got to; turned into the three conditions by [`conditions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Everything owned matches the spec and is healthy.
    Ready,
    /// Work in progress (or waiting on something that may heal, like a broker starting).
    Reconciling { reason: String, message: String },
    /// Cannot progress until the spec (or something it names) is fixed.
    Stalled { reason: String, message: String },
}

/// The three kstatus conditions for `phase`, keeping each one's `lastTransitionTime` from
/// `previous` when its status did not change (so an unchanged reconcile writes nothing new).
pub fn conditions(
    phase: &Phase,
    previous: &[Condition],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let (ready, reconciling, stalled, reason, message) = match phase {
        Phase::Ready => (
            "True",
            "False",
            "False",
            "Ready".to_string(),
            "Everything matches the spec".to_string(),
        ),
        Phase::Reconciling { reason, message } => {
            ("False", "True", "False", reason.clone(), message.clone())
        }
        Phase::Stalled { reason, message } => {
            ("False", "False", "True", reason.clone(), message.clone())
        }
    };
    [
        (READY, ready),
        (RECONCILING, reconciling),
        (STALLED, stalled),
    ]
    .into_iter()
    .map(|(type_, status)| {
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        // A false condition says why only through the one that is true.
        let (reason, message) = if status == "True" {
            (reason.clone(), message.clone())
        } else {
            (format!("Not{type_}"), String::new())
        };
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        // Proves an unchanged phase yields identical conditions (no status write, no hot loop).
        let stalled = Phase::Stalled {
            reason: "InvalidSpec".into(),
            message: "spec.delay: \"soon\" is not a duration".into(),
        };
        let first = conditions(&stalled, &[], Some(1), "2026-01-01T00:00:00Z");
        let again = conditions(&stalled, &first, Some(1), "2026-01-01T00:05:00Z");
        assert_eq!(first, again);
        let s = first.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (s.status.as_str(), s.reason.as_str()),
            ("True", "InvalidSpec")
        );
        // Ready: Stalled turns False with a new transition time, Ready True.
        let ready = conditions(&Phase::Ready, &again, Some(2), "2026-01-01T00:10:00Z");
        let r = ready.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(r.status, "True");
        assert_eq!(r.last_transition_time, "2026-01-01T00:10:00Z");
        assert!(ready.iter().all(|c| c.observed_generation == Some(2)));
    }
}
