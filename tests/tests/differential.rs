//! The differential harness against Apache Kafka 4.4: every scenario of
//! `kairos_tests::differential::scenarios` runs on a real Kafka (scripts/kafka-reference.sh) and
//! on Kairos, and what a client observes must be the same, unless docs/compatibility.md lists
//! the scenario with its reason. A listed scenario that no longer differs fails too, so the
//! list stays true.

use std::collections::BTreeSet;

use kairos_tests::differential::{listed_differences, run_all, scenarios};
use kairos_tests::{Broker, KafkaReference};

#[test]
fn kairos_answers_every_scenario_as_kafka_4_4_does_or_the_difference_is_documented() {
    let kafka = KafkaReference::start();
    // The reference's static settings, so that config sources compare alike.
    let kairos = Broker::start(&[
        "num.partitions=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "offsets.topic.replication.factor=1",
    ]);
    // KAIROS_DIFF_ONLY=<substring> runs only matching scenarios (for debugging one).
    let only = std::env::var("KAIROS_DIFF_ONLY").ok();
    let all: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|o| s.name.contains(o.as_str())))
        .collect();
    let every = scenarios::all();
    let names: BTreeSet<&str> = every.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), every.len(), "scenario names are unique");
    let outcomes = run_all(kafka.addr(), kairos.addr(), &all);

    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/compatibility.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/compatibility.md");
    let listed: BTreeSet<String> = listed_differences(&doc).into_iter().collect();
    for name in &listed {
        assert!(
            names.contains(name.as_str()),
            "docs/compatibility.md lists an unknown scenario {name}"
        );
    }

    let bad = outcomes.iter().filter(|o| o.bad_input).count();
    let differing: Vec<_> = outcomes.iter().filter(|o| o.differs()).collect();
    let mut report = String::new();
    for o in &differing {
        report.push_str(&format!(
            "--- {} ({}):\n{}",
            o.name,
            if listed.contains(o.name) {
                "listed"
            } else {
                "NOT LISTED"
            },
            o.diff()
        ));
    }
    eprintln!("{report}");
    eprintln!(
        "differential: {} scenarios ({} bad input, {} good), {} identical to Kafka 4.4, {} differ (all listed in docs/compatibility.md)",
        outcomes.len(),
        bad,
        outcomes.len() - bad,
        outcomes.len() - differing.len(),
        differing.len()
    );
    let unlisted: Vec<&str> = differing
        .iter()
        .map(|o| o.name)
        .filter(|n| !listed.contains(*n))
        .collect();
    let stale: Vec<&String> = listed
        .iter()
        .filter(|n| outcomes.iter().any(|o| o.name == n.as_str()))
        .filter(|n| !differing.iter().any(|o| o.name == n.as_str()))
        .collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "differences not in docs/compatibility.md: {unlisted:?}; listed but now identical: {stale:?}"
    );
    if only.is_some() {
        return;
    }
    assert!(outcomes.len() >= 100, "at least 100 scenarios");
    assert!(bad * 2 >= outcomes.len(), "at least half of them bad input");
}
