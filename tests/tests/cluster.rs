//! Several `kairos serve` processes forming one cluster through the Raft metadata quorum: a shared
//! cluster image seen from every broker, controller failover, broker fencing and re-registration,
//! controlled shutdown, and start-up checks that refuse a wrong view.
//!
//! Topics below use RF = 1 spread over the brokers; `replication.rs` covers RF > 1.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kairos_tests::cluster::{
    active_controllers, consume_all, create_topic, is_active_controller, leaders, live_broker_ids,
    metadata, produce_acked, wait_registered, wait_until, FAST,
};
use kairos_tests::{Broker, Cluster};

/// FAST, but a session outlives the test: whatever fences a broker here is not its session
/// timing out (a later override wins).
const LONG_SESSIONS: &[&str] = &[FAST[0], FAST[1], FAST[2], "broker.session.timeout.ms=30000"];

#[test]
fn every_broker_serves_the_same_cluster_view_and_clients_reach_every_leader() {
    let c = Cluster::start(3, FAST);
    let all: BTreeSet<i32> = [1, 2, 3].into();
    for b in &c.brokers {
        wait_until(Duration::from_secs(10), "three registered brokers", || {
            (live_broker_ids(b)? == all).then_some(())
        });
    }
    assert_eq!(create_topic(&c.brokers[1], "spread", 6, 1), 0);
    // The creation went through the quorum: every broker answers with the same assignment.
    let seen: Vec<Vec<i32>> = c
        .brokers
        .iter()
        .map(|b| {
            wait_until(Duration::from_secs(5), "topic visible", || {
                leaders(b, "spread")
            })
        })
        .collect();
    assert!(seen.iter().all(|l| l == &seen[0]), "views differ: {seen:?}");
    let used: BTreeSet<i32> = seen[0].iter().copied().collect();
    assert_eq!(
        used, all,
        "6 partitions spread over 3 brokers: {:?}",
        seen[0]
    );
    let controllers: BTreeSet<i32> = c
        .brokers
        .iter()
        .map(|b| metadata(b).expect("metadata").controller_id.0)
        .collect();
    assert_eq!(controllers.len(), 1, "one controller: {controllers:?}");
    assert!(all.contains(controllers.iter().next().unwrap()));
    // The same topic created again through another broker exists already.
    assert_eq!(create_topic(&c.brokers[2], "spread", 6, 1), 36);
    // More replicas than brokers cannot be placed.
    assert_eq!(create_topic(&c.brokers[0], "replicated", 1, 4), 38);

    // A real client produces to every partition (each leader on its own broker) and reads back.
    let acked = produce_acked(&c.brokers[0].bootstrap(), "spread", 6, "v", 60);
    let got = consume_all(&c.brokers[2].bootstrap(), "spread", 6, acked.len());
    assert_eq!(got, acked, "every acknowledged record, at its offset");
}

#[test]
fn controller_failover_keeps_metadata_writable() {
    let mut c = Cluster::start(3, FAST);
    // The active controller as its /metrics say (Metadata's controller id is any live broker).
    let controller = wait_until(Duration::from_secs(10), "a controller", || {
        let a = active_controllers(&c);
        (a.len() == 1).then(|| a[0])
    });
    c.node(controller).signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let others: Vec<i32> = (1..=3).filter(|i| *i != controller).collect();
    let other = others[0];
    let new_controller = wait_until(
        Duration::from_secs(5),
        "a new controller within 5 s",
        || {
            others
                .iter()
                .copied()
                .find(|i| is_active_controller(c.node(*i)))
        },
    );
    eprintln!(
        "controller {controller} stopped; {new_controller} took over after {:?}",
        stopped_at.elapsed()
    );
    // Metadata changes continue without the stopped node.
    assert_eq!(create_topic(c.node(other), "after.failover", 2, 1), 0);
    // The stopped node sends no heartbeat: fenced after broker.session.timeout.ms.
    wait_until(Duration::from_secs(10), "the stopped broker fenced", || {
        (!live_broker_ids(c.node(other))?.contains(&controller)).then_some(())
    });
    c.node(controller).signal(libc::SIGCONT);
    // It comes back: catches up with the image and registers again.
    wait_until(
        Duration::from_secs(15),
        "the node back and caught up",
        || {
            let l = leaders(c.node(controller), "after.failover")?;
            (live_broker_ids(c.node(controller))?.len() == 3 && l.len() == 2).then_some(())
        },
    );
}

