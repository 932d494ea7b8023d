//! The scenarios: what a client does, good input and bad, each observed on both brokers.
//! Names are stable: docs/compatibility.md lists the ones that differ, with the reason.

use kafka_protocol::records::Compression;

use super::requests::{batch, batch_with};
use super::{Ctx, Scenario};

const T0: i64 = 1_700_000_000_000;

fn three(c: &mut Ctx, topic: &str) {
    c.produce(
        topic,
        0,
        batch(&[
            ("a", "1", T0 + 1000),
            ("b", "2", T0 + 3000),
            ("c", "3", T0 + 2000),
        ]),
        -1,
    );
}

fn topic_with_records(c: &mut Ctx, topic: &str) {
    c.create_topic(topic, 1, 1, &[]);
    c.await_leader(topic);
    three(c, topic);
}

fn describe_topic(c: &mut Ctx, topic: &str, keys: &[&str]) {
    c.create_topic(topic, 1, 1, &[]);
    c.await_leader(topic);
    c.describe_configs(2, topic, keys);
}

/// A group with one joined and synced member; returns (generation, member id).
fn group_member(c: &mut Ctx, group: &str) -> (i32, String) {
    c.join_and_sync(group)
}

fn long(n: usize) -> String {
    "t".repeat(n)
}

macro_rules! scenarios {
    ($($name:literal, $bad:literal, |$c:ident| $body:block;)*) => {
        /// Every scenario, in run order.
        pub fn all() -> Vec<Scenario> {
            vec![$(Scenario { name: $name, bad_input: $bad, run: |$c: &mut Ctx| $body },)*]
        }
    };
}

