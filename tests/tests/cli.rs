//! The admin CLI (`kairos topic|produce|consume|group|perf`) run as a subprocess against a real
//! broker: what it prints, what it changes, and how it fails (one `kairos: ...` line, exit 1).

use std::time::Duration;

use kairos_tests::{free_port, run_kairos, Broker, CliOut};

/// `kairos -b <broker> <args>` with empty stdin and a 60 s bound.
fn kairos(b: &Broker, args: &[&str]) -> CliOut {
    let bootstrap = b.bootstrap();
    let mut all = vec!["-b", bootstrap.as_str()];
    all.extend_from_slice(args);
    run_kairos(&all, "", Duration::from_secs(60))
}

/// `kairos -b <broker> produce <args>` with `lines` on stdin.
fn produce(b: &Broker, args: &[&str], lines: &str) -> CliOut {
    let bootstrap = b.bootstrap();
    let mut all = vec!["-b", bootstrap.as_str(), "produce"];
    all.extend_from_slice(args);
    run_kairos(&all, lines, Duration::from_secs(60))
}

/// The `topic describe` output parsed: partition count, config overrides, per-partition rows
/// (partition, log start, high watermark).
struct Described {
    partition_count: usize,
    configs: Vec<String>,
    rows: Vec<(i32, i64, i64)>,
}

fn describe(b: &Broker, topic: &str) -> Described {
    let out = kairos(b, &["topic", "describe", topic]).ok("topic describe");
    let mut d = Described {
        partition_count: usize::MAX,
        configs: Vec::new(),
        rows: Vec::new(),
    };
    for line in out.lines() {
        if let Some(rest) = line.split("PartitionCount:").nth(1) {
            d.partition_count = rest.trim().parse().expect("partition count");
        } else if let Some(rest) = line.strip_prefix("Configs:") {
            d.configs = rest
                .trim()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        } else {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(Ok(p)), Some(Ok(lo)), Some(Ok(hi))) = (
                f.first().map(|s| s.parse::<i32>()),
                f.get(2).map(|s| s.parse::<i64>()),
                f.get(3).map(|s| s.parse::<i64>()),
            ) {
                d.rows.push((p, lo, hi));
            }
        }
    }
    assert_ne!(
        d.partition_count,
        usize::MAX,
        "no PartitionCount in:\n{}",
        out.stdout
    );
    d
}

/// `topic list` as (name, partitions).
fn list_topics(b: &Broker) -> Vec<(String, usize)> {
    kairos(b, &["topic", "list"])
        .ok("topic list")
        .lines()
        .iter()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?))
        })
        .collect()
}