#[test]
fn a_killed_broker_is_fenced_at_once_and_leads_its_partitions_again_after_restart() {
    let mut c = Cluster::start(3, LONG_SESSIONS);
    wait_registered(&c);
    assert_eq!(create_topic(&c.brokers[0], "rf1", 3, 1), 0);
    let before = wait_until(Duration::from_secs(5), "leaders", || {
        leaders(&c.brokers[0], "rf1")
    });
    let controller = metadata(&c.brokers[0]).unwrap().controller_id.0;
    // Kill a broker that is not the controller: its session stream closes with the process.
    let victim = (1..=3).find(|i| *i != controller).unwrap();
    c.node(victim).kill9();
    let killed_at = Instant::now();
    wait_until(
        Duration::from_secs(2),
        "fencing well before the session timeout",
        || (!live_broker_ids(c.node(controller))?.contains(&victim)).then_some(()),
    );
    eprintln!(
        "broker {victim} fenced {:?} after SIGKILL",
        killed_at.elapsed()
    );
    // Metadata still lists it for a moment (so clients move its partitions before they drop the
    // broker), leading nothing; then it is gone there too.
    let listed = |c: &mut Cluster| {
        metadata(c.node(controller))
            .expect("metadata")
            .brokers
            .iter()
            .any(|b| b.node_id.0 == victim)
    };
    assert!(listed(&mut c), "a just-fenced broker stays in Metadata");
    wait_until(
        Duration::from_secs(10),
        "the fenced broker dropped from Metadata",
        || (!listed(&mut c)).then_some(()),
    );
    // Its RF=1 partitions have no other replica: no leader (LEADER_NOT_AVAILABLE), not moved.
    let during = leaders(c.node(controller), "rf1").unwrap();
    for (b, d) in before.iter().zip(&during) {
        if *b == victim {
            assert_eq!(*d, -1, "{before:?} -> {during:?}");
        } else {
            assert_eq!(b, d);
        }
    }
    c.node(victim).restart();
    wait_until(
        Duration::from_secs(10),
        "leadership back on the restarted broker",
        || (leaders(c.node(controller), "rf1")? == before).then_some(()),
    );
}

#[test]
fn sigterm_is_a_controlled_shutdown() {
    let mut c = Cluster::start(3, LONG_SESSIONS);
    wait_registered(&c);
    // Broker 3 leads a partition, so its shutdown has leadership to move.
    assert_eq!(create_topic(&c.brokers[0], "led", 3, 3), 0);
    wait_until(
        Duration::from_secs(5),
        "broker 3 leading a partition",
        || leaders(&c.brokers[0], "led")?.contains(&3).then_some(()),
    );
    assert_eq!(c.node(3).stop(), Some(0), "exit code after SIGTERM");
    wait_until(
        Duration::from_secs(5),
        "broker 3 gone from the cluster view",
        || (live_broker_ids(&c.brokers[0])? == [1, 2].into()).then_some(()),
    );
    // A controlled shutdown moved leadership first: Metadata drops the broker with the fence.
    let listed: BTreeSet<i32> = metadata(&c.brokers[0])
        .expect("metadata")
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .collect();
    assert_eq!(listed, [1, 2].into());
    // The other two still hold a quorum.
    assert_eq!(create_topic(&c.brokers[0], "two.left", 1, 1), 0);
}

fn expect_startup_failure(b: &mut Broker, within: Duration, needle: &str) {
    let (code, log) = b.start_expecting_failure(within);
    assert_ne!(code, Some(0), "must fail; log:\n{log}");
    let lines = log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines, 1, "expected {needle:?} on one line of:\n{log}");
}

