//! Leader failover after SIGKILL (goal: producing again ≤ 2 s), three release `kairos serve`
//! processes with Kafka's default timings (broker heartbeat 500 ms, session 9 s, election 1 s),
//! a topic with RF=3 and min.insync.replicas=2 (three partitions, one led by each broker), and an
//! idempotent acks=all librdkafka producer with default settings that has written to every
//! partition (so it holds a connection to every broker, as under steady load).
//!
//! Two kinds of kill, each repeated (the victim is restarted and the ISR heals in between):
//! - the partition's leader, not the active controller: the controller fences it when its
//!   heartbeat stream closes;
//! - the active controller that also leads the partition: a new controller is elected first.
//!
//! The figure is the time from the SIGKILL to the producer's first acknowledgement of a record
//! sent to the killed leader's partition just after the kill, so it includes
//! librdkafka's own metadata refresh (a leader scan once a second while a broker is down).
//! Run: `cargo bench -p kairos-tests --bench failover` (rounds per kind: `FAILOVER_ROUNDS`, 8).

use std::time::{Duration, Instant};

use kairos_tests::cluster::{
    create_topic_with, leader_and_isr, metadata, wait_registered, wait_until,
};
use kairos_tests::Cluster;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// librdkafka's log lines on stderr with a Unix timestamp (to line up with the brokers' logs).
struct Stamped;

impl rdkafka::ClientContext for Stamped {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!("rdkafka {:.3} {fac} {line}", t.as_secs_f64());
    }
}

fn main() {
    let rounds: usize = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    // Leadership goes back to the preferred replicas within a second of a restart, so each
    // round finds a partition led by the controller and one led by another broker.
    let mut c = Cluster::start(
        3,
        &[
            "replica.lag.time.max.ms=2000",
            "leader.imbalance.check.interval.seconds=1",
        ],
    );
    wait_registered(&c);
    assert_eq!(
        create_topic_with(
            &c.brokers[0],
            "failover",
            3,
            3,
            &[("min.insync.replicas", "2")]
        ),
        0
    );
    let mut config = ClientConfig::new();
    if let Ok(debug) = std::env::var("FAILOVER_RDKAFKA_DEBUG") {
        // librdkafka's own log (e.g. `broker,topic,metadata,msg`) on stderr, for a slow round.
        config
            .set("debug", debug)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    let producer: FutureProducer<Stamped> = config
        .set("bootstrap.servers", c.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create_with_context(Stamped)
        .expect("producer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let send = |partition: i32, v: &str| {
        rt.block_on(
            producer.send(
                FutureRecord::to("failover")
                    .key(v)
                    .payload(v)
                    .partition(partition),
                Duration::from_secs(30),
            ),
        )
        .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"));
    };
    let mut plain = Vec::new();
    let mut controller_kills = Vec::new();
    for round in 0..rounds * 2 {
        let kill_controller = round % 2 == 1;
        // Steady load has a connection to every broker: wait until each broker leads one
        // partition (the preferred leaders, back within a second of a restart) with every replica
        // in sync, write to all three, then kill the leader of a partition led by (or, for a
        // plain kill, not by) the active controller. Without that, the producer may still be in
        // librdkafka's reconnect backoff (up to reconnect.backoff.max.ms, 10 s) towards the new
        // leader from an earlier round, which measures the client, not the failover.
        let (victim, partition) = wait_until(
            Duration::from_secs(30),
            "balanced leaders, fully in sync",
            || {
                let controller = metadata(&c.brokers[0])?.controller_id.0;
                let mut led = Vec::new();
                for p in 0..3 {
                    let (leader, isr) = leader_and_isr(&c.brokers[0], "failover", p)?;
                    if isr.len() != 3 || led.iter().any(|(l, _)| *l == leader) {
                        return None;
                    }
                    led.push((leader, p));
                }
                led.into_iter()
                    .find(|(leader, _)| (*leader == controller) == kill_controller)
            },
        );
        for i in 0..10 {
            for p in 0..3 {
                send(p, &format!("warm-{round}-{p}-{i}"));
            }
        }
        c.node(victim).kill9();
        let killed = Instant::now();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        send(partition, &format!("after-{round}"));
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        println!(
            "round {round}: killed broker {victim} (leader of failover-{partition}{}) at unix {wall:.3}, producing again after {ms:.0} ms",
            if kill_controller {
                ", the active controller"
            } else {
                ""
            }
        );
        if kill_controller {
            controller_kills.push(ms);
        } else {
            plain.push(ms);
        }
        c.node(victim).restart();
        wait_registered(&c);
    }
    kairos_tests::print_summary("partition leader killed", plain);
    kairos_tests::print_summary(
        "active controller (and partition leader) killed",
        controller_kills,
    );
}
