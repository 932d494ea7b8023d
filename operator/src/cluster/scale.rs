//! Scale-down planning, as pure functions: which partitions must move off the brokers being
//! removed, and where they go. The reconcile submits the moves with AlterPartitionReassignments
//! and shrinks the StatefulSet only once no partition has a replica left on those brokers.

use std::collections::BTreeMap;

use super::restart::PartitionState;

/// A partition's new replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// Broker ids as `0, 1, 2` for messages.
pub fn list(ids: &[i32]) -> String {
    ids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Partitions with a replica on one of `removing`.
pub fn on_removed<'a>(
    partitions: &'a [PartitionState],
    removing: &'a [i32],
) -> impl Iterator<Item = &'a PartitionState> {
    partitions
        .iter()
        .filter(move |p| p.replicas.iter().any(|r| removing.contains(r)))
}

/// The moves that take every replica off `removing`: each such replica is replaced, in place,
/// by the broker of `remaining` that holds the fewest replicas and is not already in the
/// partition (ties: the lowest id). The replication factor and the order of the other replicas
/// are kept, so preferred leaders stay where they were unless they are being removed.
///
/// Err names the first partition that cannot keep its replication factor on `remaining`.
pub fn plan(
    partitions: &[PartitionState],
    remaining: &[i32],
    removing: &[i32],
) -> Result<Vec<Move>, String> {
    let mut load: BTreeMap<i32, usize> = remaining.iter().map(|b| (*b, 0)).collect();
    for p in partitions {
        for r in &p.replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for p in on_removed(partitions, removing) {
        let mut replicas = p.replicas.clone();
        for i in 0..replicas.len() {
            if !removing.contains(&replicas[i]) {
                continue;
            }
            let target = load
                .iter()
                .filter(|(b, _)| !replicas.contains(b))
                .min_by_key(|(b, n)| (**n, **b))
                .map(|(b, _)| *b);
            let Some(target) = target else {
                return Err(format!(
                    "partition {}-{} has {} replicas but only {} broker(s) would remain ({}); lower the topic's replication factor or keep more brokers",
                    p.topic,
                    p.partition,
                    p.replicas.len(),
                    remaining.len(),
                    list(remaining)
                ));
            };
            replicas[i] = target;
            *load.entry(target).or_default() += 1;
        }
        moves.push(Move {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas,
        });
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(topic: &str, partition: i32, replicas: &[i32]) -> PartitionState {
        PartitionState {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
        }
    }

    #[test]
    fn replicas_on_removed_brokers_go_to_the_least_loaded_remaining_ones() {
        // Four brokers down to three: broker 3's replicas move; broker 2 holds the fewest.
        let parts = [
            part("a", 0, &[0, 1]),
            part("a", 1, &[1, 3]),
            part("a", 2, &[3, 0]),
            part("b", 0, &[0, 1]),
        ];
        let moves = plan(&parts, &[0, 1, 2], &[3]).expect("plan");
        assert_eq!(
            moves,
            [
                // a-1: [1, 3] -> broker 3 replaced in place by 2 (0 replicas there yet).
                Move {
                    topic: "a".into(),
                    partition: 1,
                    replicas: vec![1, 2]
                },
                // a-2: its leader 3 is replaced; 2 now holds one, 1 holds three, 0 is in it.
                Move {
                    topic: "a".into(),
                    partition: 2,
                    replicas: vec![2, 0]
                },
            ]
        );
    }

    #[test]
    fn untouched_partitions_do_not_move() {
        let parts = [part("a", 0, &[0, 1, 2]), part("a", 1, &[2, 1, 0])];
        assert_eq!(plan(&parts, &[0, 1, 2], &[3, 4]), Ok(vec![]));
        assert_eq!(on_removed(&parts, &[3, 4]).count(), 0);
    }

    #[test]
    fn a_replication_factor_above_the_remaining_brokers_is_refused() {
        let parts = [part("wide", 4, &[0, 1, 2, 3])];
        let err = plan(&parts, &[0, 1, 2], &[3]).unwrap_err();
        assert!(err.contains("partition wide-4 has 4 replicas"), "{err}");
        assert!(
            err.contains("only 3 broker(s) would remain (0, 1, 2)"),
            "{err}"
        );
    }

    #[test]
    fn two_removed_replicas_of_one_partition_get_distinct_brokers() {
        let parts = [part("a", 0, &[3, 4, 0])];
        let moves = plan(&parts, &[0, 1, 2], &[3, 4]).expect("plan");
        assert_eq!(moves[0].replicas, vec![1, 2, 0]);
    }
}
