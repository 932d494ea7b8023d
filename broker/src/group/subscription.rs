//! The topics of a "consumer" protocol subscription (`ConsumerProtocolSubscription`), read from a
//! member's JoinGroup metadata, so OffsetDelete can refuse to delete offsets of subscribed topics.
//!
//! ```text
//!   +0  i16  version (0..3 known; newer versions keep the topics first)
//!   +2  i32  topic count N, then N × (i16 length + UTF-8 topic name)
//!   ..       user_data, owned_partitions, generation_id, rack_id: not needed here
//! ```
//!
//! The crate's generated decoder allocates from the array count before checking it, so this
//! reads only the topics, by hand, with every length checked against the bytes remaining.

/// Topic names in a consumer protocol subscription, or `None` if the bytes are not one.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut buf = metadata;
    let version = i16::from_be_bytes(take::<2>(&mut buf)?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take::<4>(&mut buf)?);
    // Each topic takes at least its 2-byte length.
    if count < 0 || count as usize > buf.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = i16::from_be_bytes(take::<2>(&mut buf)?);
        if len < 0 || len as usize > buf.len() {
            return None;
        }
        let (name, rest) = buf.split_at(len as usize);
        buf = rest;
        topics.push(std::str::from_utf8(name).ok()?.to_owned());
    }
    Some(topics)
}

fn take<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    if buf.len() < N {
        return None;
    }
    let (head, rest) = buf.split_at(N);
    *buf = rest;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Some(out)
}

/// Encodes a version-0 subscription with the given topics (tests and tools).
#[cfg(test)]
pub fn encode_subscription_v0(topics: &[&str]) -> bytes::Bytes {
    use bytes::BufMut;
    let mut b = bytes::BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1); // null user_data
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn reads_topics_of_a_subscription_encoded_by_the_crate() {
        // Proves the hand decoder agrees with the generated encoder for versions 0..3.
        for version in 0..=3i16 {
            let sub = ConsumerProtocolSubscription::default()
                .with_topics(vec![StrBytes::from_static_str("a"), "bb".into()]);
            let mut buf = bytes::BytesMut::new();
            bytes::BufMut::put_i16(&mut buf, version);
            sub.encode(&mut buf, version).unwrap();
            assert_eq!(
                subscribed_topics(&buf),
                Some(vec!["a".to_string(), "bb".to_string()])
            );
        }
        assert_eq!(
            subscribed_topics(&encode_subscription_v0(&["x"])),
            Some(vec!["x".into()])
        );
    }

    #[test]
    fn garbage_is_not_a_subscription() {
        // Proves truncated or oversized input gives None without allocating or panicking.
        assert_eq!(subscribed_topics(&[]), None);
        assert_eq!(subscribed_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(subscribed_topics(&[0, 0, 0, 0, 0, 1, 0, 5, b'a']), None);
    }
}
