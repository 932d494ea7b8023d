//! Rolling restarts (the StatefulSet is `OnDelete`): the operator deletes one outdated pod at a
//! time, only when every pod is Ready and no partition would drop below `min.insync.replicas`,
//! the active controller last. The decisions are pure functions of the pods' and partitions'
//! states; [`super::reconcile`] gathers those and acts.

use std::collections::HashMap;

/// One broker pod as the API server has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub name: String,
    pub ordinal: i32,
    /// The pod's `kairos.dev/template-hash`: the pod template it was made from.
    pub revision: Option<String>,
    pub ready: bool,
    pub terminating: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Every pod runs the current revision and is Ready.
    Done,
    /// Wait: (why, the pod being restarted if any).
    Wait(String, Option<String>),
    /// Restart this pod (broker id = ordinal) once the brokers agree.
    Restart(PodState),
}

/// Outdated pods in restart order: highest ordinal first, the active controller last.
pub fn order(pods: &[PodState], update_revision: &str, controller: Option<i32>) -> Vec<PodState> {
    let mut outdated: Vec<PodState> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(update_revision))
        .cloned()
        .collect();
    outdated.sort_by_key(|p| (Some(p.ordinal) == controller, std::cmp::Reverse(p.ordinal)));
    outdated
}

/// The next step for a StatefulSet of `replicas` pods.
pub fn next(
    pods: &[PodState],
    replicas: i32,
    update_revision: &str,
    controller: Option<i32>,
) -> Step {
    let plan = order(pods, update_revision, controller);
    if let Some(p) = pods.iter().find(|p| p.terminating) {
        return Step::Wait(
            format!("pod {} is shutting down", p.name),
            Some(p.name.clone()),
        );
    }
    if let Some(missing) = (0..replicas).find(|o| !pods.iter().any(|p| p.ordinal == *o)) {
        return Step::Wait(
            format!("pod with ordinal {missing} is being recreated"),
            None,
        );
    }
    if let Some(p) = pods.iter().find(|p| !p.ready) {
        return Step::Wait(format!("pod {} is not Ready", p.name), Some(p.name.clone()));
    }
    match plan.into_iter().next() {
        None => Step::Done,
        Some(p) => Step::Restart(p),
    }
}

/// One partition as the cluster's metadata reports it.
#[derive(Debug, Clone)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Why stopping `broker` now would hurt producers, if it would: a partition not fully in sync
/// (the previous restart has not caught up), or one whose in-sync set would drop below its
/// `min.insync.replicas` (acks=all producers would fail with NOT_ENOUGH_REPLICAS).
pub fn isr_blocker(
    partitions: &[PartitionState],
    min_insync: &HashMap<String, i32>,
    broker: i32,
) -> Option<String> {
    for p in partitions {
        if p.isr.len() < p.replicas.len() {
            return Some(format!(
                "partition {}-{} has {} of {} replicas in sync",
                p.topic,
                p.partition,
                p.isr.len(),
                p.replicas.len()
            ));
        }
        if !p.isr.contains(&broker) || p.replicas.len() < 2 {
            continue;
        }
        let Some(min) = min_insync.get(&p.topic).map(|m| *m as usize) else {
            return Some(format!(
                "the brokers did not report min.insync.replicas of topic {}",
                p.topic
            ));
        };
        if p.isr.len() - 1 < min {
            return Some(format!(
                "partition {}-{} would have {} in-sync replicas without broker {broker}, below its min.insync.replicas {min}",
                p.topic,
                p.partition,
                p.isr.len() - 1
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, revision: &str, ready: bool) -> PodState {
        PodState {
            name: format!("orders-broker-{ordinal}"),
            ordinal,
            revision: Some(revision.into()),
            ready,
            terminating: false,
        }
    }

    #[test]
    fn pods_restart_one_at_a_time_highest_first_and_the_controller_last() {
        // Proves the order, and that nothing proceeds while a pod is down or not Ready.
        let pods = vec![
            pod(0, "old", true),
            pod(1, "old", true),
            pod(2, "old", true),
        ];
        let names = |ps: Vec<PodState>| ps.into_iter().map(|p| p.ordinal).collect::<Vec<_>>();
        assert_eq!(names(order(&pods, "new", Some(2))), [1, 0, 2]);
        assert_eq!(names(order(&pods, "new", None)), [2, 1, 0]);
        assert_eq!(
            next(&pods, 3, "new", Some(2)),
            Step::Restart(pod(1, "old", true))
        );

        let restarted = vec![
            pod(0, "old", true),
            pod(1, "new", false),
            pod(2, "old", true),
        ];
        assert_eq!(
            next(&restarted, 3, "new", Some(2)),
            Step::Wait(
                "pod orders-broker-1 is not Ready".into(),
                Some("orders-broker-1".into())
            )
        );
        let gone = vec![pod(0, "old", true), pod(2, "old", true)];
        assert!(matches!(next(&gone, 3, "new", Some(2)), Step::Wait(..)));
        let mut stopping = pods.clone();
        stopping[1].terminating = true;
        assert!(matches!(next(&stopping, 3, "new", Some(2)), Step::Wait(..)));

        let done = vec![
            pod(0, "new", true),
            pod(1, "new", true),
            pod(2, "new", true),
        ];
        assert_eq!(next(&done, 3, "new", Some(2)), Step::Done);
    }

    #[test]
    fn a_broker_whose_absence_would_break_min_insync_is_not_restarted() {
        // Proves the min.insync.replicas check and the wait for a lagging replica.
        let part = |isr: Vec<i32>| PartitionState {
            topic: "payments".into(),
            partition: 0,
            replicas: vec![0, 1, 2],
            isr,
        };
        let min2 = HashMap::from([("payments".to_string(), 2)]);
        assert_eq!(isr_blocker(&[part(vec![0, 1, 2])], &min2, 1), None);
        let lagging = isr_blocker(&[part(vec![0, 2])], &min2, 1).expect("blocked");
        assert!(lagging.contains("2 of 3 replicas in sync"), "{lagging}");
        let min3 = HashMap::from([("payments".to_string(), 3)]);
        let below = isr_blocker(&[part(vec![0, 1, 2])], &min3, 1).expect("blocked");
        assert!(below.contains("below its min.insync.replicas 3"), "{below}");
        let unknown = isr_blocker(&[part(vec![0, 1, 2])], &HashMap::new(), 1).expect("blocked");
        assert!(
            unknown.contains("did not report min.insync.replicas"),
            "{unknown}"
        );
    }
}
