//! Error codes carried by responses, for `kafka_network_requestmetrics_errors_total`.
//! Fetch counts its own (its response is encoded by hand).

use kafka_protocol::messages::ResponseKind;

/// Calls `f` with every non-zero error code in the response (top level and per item).
pub fn for_each_error(resp: &ResponseKind, mut f: impl FnMut(i16)) {
    let mut e = |code: i16| {
        if code != 0 {
            f(code)
        }
    };
    use ResponseKind as R;
    match resp {
        R::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| e(p.error_code)),
        R::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| e(p.error_code)),
        R::Metadata(r) => r.topics.iter().for_each(|t| e(t.error_code)),
        R::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| e(p.error_code)),
        R::OffsetFetch(r) => {
            e(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| e(p.error_code));
            for g in &r.groups {
                e(g.error_code);
                g.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .for_each(|p| e(p.error_code));
            }
        }
        R::FindCoordinator(r) => {
            e(r.error_code);
            r.coordinators.iter().for_each(|c| e(c.error_code));
        }
        R::JoinGroup(r) => e(r.error_code),
        R::SyncGroup(r) => e(r.error_code),
        R::Heartbeat(r) => e(r.error_code),
        R::LeaveGroup(r) => {
            e(r.error_code);
            r.members.iter().for_each(|m| e(m.error_code));
        }
        R::ListGroups(r) => e(r.error_code),
        R::DescribeGroups(r) => r.groups.iter().for_each(|g| e(g.error_code)),
        R::DeleteGroups(r) => r.results.iter().for_each(|g| e(g.error_code)),
        R::OffsetDelete(r) => {
            e(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| e(p.error_code));
        }
        R::CreateTopics(r) => r.topics.iter().for_each(|t| e(t.error_code)),
        R::DeleteTopics(r) => r.responses.iter().for_each(|t| e(t.error_code)),
        R::CreatePartitions(r) => r.results.iter().for_each(|t| e(t.error_code)),
        R::DescribeConfigs(r) => r.results.iter().for_each(|t| e(t.error_code)),
        R::AlterConfigs(r) => r.responses.iter().for_each(|t| e(t.error_code)),
        R::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|t| e(t.error_code)),
        R::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| e(p.error_code)),
        R::OffsetForLeaderEpoch(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| e(p.error_code)),
        R::DescribeProducers(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| e(p.error_code)),
        R::DescribeTopicPartitions(r) => r.topics.iter().for_each(|t| {
            e(t.error_code);
            t.partitions.iter().for_each(|p| e(p.error_code));
        }),
        R::DescribeLogDirs(r) => {
            e(r.error_code);
            r.results.iter().for_each(|d| e(d.error_code));
        }
        R::InitProducerId(r) => e(r.error_code),
        R::DescribeCluster(r) => e(r.error_code),
        R::ApiVersions(r) => e(r.error_code),
        _ => {}
    }
}