#[test]
fn misconfigured_nodes_fail_fast_with_one_clear_line() {
    // A node id missing from the voters.
    let mut c = Cluster::prepare(1, FAST);
    let voters = format!(
        "controller.quorum.voters=1@127.0.0.1:{}",
        c.brokers[0].controller_port.unwrap()
    );
    let mut stray = Broker::prepare(&["node.id=4", &voters], Some(kairos_tests::free_port()));
    expect_startup_failure(
        &mut stray,
        Duration::from_secs(10),
        "is not in controller.quorum.voters",
    );

    // Voters that never answer: no quorum within the start-up timeout, naming them.
    let dead = kairos_tests::free_port();
    let own = kairos_tests::free_port();
    let mut lonely = Broker::prepare(
        &[
            "node.id=1",
            &format!(
                "controller.quorum.voters=1@127.0.0.1:{own},2@127.0.0.1:{dead},3@127.0.0.1:{}",
                kairos_tests::free_port()
            ),
            "controller.quorum.startup.timeout.ms=1500",
        ],
        Some(own),
    );
    expect_startup_failure(
        &mut lonely,
        Duration::from_secs(15),
        "voters not answering: 2@127.0.0.1",
    );

    // A second process with a running node's id.
    c.brokers[0].restart();
    let mut twin = Broker::prepare(&["node.id=1", &voters], Some(kairos_tests::free_port()));
    expect_startup_failure(&mut twin, Duration::from_secs(10), "duplicate node id");

    // A data directory from another cluster: node 1 of cluster B starts on cluster A's data.
    let mut a_cluster = Cluster::start(1, FAST);
    assert_eq!(a_cluster.brokers[0].stop(), Some(0));
    let foreign = a_cluster.brokers[0].dir.join("data");
    let mut b_cluster = Cluster::prepare(3, FAST);
    b_cluster.node(2).launch();
    b_cluster.node(3).launch();
    b_cluster.node(2).wait_ready();
    b_cluster.node(3).wait_ready();
    b_cluster
        .node(1)
        .add_override(&format!("log.dirs={}", foreign.display()));
    expect_startup_failure(
        b_cluster.node(1),
        Duration::from_secs(15),
        "belongs to cluster",
    );
    // The same directory under another node id.
    let mut wrong_node = Broker::prepare(
        &["node.id=7", &format!("log.dirs={}", foreign.display())],
        None,
    );
    expect_startup_failure(
        &mut wrong_node,
        Duration::from_secs(10),
        "belongs to another node",
    );
}

#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_codes() {
    // Proves the broker writes plain text when its stderr is a file (as under a supervisor or
    // in a container): no ANSI escape sequences, and the usual level words.
    let mut b = Broker::start(&[]);
    assert_eq!(create_topic(&b, "plain", 1, 1), 0);
    assert_eq!(b.stop(), Some(0));
    let log = b.log();
    assert!(log.contains(" INFO "), "an INFO line is logged:\n{log}");
    assert!(!log.contains('\x1b'), "colour codes in the log:\n{log:?}");
}

#[test]
fn security_settings_kairos_cannot_honour_stop_start_up() {
    // Proves a broker asked for TLS, SASL or ACLs fails closed with one line naming the
    // setting, and never serves that port in plaintext.
    let port = kairos_tests::free_port();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "listeners=SASL_SSL://127.0.0.1:PORT",
                "ssl.keystore.location=/etc/kafka/broker.jks",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
            ],
            "uses security protocol SASL_SSL",
        ),
        (
            &[
                "listeners=EXTERNAL://127.0.0.1:PORT",
                "listener.security.protocol.map=EXTERNAL:SSL,CONTROLLER:PLAINTEXT",
            ],
            "listener EXTERNAL uses security protocol SSL",
        ),
        (
            &[
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users=User:admin",
            ],
            "invalid value \"org.apache.kafka.metadata.authorizer.StandardAuthorizer\" for authorizer.class.name",
        ),
    ];
    for (overrides, needle) in cases {
        let overrides: Vec<String> = overrides
            .iter()
            .map(|o| o.replace("PORT", &port.to_string()))
            .collect();
        let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let mut b = Broker::prepare(&overrides, None);
        expect_startup_failure(&mut b, Duration::from_secs(10), needle);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing may listen on the refused port"
        );
    }
}

