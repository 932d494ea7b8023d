//! Scale planning, as pure functions.
//! - Scale-down: which partitions must move off the brokers being removed, and where they go.
//!   The reconcile submits the moves with AlterPartitionReassignments and shrinks the
//!   StatefulSet only once no partition has a replica left on those brokers.
//! - Rebalance after a scale-up: which replicas move from the fullest brokers to the emptiest.

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

/// The moves that spread replicas over `brokers` until their replica counts differ by at most
/// one: a replica moves, in place, from the fullest broker to the emptiest one not already in
/// the partition. While the fullest broker is also the preferred leader (first replica) of two
/// or more partitions more than the emptiest, a partition it leads moves, otherwise one it
/// follows, so new brokers take their share of leaderships too. Replicas on brokers outside
/// `brokers` are left where they are. Each partition appears at most once, with its final
/// replica list; nothing moves when the counts are already even.
pub fn balance(partitions: &[PartitionState], brokers: &[i32]) -> Vec<Move> {
    let mut current: Vec<Vec<i32>> = partitions.iter().map(|p| p.replicas.clone()).collect();
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    let mut leads = load.clone();
    for replicas in &current {
        for (i, b) in replicas.iter().enumerate() {
            if let Some(n) = load.get_mut(b) {
                *n += 1;
                if i == 0 {
                    *leads.entry(*b).or_default() += 1;
                }
            }
        }
    }
    // Each step lowers the sum of squared counts, so this ends; the bound is a safeguard.
    let steps = load.values().sum::<usize>() * brokers.len() + 1;
    for _ in 0..steps {
        let mut fullest: Vec<i32> = load.keys().copied().collect();
        fullest.sort_by_key(|b| (std::cmp::Reverse((load[b], leads[b])), *b));
        let mut emptiest: Vec<i32> = load.keys().copied().collect();
        emptiest.sort_by_key(|b| (load[b], leads[b], *b));
        let step = fullest.iter().find_map(|&from| {
            emptiest
                .iter()
                .take_while(|to| load[&from] >= load[to] + 2)
                .find_map(|&to| {
                    let lead = leads[&from] > leads[&to] + 1;
                    current
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| !r.contains(&to))
                        .filter_map(|(p, r)| r.iter().position(|b| *b == from).map(|i| (p, i)))
                        .min_by_key(|(p, i)| ((*i == 0) != lead, *p))
                        .map(|(p, i)| (from, to, p, i))
                })
        });
        let Some((from, to, p, i)) = step else {
            break;
        };
        current[p][i] = to;
        for (b, n) in [(from, -1), (to, 1)] {
            let bump = |c: &mut usize| *c = c.saturating_add_signed(n);
            load.entry(b).and_modify(bump);
            if i == 0 {
                leads.entry(b).and_modify(bump);
            }
        }
    }
    partitions
        .iter()
        .zip(current)
        .filter(|(p, r)| p.replicas != *r)
        .map(|(p, replicas)| Move {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas,
        })
        .collect()
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

    /// Replica and preferred-leader counts per broker after `moves`.
    fn counts(
        parts: &[PartitionState],
        moves: &[Move],
        brokers: &[i32],
    ) -> (Vec<usize>, Vec<usize>) {
        let mut replicas = vec![0; brokers.len()];
        let mut leaders = vec![0; brokers.len()];
        for p in parts {
            let r = moves
                .iter()
                .find(|m| m.topic == p.topic && m.partition == p.partition)
                .map_or(&p.replicas, |m| &m.replicas);
            let mut distinct = r.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                p.replicas.len(),
                "{r:?}: replication factor or duplicates"
            );
            for (i, b) in r.iter().enumerate() {
                if let Some(k) = brokers.iter().position(|x| x == b) {
                    replicas[k] += 1;
                    if i == 0 {
                        leaders[k] += 1;
                    }
                }
            }
        }
        (replicas, leaders)
    }

    #[test]
    fn a_scale_up_spreads_replicas_and_leaderships_onto_the_new_broker() {
        // Three brokers, six partitions with two replicas each (as CreateTopics spreads them),
        // then broker 3 joins: 12 replicas become 3 per broker.
        let parts: Vec<PartitionState> = (0..6)
            .map(|i| part("t", i, &[i % 3, (i + 1) % 3]))
            .collect();
        let brokers = [0, 1, 2, 3];
        let moves = balance(&parts, &brokers);
        let (replicas, leaders) = counts(&parts, &moves, &brokers);
        assert_eq!(replicas, [3, 3, 3, 3], "{moves:?}");
        assert!(leaders[3] >= 1, "the new broker leads nothing: {moves:?}");
        assert!(leaders.iter().max() <= Some(&2), "{leaders:?}");
        // Three replicas move, each of a different partition.
        assert_eq!(moves.len(), 3, "{moves:?}");
        // Balanced already: nothing moves (also when run again on the result).
        let after: Vec<PartitionState> = parts
            .iter()
            .map(|p| {
                let r = moves
                    .iter()
                    .find(|m| m.partition == p.partition)
                    .map_or(p.replicas.clone(), |m| m.replicas.clone());
                part(&p.topic, p.partition, &r)
            })
            .collect();
        assert_eq!(balance(&after, &brokers), vec![]);
    }

    #[test]
    fn two_new_brokers_each_get_their_share() {
        // One topic of 8 partitions, 3 replicas, on brokers 0-2 (8 each); 0-4 should hold 4-5.
        let parts: Vec<PartitionState> = (0..8)
            .map(|i| part("t", i, &[i % 3, (i + 1) % 3, (i + 2) % 3]))
            .collect();
        let brokers = [0, 1, 2, 3, 4];
        let moves = balance(&parts, &brokers);
        let (replicas, _) = counts(&parts, &moves, &brokers);
        assert!(
            replicas.iter().all(|n| (4..=5).contains(n)),
            "{replicas:?} {moves:?}"
        );
    }

    #[test]
    fn a_full_replication_factor_cannot_move_and_brokers_outside_the_set_stay() {
        // Every partition is on every broker: nothing can move.
        let parts = [part("a", 0, &[0, 1]), part("a", 1, &[1, 0])];
        assert_eq!(balance(&parts, &[0, 1]), vec![]);
        // A replica on broker 9 (not among the brokers) is neither counted nor moved.
        let parts = [
            part("b", 0, &[9, 0]),
            part("b", 1, &[0, 1]),
            part("b", 2, &[0, 1]),
        ];
        let moves = balance(&parts, &[0, 1, 2]);
        assert!(moves
            .iter()
            .all(|m| m.replicas.contains(&9) == (m.partition == 0)));
        let (replicas, _) = counts(&parts, &moves, &[0, 1, 2]);
        assert_eq!(replicas, [2, 2, 1], "{moves:?}");
    }
}