/// `group describe` rows as (topic, partition, current, log-end, lag).
fn group_rows(b: &Broker, group: &str) -> Vec<(String, i32, i64, i64, i64)> {
    let out = kairos(b, &["group", "describe", group]).ok("group describe");
    assert!(
        out.stdout.contains("CURRENT-OFFSET")
            && out.stdout.contains("LOG-END-OFFSET")
            && out.stdout.contains("LAG"),
        "group describe header missing:\n{}",
        out.stdout
    );
    out.lines()
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 5 {
                return None;
            }
            Some((
                f[0].to_string(),
                f[1].parse().ok()?,
                f[2].parse().ok()?,
                f[3].parse().ok()?,
                f[4].parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn topic_lifecycle_create_list_describe_alter_delete() {
    // Proves create/list/describe/alter/delete each change and report the topic as asked.
    let b = Broker::start(&[]);
    let out = kairos(
        &b,
        &[
            "topic",
            "create",
            "life",
            "-p",
            "3",
            "-c",
            "retention.ms=1000",
        ],
    )
    .ok("topic create");
    assert!(out.stdout.contains("Created topic life"), "{}", out.stdout);

    let topics = list_topics(&b);
    assert!(
        topics.contains(&("life".to_string(), 3)),
        "list: {topics:?}"
    );

    let d = describe(&b, "life");
    assert_eq!(d.partition_count, 3);
    assert_eq!(d.configs, vec!["retention.ms=1000".to_string()]);
    let parts: Vec<i32> = d.rows.iter().map(|r| r.0).collect();
    assert_eq!(parts, vec![0, 1, 2], "per-partition rows");
    assert!(d.rows.iter().all(|r| r.1 == 0 && r.2 == 0), "{:?}", d.rows);

    kairos(
        &b,
        &[
            "topic",
            "alter",
            "life",
            "-p",
            "5",
            "-c",
            "cleanup.policy=compact",
            "--delete-config",
            "retention.ms",
        ],
    )
    .ok("topic alter");
    let d = describe(&b, "life");
    assert_eq!(d.partition_count, 5);
    assert_eq!(d.configs, vec!["cleanup.policy=compact".to_string()]);
    assert_eq!(
        d.rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(list_topics(&b).contains(&("life".to_string(), 5)));

    let out = kairos(&b, &["topic", "delete", "life"]).ok("topic delete");
    assert!(out.stdout.contains("Deleted topic life"), "{}", out.stdout);
    let topics = list_topics(&b);
    assert!(topics.iter().all(|(n, _)| n != "life"), "list: {topics:?}");
}

#[test]
fn connection_options_work_after_the_subcommand_too() {
    // Proves -b and -X are global: accepted after the subcommand as well as before it.
    let b = Broker::start(&[]);
    let bootstrap = b.bootstrap();
    run_kairos(
        &[
            "topic",
            "create",
            "late",
            "-p",
            "2",
            "-b",
            &bootstrap,
            "-X",
            "client.id=cli-test",
        ],
        "",
        Duration::from_secs(60),
    )
    .ok("create with -b after the subcommand");
    assert!(list_topics(&b).contains(&("late".to_string(), 2)));
}

#[test]
fn produce_and_consume_keys_headers_offsets_timestamps_partitions() {
    // Proves produce splits keys and adds headers, and consume's start options and print flags.
    let b = Broker::start(&[]);
    kairos(&b, &["topic", "create", "pc", "-p", "1"]).ok("create pc");
    let args = ["pc", "--key-separator", ":", "--header", "h1=v1"];
    let out = produce(&b, &args, "k0:v0\nk1:v1\nk2:v2\n").ok("produce 0..3");
    assert!(out.stderr.contains("Produced 3 records"), "{}", out.stderr);
    // A gap so that records 3 and 4 have later timestamps than 0..2.
    std::thread::sleep(Duration::from_millis(50));
    produce(&b, &args, "k3:v3\nk4:v4\n").ok("produce 3..5");

    let out = kairos(
        &b,
        &[
            "consume",
            "pc",
            "--from-beginning",
            "--print-key",
            "--print-headers",
            "--print-partition",
            "--print-offset",
            "--max-messages",
            "5",
            "--timeout-ms",
            "10000",
        ],
    )
    .ok("consume from beginning");
    let want: Vec<String> = (0..5)
        .map(|i| format!("Partition:0\tOffset:{i}\th1:v1\tk{i}\tv{i}"))
        .collect();
    assert_eq!(out.lines(), want);
    assert!(
        out.stderr.contains("Processed a total of 5 messages"),
        "{}",
        out.stderr
    );

    // --offset 3: records 3 and 4 and nothing else (waits out the idle timeout).
    let out = kairos(
        &b,
        &[
            "consume",
            "pc",
            "--offset",
            "3",
            "--print-offset",
            "--max-messages",
            "5",
            "--timeout-ms",
            "1500",
        ],
    )
    .ok("consume --offset 3");
    assert_eq!(out.lines(), vec!["Offset:3\tv3", "Offset:4\tv4"]);

    // --timestamp between record 2 and record 3.
    let out = kairos(
        &b,
        &[
            "consume",
            "pc",
            "--from-beginning",
            "--print-timestamp",
            "--max-messages",
            "5",
            "--timeout-ms",
            "10000",
        ],
    )
    .ok("consume with timestamps");
    let ts: Vec<i64> = out
        .lines()
        .iter()
        .map(|l| {
            l.strip_prefix("CreateTime:")
                .and_then(|r| r.split('\t').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("no CreateTime in {l:?}"))
        })
        .collect();
    assert_eq!(ts.len(), 5);
    assert!(ts[3] > ts[2], "timestamps {ts:?}");
    let between = (ts[2] + 1).to_string();
    let out = kairos(
        &b,
        &[
            "consume",
            "pc",
            "--timestamp",
            &between,
            "--print-offset",
            "--max-messages",
            "5",
            "--timeout-ms",
            "1500",
        ],
    )
    .ok("consume --timestamp");
    assert_eq!(out.lines(), vec!["Offset:3\tv3", "Offset:4\tv4"]);
    let first = ts[0].to_string();
    let out = kairos(
        &b,
        &[
            "consume",
            "pc",
            "--timestamp",
            &first,
            "--max-messages",
            "5",
            "--timeout-ms",
            "10000",
        ],
    )
    .ok("consume --timestamp first");
    assert_eq!(out.lines(), vec!["v0", "v1", "v2", "v3", "v4"]);

    // --partition: only that partition's records; produce --partition puts them there.
    kairos(&b, &["topic", "create", "pp", "-p", "2"]).ok("create pp");
    produce(&b, &["pp", "--partition", "1"], "one-a\none-b\n").ok("produce p1");
    produce(&b, &["pp", "--partition", "0"], "zero-a\n").ok("produce p0");
    let out = kairos(
        &b,
        &[
            "consume",
            "pp",
            "--partition",
            "1",
            "--from-beginning",
            "--print-partition",
            "--print-headers",
            "--print-key",
            "--max-messages",
            "5",
            "--timeout-ms",
            "1500",
        ],
    )
    .ok("consume --partition 1");
    assert_eq!(
        out.lines(),
        vec![
            "Partition:1\tNO_HEADERS\tnull\tone-a",
            "Partition:1\tNO_HEADERS\tnull\tone-b"
        ]
    );
    let out = kairos(
        &b,
        &[
            "consume",
            "pp",
            "--partition",
            "7",
            "--max-messages",
            "1",
            "--timeout-ms",
            "1000",
        ],
    );
    out.fails_with("consume --partition 7", "no partition 7");
}

#[test]
fn groups_describe_lag_reset_offsets_and_delete() {
    // Proves a group consume commits what it printed, and describe/reset-offsets/delete on it.
    let b = Broker::start(&[]);
    kairos(&b, &["topic", "create", "gt", "-p", "1"]).ok("create gt");
    produce(&b, &["gt"], "v0\nv1\nv2\nv3\nv4\n").ok("produce");
    let out = kairos(
        &b,
        &[
            "consume",
            "gt",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "20000",
        ],
    )
    .ok("group consume");
    assert_eq!(out.lines(), vec!["v0", "v1", "v2"]);

    let out = kairos(&b, &["group", "list"]).ok("group list");
    assert!(
        out.lines()
            .iter()
            .any(|l| l.split_whitespace().next() == Some("g")),
        "group list:\n{}",
        out.stdout
    );

    // Committed 3 (the records printed), not the 5 the client had prefetched.
    assert_eq!(group_rows(&b, "g"), vec![("gt".into(), 0, 3, 5, 2)]);

    let reset = |extra: &[&str]| {
        let mut a = vec!["group", "reset-offsets", "g", "--topic", "gt"];
        a.extend_from_slice(extra);
        kairos(&b, &a).ok("reset-offsets")
    };
    let out = reset(&["--to-earliest"]);
    assert!(
        out.lines()
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["g", "gt", "0", "0"]),
        "dry-run plan:\n{}",
        out.stdout
    );
    assert_eq!(
        group_rows(&b, "g"),
        vec![("gt".into(), 0, 3, 5, 2)],
        "dry run changed nothing"
    );
    reset(&["--to-earliest", "--execute"]);
    assert_eq!(group_rows(&b, "g"), vec![("gt".into(), 0, 0, 5, 5)]);
    reset(&["--to-offset", "4", "--execute"]);
    assert_eq!(group_rows(&b, "g"), vec![("gt".into(), 0, 4, 5, 1)]);

    // The group resumes from the reset offset.
    let out = kairos(
        &b,
        &[
            "consume",
            "gt",
            "--group",
            "g",
            "--max-messages",
            "1",
            "--timeout-ms",
            "20000",
        ],
    )
    .ok("resume after reset");
    assert_eq!(out.lines(), vec!["v4"]);
    assert_eq!(group_rows(&b, "g"), vec![("gt".into(), 0, 5, 5, 0)]);

    let out = kairos(&b, &["group", "delete", "g"]).ok("group delete");
    assert!(out.stdout.contains("Deleted group g"), "{}", out.stdout);
    kairos(&b, &["group", "describe", "g"]).fails_with("describe deleted group", "does not exist");
    kairos(&b, &["group", "delete", "g"]).fails_with("delete deleted group", "does not exist");
}

#[test]
fn errors_are_one_clear_line_and_a_non_zero_exit() {
    // Proves every failure is one `kairos:` line naming the problem, with a non-zero exit.
    let b = Broker::start(&[]);
    kairos(&b, &["topic", "create", "exists", "-p", "1"]).ok("create");
    kairos(&b, &["topic", "create", "exists"]).fails_with("create existing", "already exists");
    kairos(&b, &["topic", "describe", "nosuch"]).fails_with("describe unknown", "does not exist");
    kairos(&b, &["topic", "delete", "nosuch"]).fails_with("delete unknown", "does not exist");
    kairos(&b, &["topic", "create", "x1", "-c", "badconfig"])
        .fails_with("config without =", "expected key=value");
    kairos(&b, &["topic", "create", "x2", "-c", "no.such=1"])
        .fails_with("unknown config", "Unknown topic config");
    kairos(&b, &["topic", "create", "x3", "-c", "retention.ms=soon"])
        .fails_with("bad config value", "retention.ms");
    kairos(&b, &["topic", "create", "bad/name"]).fails_with("invalid name", "illegal");
    kairos(&b, &["topic", "alter", "nosuch", "-c", "retention.ms=5"])
        .fails_with("alter unknown topic", "does not exist");
    // AlterConfigs errors were dropped by the client library: a rejected change looked applied.
    kairos(&b, &["topic", "alter", "exists", "-c", "no.such=1"])
        .fails_with("alter unknown config", "Unknown topic config");
    kairos(&b, &["topic", "alter", "exists", "-p", "1"])
        .fails_with("shrink partitions", "cannot add partitions");
    assert!(describe(&b, "exists").configs.is_empty());
    kairos(&b, &["group", "describe", "nosuch"])
        .fails_with("describe unknown group", "does not exist");
    kairos(
        &b,
        &[
            "consume",
            "nosuch",
            "--max-messages",
            "1",
            "--timeout-ms",
            "1000",
        ],
    )
    .fails_with("consume unknown topic", "does not exist");
    produce(
        &b,
        &["exists", "--key-separator", ":"],
        "no separator here\n",
    )
    .fails_with("line without key separator", "key separator");
    produce(
        &b,
        &[
            "exists",
            "--partition",
            "9",
            "-X",
            "message.timeout.ms=3000",
        ],
        "x\n",
    )
    .fails_with("produce to a missing partition", "not delivered");

    // Nothing listens on the port: fails within seconds, naming the address and the cause.
    let dead = format!("127.0.0.1:{}", free_port());
    let fast = [
        "-X",
        "socket.timeout.ms=2000",
        "-X",
        "metadata.request.timeout.ms=2000",
        "-X",
        "message.timeout.ms=2000",
    ];
    for cmd in [
        &["topic", "list"][..],
        &["topic", "create", "t"],
        &["topic", "describe", "t"],
        &["group", "list"],
        &["produce", "t"],
    ] {
        let mut args = vec!["-b", dead.as_str()];
        args.extend_from_slice(&fast);
        args.extend_from_slice(cmd);
        let out = run_kairos(&args, "x\n", Duration::from_secs(30));
        out.fails_with(&format!("{cmd:?} against {dead}"), "cannot reach");
        assert!(
            out.stderr.contains(&dead),
            "names the address: {}",
            out.stderr
        );
        assert!(
            out.elapsed < Duration::from_secs(15),
            "{cmd:?} took {:?}",
            out.elapsed
        );
    }
}

#[test]
fn perf_tools_print_the_kafka_columns() {
    // Proves perf produce/consume/e2e finish and print the columns of Kafka's perf tools.
    let b = Broker::start(&[]);
    kairos(&b, &["topic", "create", "perf", "-p", "2"]).ok("create perf");
    let out = kairos(
        &b,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--num-records",
            "20000",
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--producer-props",
            "acks=1",
        ],
    )
    .ok("perf produce");
    let last = out.lines().last().copied().unwrap_or_default().to_string();
    assert!(last.starts_with("20000 records sent, "), "{last}");
    for col in [
        "records/sec",
        "MB/sec",
        "ms avg latency",
        "ms max latency",
        "ms 50th",
        "ms 95th",
        "ms 99th",
        "ms 99.9th",
    ] {
        assert!(last.contains(col), "missing {col:?} in {last}");
    }
    let hw: i64 = describe(&b, "perf").rows.iter().map(|r| r.2).sum();
    assert_eq!(hw, 20000, "records in the topic");

    let out = kairos(
        &b,
        &["perf", "consume", "--topic", "perf", "--messages", "20000"],
    )
    .ok("perf consume");
    let lines = out.lines();
    assert_eq!(
        lines.first().copied(),
        Some("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"),
        "{}",
        out.stdout
    );
    let data: Vec<&str> = lines.get(1).expect("data line").split(", ").collect();
    assert_eq!(data.len(), 10, "{data:?}");
    assert_eq!(data[4], "20000", "nMsg in {data:?}");
    let mb: f64 = data[2].parse().expect("MB");
    assert!((mb - 20000.0 * 100.0 / 1048576.0).abs() < 1e-3, "MB {mb}");

    kairos(&b, &["topic", "create", "e2e", "-p", "1"]).ok("create e2e");
    let out = kairos(
        &b,
        &[
            "perf",
            "e2e",
            "--topic",
            "e2e",
            "--num-records",
            "2000",
            "--throughput",
            "2000",
        ],
    )
    .ok("perf e2e");
    let last = out.lines().last().copied().unwrap_or_default().to_string();
    assert!(last.starts_with("2000 records, "), "{last}");
    for col in [
        "end-to-end latency",
        "ms avg",
        "ms 50th",
        "ms 95th",
        "ms 99th",
        "ms 99.9th",
        "ms max",
    ] {
        assert!(last.contains(col), "missing {col:?} in {last}");
    }
}

#[test]
fn perf_produce_reports_progress_during_long_runs() {
    // Proves the periodic progress lines (every 5 s by default) appear on stderr during a run.
    let b = Broker::start(&[]);
    kairos(&b, &["topic", "create", "prog", "-p", "1"]).ok("create prog");
    let out = kairos(
        &b,
        &[
            "perf",
            "produce",
            "--topic",
            "prog",
            "--num-records",
            "6000",
            "--record-size",
            "10",
            "--throughput",
            "5000",
            "--reporting-interval",
            "200",
        ],
    )
    .ok("perf produce with progress");
    let progress: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("records sent") && l.contains("records/sec"))
        .collect();
    assert!(
        !progress.is_empty(),
        "no progress line on stderr:\n{}",
        out.stderr
    );
    assert!(out.stdout.contains("6000 records sent"), "{}", out.stdout);
}