scenarios! {
    // ---- Topics: good input ----
    "create_topic_three_partitions", false, |c| {
        c.create_topic("ct3", 3, 1, &[]);
        c.await_leader("ct3");
        c.metadata(&["ct3"], false);
    };
    "create_topic_default_partitions", false, |c| {
        c.create_topic("ctd", -1, -1, &[]);
        c.await_leader("ctd");
        c.metadata(&["ctd"], false);
    };
    "create_topic_with_configs", false, |c| {
        c.create_topic("ctc", 1, 1, &[("retention.ms", "3600000"), ("cleanup.policy", "compact")]);
        c.await_leader("ctc");
        c.describe_configs(2, "ctc", &["retention.ms", "cleanup.policy", "segment.bytes"]);
    };
    "create_topic_validate_only", false, |c| {
        c.create_topic_as("ctv", 2, 1, &[("retention.ms", "1000")], true);
        c.metadata(&["ctv"], false);
    };
    "delete_topic", false, |c| {
        c.create_topic("dt", 1, 1, &[]);
        c.await_leader("dt");
        c.delete_topic("dt");
        c.await_gone("dt");
        c.metadata(&["dt"], false);
    };
    "create_partitions_grow", false, |c| {
        c.create_topic("cpg", 2, 1, &[]);
        c.await_leader("cpg");
        c.create_partitions("cpg", 4, false);
        c.await_partitions("cpg", 4);
        c.metadata(&["cpg"], false);
    };
    "create_partitions_validate_only", false, |c| {
        c.create_topic("cpv", 2, 1, &[]);
        c.await_leader("cpv");
        c.create_partitions("cpv", 5, true);
        c.metadata(&["cpv"], false);
    };
    "describe_topic_retention_defaults", false, |c| {
        describe_topic(c, "dtr", &["retention.ms", "retention.bytes", "segment.bytes", "segment.ms", "segment.jitter.ms", "segment.index.bytes", "local.retention.ms", "local.retention.bytes"]);
    };
    "describe_topic_compaction_defaults", false, |c| {
        describe_topic(c, "dtc", &["cleanup.policy", "delete.retention.ms", "min.compaction.lag.ms", "max.compaction.lag.ms", "min.cleanable.dirty.ratio", "file.delete.delay.ms"]);
    };
    "describe_topic_message_defaults", false, |c| {
        describe_topic(c, "dtm", &["max.message.bytes", "message.timestamp.type", "message.timestamp.before.max.ms", "message.timestamp.after.max.ms", "compression.type", "compression.gzip.level", "compression.zstd.level", "compression.lz4.level"]);
    };
    "describe_topic_replication_defaults", false, |c| {
        describe_topic(c, "dtp", &["min.insync.replicas", "unclean.leader.election.enable", "leader.replication.throttled.replicas", "follower.replication.throttled.replicas"]);
    };
    "describe_topic_flush_defaults", false, |c| {
        describe_topic(c, "dtf", &["flush.messages", "flush.ms", "index.interval.bytes", "preallocate", "message.downconversion.enable"]);
    };
    "describe_topic_all_keys_count", false, |c| {
        c.create_topic("dta", 1, 1, &[]);
        c.await_leader("dta");
        let req = kafka_protocol::messages::DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(kafka_protocol::protocol::StrBytes::from_static_str("dta"))
                .with_configuration_keys(None),
        ]);
        if let Some(r) = c.call(4, &req) {
            let mut names: Vec<String> = r.results.iter().flat_map(|x| x.configs.iter().map(|c| c.name.to_string())).collect();
            names.sort();
            c.note(format!("DescribeConfigs dta all keys: {}", names.join(",")));
        }
    };
    "incremental_alter_set_and_delete", false, |c| {
        c.create_topic("ias", 1, 1, &[("retention.ms", "1000")]);
        c.await_leader("ias");
        c.incremental_alter("ias", &[("max.message.bytes", 0, Some("2048")), ("retention.ms", 1, None)], false);
        c.describe_configs(2, "ias", &["max.message.bytes", "retention.ms"]);
    };
    "incremental_alter_append_and_subtract", false, |c| {
        c.create_topic("iaa", 1, 1, &[]);
        c.await_leader("iaa");
        c.incremental_alter("iaa", &[("cleanup.policy", 2, Some("compact"))], false);
        c.describe_configs(2, "iaa", &["cleanup.policy"]);
        c.incremental_alter("iaa", &[("cleanup.policy", 3, Some("delete"))], false);
        c.describe_configs(2, "iaa", &["cleanup.policy"]);
    };
    "incremental_alter_validate_only", false, |c| {
        c.create_topic("iav", 1, 1, &[]);
        c.await_leader("iav");
        c.incremental_alter("iav", &[("retention.ms", 0, Some("5000"))], true);
        c.describe_configs(2, "iav", &["retention.ms"]);
    };
    "alter_configs_replaces_the_set", false, |c| {
        c.create_topic("acr", 1, 1, &[("retention.ms", "1000"), ("max.message.bytes", "5000")]);
        c.await_leader("acr");
        c.alter_configs("acr", &[("retention.ms", "2000")]);
        c.describe_configs(2, "acr", &["retention.ms", "max.message.bytes"]);
    };
    "describe_broker_configs", false, |c| {
        c.describe_configs(4, "1", &["message.max.bytes", "num.partitions", "log.retention.hours", "log.segment.bytes", "auto.create.topics.enable", "offsets.topic.num.partitions", "log.cleanup.policy", "compression.type"]);
    };
    "describe_broker_dynamic_configs", false, |c| {
        c.describe_configs(4, "1", &["log.retention.ms", "log.cleaner.threads", "max.connections", "unclean.leader.election.enable", "log.message.timestamp.after.max.ms", "log.message.timestamp.before.max.ms"]);
    };
    "metadata_auto_creates_a_topic", false, |c| {
        c.metadata(&["auto-created"], true);
    };

    // ---- Topics: bad input ----
    "create_topic_invalid_characters", true, |c| { c.create_topic("bad/name", 1, 1, &[]); };
    "create_topic_dot", true, |c| { c.create_topic(".", 1, 1, &[]); };
    "create_topic_dot_dot", true, |c| { c.create_topic("..", 1, 1, &[]); };
    "create_topic_name_too_long", true, |c| { c.create_topic(&long(250), 1, 1, &[]); };
    "create_topic_empty_name", true, |c| { c.create_topic("", 1, 1, &[]); };
    "create_topic_zero_partitions", true, |c| { c.create_topic("zp", 0, 1, &[]); };
    "create_topic_negative_partitions", true, |c| { c.create_topic("np", -5, 1, &[]); };
    "create_topic_replication_factor_above_brokers", true, |c| { c.create_topic("rf3", 1, 3, &[]); };
    "create_topic_zero_replication_factor", true, |c| { c.create_topic("rf0", 1, 0, &[]); };
    "create_topic_twice", true, |c| {
        c.create_topic("twice", 1, 1, &[]);
        c.create_topic("twice", 1, 1, &[]);
    };
    "create_topic_colliding_dot_and_underscore", true, |c| {
        c.create_topic("col.lide", 1, 1, &[]);
        c.create_topic("col_lide", 1, 1, &[]);
    };
    "create_topic_unknown_config", true, |c| { c.create_topic("uc", 1, 1, &[("retention.mss", "1")]); };
    "create_topic_non_numeric_config", true, |c| { c.create_topic("nn", 1, 1, &[("retention.ms", "soon")]); };
    "create_topic_invalid_cleanup_policy", true, |c| { c.create_topic("icp", 1, 1, &[("cleanup.policy", "sometimes")]); };
    "create_topic_invalid_compression", true, |c| { c.create_topic("icx", 1, 1, &[("compression.type", "brotli")]); };
    "create_topic_segment_bytes_too_small", true, |c| { c.create_topic("sbs", 1, 1, &[("segment.bytes", "100")]); };
    "create_topic_min_insync_zero", true, |c| { c.create_topic("miz", 1, 1, &[("min.insync.replicas", "0")]); };
    "create_topic_invalid_timestamp_type", true, |c| { c.create_topic("itt", 1, 1, &[("message.timestamp.type", "WallClock")]); };
    "create_topic_negative_retention_bytes_below_minus_one", true, |c| { c.create_topic("nrb", 1, 1, &[("retention.bytes", "-2")]); };
    "create_internal_topic_name", true, |c| {
        // The offsets topic exists once a coordinator was asked for (creating it first, with
        // one partition, would break group coordination for every later scenario).
        c.await_coordinator("g-internal");
        c.create_topic("__consumer_offsets", 1, 1, &[]);
    };
    "delete_unknown_topic", true, |c| { c.delete_topic("never-created"); };
    "create_partitions_decrease", true, |c| {
        c.create_topic("cpd", 3, 1, &[]);
        c.await_leader("cpd");
        c.create_partitions("cpd", 2, false);
    };
    "create_partitions_same_count", true, |c| {
        c.create_topic("cps", 3, 1, &[]);
        c.await_leader("cps");
        c.create_partitions("cps", 3, false);
    };
    "create_partitions_unknown_topic", true, |c| { c.create_partitions("never-created", 3, false); };
    "incremental_alter_unknown_topic", true, |c| {
        c.incremental_alter("never-created", &[("retention.ms", 0, Some("1000"))], false);
    };
    "incremental_alter_invalid_value", true, |c| {
        c.create_topic("iai", 1, 1, &[]);
        c.await_leader("iai");
        c.incremental_alter("iai", &[("retention.ms", 0, Some("soon"))], false);
    };
    "incremental_alter_unknown_key", true, |c| {
        c.create_topic("iau", 1, 1, &[]);
        c.await_leader("iau");
        c.incremental_alter("iau", &[("retention.mss", 0, Some("1"))], false);
    };
    "incremental_alter_append_to_a_scalar", true, |c| {
        c.create_topic("iap", 1, 1, &[]);
        c.await_leader("iap");
        c.incremental_alter("iap", &[("retention.ms", 2, Some("5"))], false);
    };
    "incremental_alter_invalid_operation", true, |c| {
        c.create_topic("iao", 1, 1, &[]);
        c.await_leader("iao");
        c.incremental_alter("iao", &[("retention.ms", 9, Some("5"))], false);
    };
    "alter_configs_invalid_value", true, |c| {
        c.create_topic("aci", 1, 1, &[]);
        c.await_leader("aci");
        c.alter_configs("aci", &[("max.message.bytes", "-5")]);
    };
    "describe_configs_unknown_topic", true, |c| { c.describe_configs(2, "never-created", &["retention.ms"]); };
    "describe_configs_other_broker", true, |c| { c.describe_configs(4, "7", &["message.max.bytes"]); };
    "describe_configs_non_numeric_broker", true, |c| { c.describe_configs(4, "abc", &["message.max.bytes"]); };
    "describe_configs_unknown_key", true, |c| { describe_topic(c, "dck", &["no.such.key"]); };
    "metadata_unknown_topic_without_auto_create", true, |c| { c.metadata(&["never-created"], false); };
    "metadata_auto_create_invalid_name", true, |c| { c.metadata(&["bad/name"], true); };

    // ---- Produce, fetch, offsets: good input ----
    "produce_and_fetch", false, |c| {
        topic_with_records(c, "pf");
        c.fetch("pf", 0, 0, 1 << 20);
    };
    "fetch_from_the_middle_of_a_batch", false, |c| {
        topic_with_records(c, "fm");
        c.fetch("fm", 0, 1, 1 << 20);
    };
    "fetch_at_the_log_end", false, |c| {
        topic_with_records(c, "fe");
        c.fetch("fe", 0, 3, 1 << 20);
    };
    "fetch_one_byte_returns_a_whole_batch", false, |c| {
        topic_with_records(c, "f1");
        three(c, "f1");
        c.fetch("f1", 0, 0, 1);
    };
    "fetch_max_bytes_fills_partitions_in_order", false, |c| {
        // Three partitions of three 3000-byte records, one batch each: a 4000-byte response
        // holds the first partition's first batch (it may exceed max_bytes alone) and nothing
        // that does not fit after it.
        c.create_topic("fmb", 3, 1, &[]);
        c.await_leader("fmb");
        let value = "v".repeat(3000);
        for p in 0..3 {
            for i in 0..3 {
                c.produce("fmb", p, batch(&[("k", &value, T0 + i)]), -1);
            }
        }
        c.fetch_partitions("fmb", &[0, 1, 2], 4000);
        c.fetch_partitions("fmb", &[0, 1, 2], 10_000);
        c.fetch_partitions("fmb", &[2, 0, 1], 100);
    };
    "produce_two_batches_and_fetch_both", false, |c| {
        topic_with_records(c, "p2");
        c.produce("p2", 0, batch(&[("d", "4", T0 + 4000)]), 1);
        c.fetch("p2", 0, 2, 1 << 20);
    };
    "produce_gzip", false, |c| {
        c.create_topic("pgz", 1, 1, &[]);
        c.await_leader("pgz");
        c.produce("pgz", 0, batch_with(&[("k", "gzip-value", T0)], -1, -1, -1, Compression::Gzip), -1);
        c.fetch("pgz", 0, 0, 1 << 20);
    };
    "produce_snappy", false, |c| {
        c.create_topic("psn", 1, 1, &[]);
        c.await_leader("psn");
        c.produce("psn", 0, batch_with(&[("k", "snappy-value", T0)], -1, -1, -1, Compression::Snappy), -1);
        c.fetch("psn", 0, 0, 1 << 20);
    };
    "produce_lz4", false, |c| {
        c.create_topic("plz", 1, 1, &[]);
        c.await_leader("plz");
        c.produce("plz", 0, batch_with(&[("k", "lz4-value", T0)], -1, -1, -1, Compression::Lz4), -1);
        c.fetch("plz", 0, 0, 1 << 20);
    };
    "produce_zstd", false, |c| {
        c.create_topic("pzs", 1, 1, &[]);
        c.await_leader("pzs");
        c.produce("pzs", 0, batch_with(&[("k", "zstd-value", T0)], -1, -1, -1, Compression::Zstd), -1);
        c.fetch("pzs", 0, 0, 1 << 20);
    };
    "produce_acks_zero_then_fetch", false, |c| {
        c.create_topic("pa0", 1, 1, &[]);
        c.await_leader("pa0");
        c.produce("pa0", 0, batch(&[("k", "v", T0)]), 0);
        c.await_end_offset("pa0", 0, 1);
        c.fetch("pa0", 0, 0, 1 << 20);
    };
    "list_offsets_latest_earliest_max_timestamp", false, |c| {
        topic_with_records(c, "lo");
        c.list_offsets("lo", 0, -1);
        c.list_offsets("lo", 0, -2);
        c.list_offsets("lo", 0, -3);
    };
    "list_offsets_by_timestamp", false, |c| {
        topic_with_records(c, "lt");
        c.list_offsets("lt", 0, T0 + 1500);
        c.list_offsets("lt", 0, T0 + 3000);
        c.list_offsets("lt", 0, T0 + 99_000);
        c.list_offsets("lt", 0, 0);
    };
    "list_offsets_of_an_empty_partition", false, |c| {
        c.create_topic("le", 1, 1, &[]);
        c.await_leader("le");
        c.list_offsets("le", 0, -1);
        c.list_offsets("le", 0, -2);
        c.list_offsets("le", 0, -3);
    };
    "delete_records_then_fetch_and_list", false, |c| {
        topic_with_records(c, "dr");
        c.delete_records("dr", 0, 2);
        c.fetch("dr", 0, 0, 1 << 20);
        c.fetch("dr", 0, 2, 1 << 20);
        c.list_offsets("dr", 0, -2);
    };
    "delete_records_to_the_high_watermark", false, |c| {
        topic_with_records(c, "dh");
        c.delete_records("dh", 0, -1);
        c.list_offsets("dh", 0, -2);
    };
    "idempotent_produce_sequences", false, |c| {
        c.create_topic("ip", 1, 1, &[]);
        c.await_leader("ip");
        let (pid, epoch) = c.init_producer_id();
        c.produce("ip", 0, batch_with(&[("a", "1", T0), ("b", "2", T0)], pid, epoch, 0, Compression::None), -1);
        c.produce("ip", 0, batch_with(&[("c", "3", T0)], pid, epoch, 2, Compression::None), -1);
        c.produce("ip", 0, batch_with(&[("a", "1", T0), ("b", "2", T0)], pid, epoch, 0, Compression::None), -1);
        c.list_offsets("ip", 0, -1);
    };
    "init_producer_id", false, |c| { c.init_producer_id(); };

    // ---- Produce, fetch, offsets: bad input ----
    "produce_unknown_topic", true, |c| { c.produce("never-created", 0, batch(&[("k", "v", T0)]), -1); };
    "produce_unknown_partition", true, |c| {
        c.create_topic("pup", 1, 1, &[]);
        c.await_leader("pup");
        c.produce("pup", 5, batch(&[("k", "v", T0)]), -1);
    };
    "produce_invalid_acks", true, |c| {
        c.create_topic("pia", 1, 1, &[]);
        c.await_leader("pia");
        c.produce("pia", 0, batch(&[("k", "v", T0)]), 2);
    };
    "produce_record_too_large", true, |c| {
        c.create_topic("ptl", 1, 1, &[("max.message.bytes", "200")]);
        c.await_leader("ptl");
        let big = "x".repeat(500);
        c.produce("ptl", 0, batch(&[("k", &big, T0)]), -1);
        c.list_offsets("ptl", 0, -1);
    };
    "produce_corrupt_crc", true, |c| {
        c.create_topic("pcc", 1, 1, &[]);
        c.await_leader("pcc");
        let mut b = batch(&[("k", "v", T0)]).to_vec();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        c.produce("pcc", 0, bytes::Bytes::from(b), -1);
        c.list_offsets("pcc", 0, -1);
    };
    "produce_timestamp_two_hours_ahead", true, |c| {
        c.create_topic("pft", 1, 1, &[]);
        c.await_leader("pft");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        c.produce("pft", 0, batch(&[("k", "v", now + 2 * 3_600_000)]), -1);
    };
    "produce_timestamp_older_than_allowed", true, |c| {
        c.create_topic("pot", 1, 1, &[("message.timestamp.before.max.ms", "60000")]);
        c.await_leader("pot");
        c.produce("pot", 0, batch(&[("k", "v", T0)]), -1);
    };
    "produce_null_key_to_a_compacted_topic", true, |c| {
        c.create_topic("pnk", 1, 1, &[("cleanup.policy", "compact")]);
        c.await_leader("pnk");
        c.produce("pnk", 0, batch(&[("", "v", T0)]), -1);
    };
    "produce_out_of_order_sequence", true, |c| {
        c.create_topic("poo", 1, 1, &[]);
        c.await_leader("poo");
        let (pid, epoch) = c.init_producer_id();
        c.produce("poo", 0, batch_with(&[("a", "1", T0)], pid, epoch, 0, Compression::None), -1);
        c.produce("poo", 0, batch_with(&[("b", "2", T0)], pid, epoch, 5, Compression::None), -1);
    };
    "produce_unknown_producer_nonzero_sequence", true, |c| {
        c.create_topic("pun", 1, 1, &[]);
        c.await_leader("pun");
        c.produce("pun", 0, batch_with(&[("a", "1", T0)], 4242, 0, 7, Compression::None), -1);
    };
    "fetch_beyond_the_log_end", true, |c| {
        topic_with_records(c, "fb");
        c.fetch("fb", 0, 100, 1 << 20);
    };
    "fetch_negative_offset", true, |c| {
        topic_with_records(c, "fn");
        c.fetch("fn", 0, -5, 1 << 20);
    };
    "fetch_unknown_topic", true, |c| { c.fetch("never-created", 0, 0, 1 << 20); };
    "fetch_unknown_partition", true, |c| {
        c.create_topic("fup", 1, 1, &[]);
        c.await_leader("fup");
        c.fetch("fup", 3, 0, 1 << 20);
    };
    "fetch_with_a_future_leader_epoch", true, |c| {
        topic_with_records(c, "ffe");
        c.fetch_epoch("ffe", 0, 0, 1 << 20, 99);
    };
    "list_offsets_unknown_topic", true, |c| { c.list_offsets("never-created", 0, -1); };
    "list_offsets_unknown_partition", true, |c| {
        c.create_topic("lup", 1, 1, &[]);
        c.await_leader("lup");
        c.list_offsets("lup", 4, -1);
    };
    "list_offsets_invalid_timestamp_spec", true, |c| {
        topic_with_records(c, "lit");
        c.list_offsets("lit", 0, -7);
    };
    "delete_records_beyond_the_high_watermark", true, |c| {
        topic_with_records(c, "dbh");
        c.delete_records("dbh", 0, 50);
    };
    "delete_records_unknown_partition", true, |c| {
        c.create_topic("dup", 1, 1, &[]);
        c.await_leader("dup");
        c.delete_records("dup", 2, 0);
    };

    // ---- Consumer groups: good input ----
    "join_without_member_id_gets_one", false, |c| {
        c.join_group("g-join", "", None, "consumer", 10_000);
    };
    "join_sync_heartbeat_describe_leave", false, |c| {
        let (generation, member) = group_member(c, "g-flow");
        c.heartbeat("g-flow", generation, &member);
        c.describe_group("g-flow");
        c.leave_group("g-flow", &member);
        c.describe_group("g-flow");
    };
    "static_member_joins_with_an_instance_id", false, |c| {
        c.join_group("g-static", "", Some("instance-1"), "consumer", 10_000);
        c.describe_group("g-static");
    };
    "commit_and_fetch_offsets_as_a_member", false, |c| {
        topic_with_records(c, "gco");
        let (generation, member) = group_member(c, "g-commit");
        c.offset_commit("g-commit", (generation, &member), "gco", 0, 2, Some("meta"));
        c.offset_fetch("g-commit", Some(("gco", &[0])));
        c.offset_fetch("g-commit", None);
    };
    "commit_offsets_without_a_group_generation", false, |c| {
        topic_with_records(c, "gsc");
        c.offset_commit("g-simple", (-1, ""), "gsc", 0, 1, None);
        c.offset_fetch("g-simple", Some(("gsc", &[0])));
        c.describe_group("g-simple");
    };
    "offset_fetch_of_an_uncommitted_partition", false, |c| {
        topic_with_records(c, "gun");
        c.offset_fetch("g-nothing", Some(("gun", &[0])));
    };
    "describe_an_unknown_group", false, |c| { c.describe_group("g-never"); };
    "delete_an_empty_group", false, |c| {
        topic_with_records(c, "gde");
        c.offset_commit("g-empty", (-1, ""), "gde", 0, 1, None);
        c.delete_group("g-empty");
        c.describe_group("g-empty");
    };
    "offset_delete_of_an_empty_group", false, |c| {
        topic_with_records(c, "god");
        c.offset_commit("g-odel", (-1, ""), "god", 0, 1, None);
        c.offset_delete("g-odel", "god", 0);
        c.offset_fetch("g-odel", Some(("god", &[0])));
    };
    "find_coordinator", false, |c| { c.find_coordinator("g-coordinator"); };

    // ---- Consumer groups: bad input ----
    "heartbeat_unknown_member", true, |c| {
        group_member(c, "g-hum");
        c.heartbeat("g-hum", 1, "no-such-member");
    };
    "heartbeat_wrong_generation", true, |c| {
        let (generation, member) = group_member(c, "g-hwg");
        c.heartbeat("g-hwg", generation + 5, &member);
    };
    "heartbeat_unknown_group", true, |c| { c.heartbeat("g-never-hb", 1, "m"); };
    "sync_wrong_generation", true, |c| {
        let (generation, member) = group_member(c, "g-swg");
        c.sync_group("g-swg", generation + 3, &member, false);
    };
    "commit_wrong_generation", true, |c| {
        topic_with_records(c, "gcw");
        let (generation, member) = group_member(c, "g-cwg");
        c.offset_commit("g-cwg", (generation + 1, &member), "gcw", 0, 1, None);
    };
    "commit_unknown_member", true, |c| {
        topic_with_records(c, "gcu");
        let (generation, _) = group_member(c, "g-cum");
        c.offset_commit("g-cum", (generation, "no-such-member"), "gcu", 0, 1, None);
    };
    "commit_metadata_too_large", true, |c| {
        topic_with_records(c, "gml");
        let big = "m".repeat(5000);
        c.offset_commit("g-meta", (-1, ""), "gml", 0, 1, Some(&big));
    };
    "commit_to_an_unknown_topic", true, |c| {
        c.offset_commit("g-unknown-topic", (-1, ""), "never-created", 0, 1, None);
    };
    "join_with_a_too_short_session_timeout", true, |c| {
        c.join_group("g-short", "", None, "consumer", 1);
    };
    "join_with_a_too_long_session_timeout", true, |c| {
        c.join_group("g-long", "", None, "consumer", 3_600_000);
    };
    "join_with_an_inconsistent_protocol_type", true, |c| {
        group_member(c, "g-ipt");
        c.join_group("g-ipt", "", None, "connect", 10_000);
    };
    "join_with_an_empty_group_id", true, |c| { c.join_group("", "", None, "consumer", 10_000); };
    "join_with_an_unknown_member_id", true, |c| {
        c.join_group("g-jum", "not-a-member", None, "consumer", 10_000);
    };
    "leave_with_an_unknown_member", true, |c| {
        group_member(c, "g-lum");
        c.leave_group("g-lum", "no-such-member");
    };
    "delete_a_non_empty_group", true, |c| {
        group_member(c, "g-dne");
        c.delete_group("g-dne");
    };
    "delete_an_unknown_group", true, |c| { c.delete_group("g-never-deleted"); };
    "offset_delete_unknown_group", true, |c| { c.offset_delete("g-never-od", "t", 0); };

    // ---- Partition administration ----
    "elect_preferred_leader_already_leading", false, |c| {
        c.create_topic("epl", 1, 1, &[]);
        c.await_leader("epl");
        c.elect_preferred("epl", 0);
    };
    "list_reassignments_when_none", false, |c| { c.list_reassignments(); };
    "reassign_to_the_same_replica", false, |c| {
        c.create_topic("rsr", 1, 1, &[]);
        c.await_leader("rsr");
        c.reassign("rsr", 0, Some(vec![1]));
        c.await_no_reassignment();
        c.list_reassignments();
    };
    "elect_leader_unknown_topic", true, |c| { c.elect_preferred("never-created", 0); };
    "reassign_to_an_unknown_broker", true, |c| {
        c.create_topic("rub", 1, 1, &[]);
        c.await_leader("rub");
        c.reassign("rub", 0, Some(vec![7]));
    };
    "reassign_with_duplicate_replicas", true, |c| {
        c.create_topic("rdr", 1, 1, &[]);
        c.await_leader("rdr");
        c.reassign("rdr", 0, Some(vec![1, 1]));
    };
    "cancel_a_reassignment_that_is_not_running", true, |c| {
        c.create_topic("rcn", 1, 1, &[]);
        c.await_leader("rcn");
        c.reassign("rcn", 0, None);
    };
    "reassign_unknown_topic", true, |c| { c.reassign("never-created", 0, Some(vec![1])); };
}
