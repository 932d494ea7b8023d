//! ApiVersions: the table of what this broker answers.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::ApiKey;

/// (min, max) version this broker answers for each API, or None when it does not serve it.
/// Minimum versions are Apache Kafka 4.4's (KIP-896 removed old versions). Produce is advertised
/// from v0 as Kafka 4 does (KAFKA-18659: librdkafka turns compression off unless v0 is listed),
/// but v0–v2 requests are answered UNSUPPORTED_VERSION; maxima are those implemented here.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    use ApiKey::*;
    Some(match key {
        Produce => (0, 11),
        Fetch => (4, 16),
        ListOffsets => (1, 8),
        Metadata => (0, 12),
        OffsetCommit => (2, 8),
        OffsetFetch => (1, 8),
        FindCoordinator => (0, 4),
        JoinGroup => (0, 9),
        Heartbeat => (0, 4),
        LeaveGroup => (0, 5),
        SyncGroup => (0, 5),
        DescribeGroups => (0, 5),
        ListGroups => (0, 4),
        ApiVersions => (0, 3),
        CreateTopics => (2, 7),
        DeleteTopics => (1, 6),
        DeleteRecords => (0, 2),
        InitProducerId => (0, 4),
        OffsetForLeaderEpoch => (2, 4),
        DescribeConfigs => (1, 4),
        AlterConfigs => (0, 2),
        CreatePartitions => (0, 3),
        DeleteGroups => (0, 2),
        IncrementalAlterConfigs => (0, 1),
        OffsetDelete => (0, 0),
        DescribeCluster => (0, 1),
        ElectLeaders => (0, 2),
        AlterPartitionReassignments => (0, 1),
        ListPartitionReassignments => (0, 0),
        DescribeLogDirs => (1, 4),
        DescribeProducers => (0, 0),
        DescribeTopicPartitions => (0, 0),
        _ => return None,
    })
}

pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = ApiKey::iter()
        .filter_map(|k| {
            supported_versions(k).map(|(min, max)| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_the_codec() {
        for key in ApiKey::iter() {
            if let Some((min, max)) = supported_versions(key) {
                let codec = key.valid_versions();
                // Produce v0-2 are answered by hand (legacy_unsupported); all else via the crate.
                let min = if key == ApiKey::Produce { 3 } else { min };
                assert!(
                    min >= codec.min && max <= codec.max,
                    "{key:?} {min}..={max} vs {codec}"
                );
            }
        }
    }
}