#[test]
fn controller_only_and_broker_only_nodes_form_one_cluster() {
    // KRaft's split layout: voters 1-3 run only the quorum, 4 and 5 only serve clients.
    let mut c = Cluster::prepare_split(3, 2, LONG_SESSIONS).start_prepared();
    wait_registered(&c);
    for b in c.broker_nodes() {
        let m = metadata(b).expect("metadata");
        let ids: BTreeSet<i32> = m.brokers.iter().map(|x| x.node_id.0).collect();
        assert_eq!(ids, [4, 5].into(), "clients see only the brokers");
        // KRaft answers a live broker as the controller: clients cannot reach controllers.
        assert!(
            ids.contains(&m.controller_id.0),
            "controller id {} is not a broker",
            m.controller_id.0
        );
    }
    let active = wait_until(Duration::from_secs(5), "one active controller", || {
        let a = active_controllers(&c);
        (a.len() == 1).then(|| a[0])
    });
    assert!((1..=3).contains(&active), "controller {active} is a voter");
    assert!(
        std::net::TcpStream::connect(c.node(1).addr()).is_err(),
        "a controller-only node has no Kafka listener"
    );

    assert_eq!(create_topic(c.node(4), "split", 2, 2), 0);
    let mut acked = produce_acked(&c.bootstrap(), "split", 2, "a", 40);
    let scrape = |b: &Broker| kairos_tests::http_get(&format!("{}/metrics", b.metrics_url())).1;
    let leading: f64 = c
        .broker_nodes()
        .map(|b| {
            kairos_tests::sample(&scrape(b), "kafka_server_replicamanager_leadercount")
                .expect("leadercount")
        })
        .sum();
    assert_eq!(leading, 2.0, "each partition led by one broker");

    // The active controller dies: another voter takes over, metadata writes go on.
    c.node(active).kill9();
    let killed_at = Instant::now();
    let new = wait_until(
        Duration::from_secs(5),
        "a new controller within 5 s",
        || {
            let a = active_controllers(&c);
            (a.len() == 1 && a[0] != active).then(|| a[0])
        },
    );
    eprintln!(
        "controller {active} killed; {new} took over after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(create_topic(c.node(5), "after.failover", 1, 2), 0);
    acked.extend(produce_acked(&c.bootstrap(), "split", 2, "b", 20));

    // A broker dies: the controller-only quorum fences it (its heartbeat stream closed) and
    // the other broker leads everything; acks=all goes on with the shrunken ISR.
    c.node(4).kill9();
    wait_until(Duration::from_secs(5), "broker 4 fenced", || {
        (live_broker_ids(c.node(5))? == [5].into()).then_some(())
    });
    wait_until(Duration::from_secs(5), "broker 5 leads both", || {
        (leaders(c.node(5), "split")? == [5, 5]).then_some(())
    });
    acked.extend(produce_acked(&c.node(5).bootstrap(), "split", 2, "c", 20));

    let got = consume_all(&c.node(5).bootstrap(), "split", 2, acked.len());
    assert_eq!(got, acked, "every acknowledged record, once, at its offset");

    // The restarted broker registers with the quorum again and catches up.
    c.node(4).restart();
    wait_until(Duration::from_secs(10), "broker 4 back", || {
        (live_broker_ids(c.node(5))? == [4, 5].into()).then_some(())
    });
}

#[test]
fn split_role_misconfigurations_fail_fast_with_one_clear_line() {
    let voters = format!(
        "controller.quorum.voters=1@127.0.0.1:{}",
        kairos_tests::free_port()
    );
    // A voter without the controller role.
    let mut b = Broker::prepare(&["node.id=1", "process.roles=broker", &voters], None);
    expect_startup_failure(
        &mut b,
        Duration::from_secs(10),
        "must have the controller role",
    );
    // A controller-only node that lists a client listener (the harness gives it PLAINTEXT).
    let mut b = Broker::prepare(
        &["node.id=1", "process.roles=controller", &voters],
        Some(kairos_tests::free_port()),
    );
    expect_startup_failure(&mut b, Duration::from_secs(10), "serves no Kafka clients");
}
