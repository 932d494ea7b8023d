//! The gRPC admin API (`kairos.admin.v1`) and `kairos delay` CLI against a running broker.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kairos_tests::{kairos_bin, Broker};

fn kairos(b: &Broker, args: &[&str]) -> Output {
    Command::new(kairos_bin())
        .args(["-b", &b.bootstrap(), "--admin-server", &b.admin_addr()])
        .args(args)
        .output()
        .expect("running kairos")
}

fn ok(b: &Broker, args: &[&str]) -> String {
    let out = kairos(b, args);
    assert!(
        out.status.success(),
        "kairos {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(b: &Broker, args: &[&str]) -> String {
    let out = kairos(b, args);
    assert!(!out.status.success(), "kairos {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("kairos: "), "{err}");
    err
}

/// (partition, offset) from "scheduled on T partition P offset O".
fn scheduled(out: &str) -> (i32, i64) {
    let words: Vec<&str> = out.split_whitespace().collect();
    (words[4].parse().unwrap(), words[6].parse().unwrap())
}

/// Rows of `kairos delay ls`: (partition, offset, key).
fn ls(b: &Broker, topic: &str, extra: &[&str]) -> Vec<(i32, i64, String)> {
    let mut args = vec!["delay", "ls", topic];
    args.extend_from_slice(extra);
    ok(b, &args)
        .lines()
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[0].parse().unwrap(),
                w[1].parse().unwrap(),
                w.last().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn cancel_list_and_stats_through_the_cli_and_grpc() {
    // Proves the admin API end to end: scheduled records are listed in due order and counted
    // by bucket; Cancel by key and by (partition, offset) removes them durably (SIGKILL and
    // restart do not bring them back); a late cancel reports "already delivered".
    let mut b = Broker::start(&[]);
    ok(&b, &["topic", "create", "paid", "-p", "2"]);
    ok(
        &b,
        &[
            "topic",
            "create",
            "unpaid",
            "-p",
            "2",
            "-c",
            "kairos.delay.target=paid",
            "-c",
            "kairos.delay.ms=3600000",
        ],
    );
    let mut refs = Vec::new();
    for (i, delay) in ["90s", "2h", "3d", "20m"].iter().enumerate() {
        let key = format!("order-{i}");
        refs.push(scheduled(&ok(
            &b,
            &[
                "delay", "send", "unpaid", "cancel", "--key", &key, "--delay", delay,
            ],
        )));
    }
    let fast = scheduled(&ok(
        &b,
        &[
            "delay",
            "send",
            "unpaid",
            "quick",
            "--key",
            "order-fast",
            "--delay",
            "200ms",
        ],
    ));

    // Listing is in due order; filters by key and due range work; paging is transparent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ls(&b, "unpaid", &[]).len() != 4 {
        assert!(
            Instant::now() < deadline,
            "the fast record was not delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys: Vec<String> = ls(&b, "unpaid", &[]).into_iter().map(|r| r.2).collect();
    assert_eq!(keys, ["order-0", "order-3", "order-1", "order-2"]);
    assert_eq!(ls(&b, "unpaid", &["--key", "order-1"]).len(), 1);
    assert_eq!(ls(&b, "unpaid", &["--limit", "2"]).len(), 2);
    let stats = ok(&b, &["delay", "stats", "unpaid"]);
    for line in [
        "pending        4",
        "due < 1 hour   2",
        "due < 1 day    1",
        "due later      1",
        "forwarded      1",
    ] {
        assert!(stats.contains(line), "{line:?} in:\n{stats}");
    }

    // Cancel by key, by record, and a late cancel of the delivered record.
    assert!(ok(&b, &["delay", "cancel", "unpaid", "--key", "order-1"]).contains("cancelled 1"));
    let (p, o) = refs[2];
    assert!(ok(
        &b,
        &[
            "delay",
            "cancel",
            "unpaid",
            "--partition",
            &p.to_string(),
            "--offset",
            &o.to_string()
        ]
    )
    .contains("cancelled 1"));
    let e = fails(
        &b,
        &[
            "delay",
            "cancel",
            "unpaid",
            "--partition",
            &fast.0.to_string(),
            "--offset",
            &fast.1.to_string(),
        ],
    );
    assert!(e.contains("already delivered"), "{e}");
    let e = fails(&b, &["delay", "cancel", "unpaid", "--key", "no-such-order"]);
    assert!(e.contains("nothing pending"), "{e}");
    let e = fails(&b, &["delay", "stats", "paid"]);
    assert!(e.contains("not a delay topic"), "{e}");
    let e = fails(&b, &["delay", "ls", "missing"]);
    assert!(e.contains("does not exist"), "{e}");

    // Durable: after SIGKILL and restart only the two uncancelled records are pending.
    b.kill9();
    b.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = kairos(&b, &["delay", "ls", "unpaid"]);
        if out.status.success() {
            let keys: Vec<String> = ls(&b, "unpaid", &[]).into_iter().map(|r| r.2).collect();
            assert_eq!(keys, ["order-0", "order-3"]);
            break;
        }
        assert!(Instant::now() < deadline, "admin API did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = ok(&b, &["delay", "stats", "unpaid"]);
    assert!(stats.contains("pending        2"), "{stats}");
}

#[test]
fn grpc_health_and_reflection_answer() {
    // Proves grpcurl-style tools work: the standard health service says SERVING and reflection
    // lists the versioned admin service.
    let b = Broker::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("http://{}", b.admin_addr());
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "kairos.admin.v1.DelayAdmin".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"kairos.admin.v1.DelayAdmin".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
    });
}
