//! A second, independent client implementation: kafka-python (a port of the Java client's
//! logic) drives producer, consumer-group and admin APIs against a real broker.

use kairos_tests::{run_python, Broker};

#[test]
fn kafka_python_producer_consumer_and_admin_apis_work() {
    // Proves a non-librdkafka client completes its whole workflow: topic admin, idempotent
    // gzip produce, group consume and commit, group admin, delete records and topics.
    let b = Broker::start(&[]);
    run_python(
        "kafka_python_client.py",
        &b.bootstrap(),
        "all kafka-python checks passed",
        || format!("broker log:\n{}", b.log()),
    );
}
