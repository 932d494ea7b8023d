//! `kairos.*` record headers (design.md §4). Values are ASCII decimal integers.

/// Absolute due time, epoch milliseconds.
pub const DELIVER_AT_MS: &str = "kairos.deliver.at.ms";
/// Delay from the record's append time, milliseconds.
pub const DELAY_MS: &str = "kairos.delay.ms";
/// Added to forwarded records: where the record was first produced.
pub const ORIGINAL_TOPIC: &str = "kairos.original.topic";
pub const ORIGINAL_PARTITION: &str = "kairos.original.partition";
pub const ORIGINAL_OFFSET: &str = "kairos.original.offset";
pub const ORIGINAL_TIMESTAMP: &str = "kairos.original.timestamp";
/// Retry topics: the attempt a redelivered record is on (1 = first retry).
pub const RETRY_ATTEMPT: &str = "kairos.retry.attempt";
/// Set by the consumer that failed: why (carried to the dead-letter record).
pub const RETRY_REASON: &str = "kairos.retry.reason";
/// Dead-letter records: why, how many attempts, first and last failure times (epoch ms), and
/// the topic a redrive sends the record back to.
pub const DLQ_REASON: &str = "kairos.dlq.reason";
pub const DLQ_ATTEMPTS: &str = "kairos.dlq.attempts";
pub const DLQ_FIRST_FAILURE_MS: &str = "kairos.dlq.first.failure.ms";
pub const DLQ_LAST_FAILURE_MS: &str = "kairos.dlq.last.failure.ms";
pub const DLQ_SOURCE_TOPIC: &str = "kairos.dlq.source.topic";
/// On a delay topic: a marker record (no key, no value) cancelling the record at this offset
/// of its partition (written by the admin API's Cancel by offset; never forwarded).
pub const CANCEL_OFFSET: &str = "kairos.cancel.offset";

/// When a delay-topic record is due, as its headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueSpec {
    /// `kairos.deliver.at.ms`: this epoch-ms instant.
    At(i64),
    /// `kairos.delay.ms`: append time plus this.
    After(i64),
    /// No header: the topic's `kairos.delay.ms` (0 when unset).
    TopicDefault,
}

/// Parses a non-negative decimal header value.
pub fn parse_ms(name: &str, value: Option<&[u8]>) -> Result<i64, String> {
    let Some(value) = value else {
        return Err(format!("header {name} has no value"));
    };
    let text = std::str::from_utf8(value).map_err(|_| format!("header {name} is not UTF-8"))?;
    match text.trim().parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v),
        Ok(v) => Err(format!("header {name} must not be negative (got {v})")),
        Err(_) => Err(format!(
            "header {name} must be a whole number of milliseconds (got {text:?})"
        )),
    }
}

/// The due spec of a record from its headers; malformed values are an error naming the header.
/// `kairos.deliver.at.ms` wins over `kairos.delay.ms` (both are still checked).
pub fn due_spec<'a>(
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Result<DueSpec, String> {
    let mut at = None;
    let mut after = None;
    for (name, value) in headers {
        match name {
            DELIVER_AT_MS => at = Some(parse_ms(name, value)?),
            DELAY_MS => after = Some(parse_ms(name, value)?),
            _ => {}
        }
    }
    Ok(match (at, after) {
        (Some(t), _) => DueSpec::At(t),
        (None, Some(d)) => DueSpec::After(d),
        (None, None) => DueSpec::TopicDefault,
    })
}

impl DueSpec {
    /// The due instant for a record appended at `append_ms` on a topic whose default delay is
    /// `topic_delay_ms`. Saturates instead of overflowing (a delay of "years" is fine).
    pub fn due_ms(self, append_ms: i64, topic_delay_ms: i64) -> i64 {
        match self {
            DueSpec::At(t) => t,
            DueSpec::After(d) => append_ms.saturating_add(d),
            DueSpec::TopicDefault => append_ms.saturating_add(topic_delay_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_decide_the_due_time() {
        let h =
            |pairs: &[(&'static str, &'static str)]| -> Vec<(&'static str, Option<&'static [u8]>)> {
                pairs
                    .iter()
                    .map(|(k, v)| (*k, Some(v.as_bytes())))
                    .collect()
            };
        assert_eq!(
            due_spec(h(&[(DELAY_MS, "1500")])).unwrap().due_ms(1000, 5),
            2500
        );
        assert_eq!(
            due_spec(h(&[(DELIVER_AT_MS, "99"), (DELAY_MS, "1")]))
                .unwrap()
                .due_ms(1000, 5),
            99
        );
        assert_eq!(
            due_spec(h(&[("other", "x")])).unwrap().due_ms(1000, 5),
            1005
        );
        assert_eq!(
            DueSpec::After(i64::MAX).due_ms(10, 0),
            i64::MAX,
            "years of delay saturate"
        );
        for bad in ["-1", "soon", "1.5", ""] {
            let e = due_spec(h(&[(DELAY_MS, bad)])).unwrap_err();
            assert!(e.contains(DELAY_MS), "{e}");
        }
        assert!(due_spec(vec![(DELIVER_AT_MS, None)]).is_err());
    }
}
