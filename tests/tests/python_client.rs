//! A second, independent client implementation: kafka-python (a port of the Java client's
//! logic) drives producer, consumer-group and admin APIs against a real broker.

use std::process::Command;

use kairos_tests::Broker;

#[test]
fn kafka_python_producer_consumer_and_admin_apis_work() {
    // Proves a non-librdkafka client completes its whole workflow: topic admin, idempotent
    // gzip produce, group consume and commit, group admin, delete records and topics.
    let b = Broker::start(&[]);
    let python = std::env::var("KAIROS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/kafka_python_client.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(b.bootstrap())
        .output()
        .unwrap_or_else(|e| {
            panic!("running {python}: {e} (scripts/test.sh sets KAIROS_PYTHON up)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kafka-python checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
        b.log()
    );
    assert!(
        stdout.contains("all kafka-python checks passed"),
        "{stdout}"
    );
}
