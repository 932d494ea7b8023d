//! Codecs for the records of `__consumer_offsets`, byte for byte as Kafka writes them, so a
//! Kairos data directory and Kafka tooling (`kafka-console-consumer --formatter
//! OffsetsMessageFormatter`) agree on them. All integers are big-endian.
//!
//! ```text
//! Offset commit key (version 0 and 1 share the layout; Kafka writes 1):
//!   +0  i16  key version = 1
//!   +2  i16  group length G, then G bytes UTF-8
//!   ..  i16  topic length T, then T bytes UTF-8
//!   ..  i32  partition
//!
//! Group metadata key:
//!   +0  i16  key version = 2
//!   +2  i16  group length G, then G bytes UTF-8
//!
//! Offset commit value:
//!   v0: offset i64 | metadata string | timestamp i64
//!   v1: offset i64 | metadata string | commit_timestamp i64 | expire_timestamp i64
//!   v2: offset i64 | metadata string | commit_timestamp i64
//!   v3: offset i64 | leader_epoch i32 (-1 = none) | metadata string | commit_timestamp i64
//!   (Kairos writes v1 when the commit carries an explicit expire timestamp, else v3 — as Kafka.)
//!
//! Group metadata value (Kairos writes v3; v0..v3 are read):
//!   protocol_type string
//!   generation i32
//!   protocol nullable string (i16 length, -1 = null)
//!   leader nullable string
//!   current_state_timestamp i64                 (v2+; -1 = unknown)
//!   members: i32 count, then per member:
//!     member_id string
//!     group_instance_id nullable string         (v3+)
//!     client_id string
//!     client_host string
//!     rebalance_timeout i32                     (v1+; v0 uses session_timeout)
//!     session_timeout i32
//!     subscription bytes (i32 length)
//!     assignment bytes (i32 length)
//! ```
//!
//! A value of `None` (a tombstone) deletes the key when the log is compacted and on load.
//! Decoders never panic and never allocate from a length before checking it against the bytes
//! that remain; a bad record is a [`RecordError`] and the loader skips it.

use bytes::{BufMut, Bytes, BytesMut};

/// Key version of an offset commit record (Kafka writes 1; 0 has the same layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of a group metadata record.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Offset commit value version written when no expire timestamp is set.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Offset commit value version written when the commit carries an expire timestamp.
pub const OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY: i16 = 1;
/// Group metadata value version written.
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// Why a record could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated: needed {needed_bytes} bytes, {remaining_bytes} remain")]
    Truncated {
        needed_bytes: usize,
        remaining_bytes: usize,
    },
    #[error("negative length {0}")]
    NegativeLength(i32),
    #[error("string is not UTF-8")]
    InvalidUtf8,
    #[error("unknown key version {0}")]
    UnknownKeyVersion(i16),
    #[error("unknown value version {0}")]
    UnknownValueVersion(i16),
    #[error("string of {0} bytes does not fit an i16 length")]
    StringTooLong(usize),
    #[error("byte array of {0} bytes does not fit an i32 length")]
    BytesTooLong(usize),
}

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    GroupMetadata {
        group: String,
    },
}

/// The value of an offset commit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only value versions 1 carries it (commits of OffsetCommit v1..v4 with a retention time).
    pub expire_timestamp_ms: Option<i64>,
}

/// One member in a group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The value of a group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (value versions 0 and 1).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberRecord>,
}

// ---------------------------------------------------------------------------------------------
// Encoding

struct Writer(BytesMut);

impl Writer {
    fn new() -> Self {
        Writer(BytesMut::with_capacity(64))
    }
    fn i16(&mut self, v: i16) {
        self.0.put_i16(v);
    }
    fn i32(&mut self, v: i32) {
        self.0.put_i32(v);
    }
    fn i64(&mut self, v: i64) {
        self.0.put_i64(v);
    }
    fn string(&mut self, s: &str) -> Result<(), RecordError> {
        let len = i16::try_from(s.len()).map_err(|_| RecordError::StringTooLong(s.len()))?;
        self.0.put_i16(len);
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
    fn nullable_string(&mut self, s: Option<&str>) -> Result<(), RecordError> {
        match s {
            None => {
                self.0.put_i16(-1);
                Ok(())
            }
            Some(s) => self.string(s),
        }
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), RecordError> {
        let len = i32::try_from(b.len()).map_err(|_| RecordError::BytesTooLong(b.len()))?;
        self.0.put_i32(len);
        self.0.put_slice(b);
        Ok(())
    }
    fn finish(self) -> Bytes {
        self.0.freeze()
    }
}

/// Key of the record holding `group`'s committed offset for `topic`-`partition`.
pub fn encode_offset_commit_key(
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Bytes, RecordError> {
    let mut w = Writer::new();
    w.i16(OFFSET_COMMIT_KEY_VERSION);
    w.string(group)?;
    w.string(topic)?;
    w.i32(partition);
    Ok(w.finish())
}

/// Key of the record holding `group`'s metadata.
pub fn encode_group_metadata_key(group: &str) -> Result<Bytes, RecordError> {
    let mut w = Writer::new();
    w.i16(GROUP_METADATA_KEY_VERSION);
    w.string(group)?;
    Ok(w.finish())
}

/// Value of an offset commit record: v1 if it carries an expire timestamp, else v3.
pub fn encode_offset_commit_value(value: &OffsetCommitValue) -> Result<Bytes, RecordError> {
    let mut w = Writer::new();
    match value.expire_timestamp_ms {
        Some(expire_timestamp_ms) => {
            w.i16(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY);
            w.i64(value.offset);
            w.string(&value.metadata)?;
            w.i64(value.commit_timestamp_ms);
            w.i64(expire_timestamp_ms);
        }
        None => {
            w.i16(OFFSET_COMMIT_VALUE_VERSION);
            w.i64(value.offset);
            w.i32(value.leader_epoch.unwrap_or(-1));
            w.string(&value.metadata)?;
            w.i64(value.commit_timestamp_ms);
        }
    }
    Ok(w.finish())
}

/// Value of a group metadata record, version 3.
pub fn encode_group_metadata_value(value: &GroupMetadataValue) -> Result<Bytes, RecordError> {
    let mut w = Writer::new();
    w.i16(GROUP_METADATA_VALUE_VERSION);
    w.string(&value.protocol_type)?;
    w.i32(value.generation_id);
    w.nullable_string(value.protocol.as_deref())?;
    w.nullable_string(value.leader.as_deref())?;
    w.i64(value.current_state_timestamp_ms);
    let count = i32::try_from(value.members.len())
        .map_err(|_| RecordError::BytesTooLong(value.members.len()))?;
    w.i32(count);
    for m in &value.members {
        w.string(&m.member_id)?;
        w.nullable_string(m.group_instance_id.as_deref())?;
        w.string(&m.client_id)?;
        w.string(&m.client_host)?;
        w.i32(m.rebalance_timeout_ms);
        w.i32(m.session_timeout_ms);
        w.bytes(&m.subscription)?;
        w.bytes(&m.assignment)?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A bounds-checked cursor over a record's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.buf.len() {
            return Err(RecordError::Truncated {
                needed_bytes: n,
                remaining_bytes: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        let s = std::str::from_utf8(raw).map_err(|_| RecordError::InvalidUtf8)?;
        Ok(Some(s.to_owned()))
    }
    /// A non-nullable string; a null (-1) reads as "" as Kafka's readers tolerate it.
    fn string(&mut self) -> Result<String, RecordError> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            // Null bytes: Kafka writes empty arrays, but reading null as empty is harmless.
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
    fn remaining(&self) -> usize {
        self.buf.len()
    }
}

/// Decodes a record key (offset commit key v0/v1, group metadata key v2).
pub fn decode_key(key: &[u8]) -> Result<RecordKey, RecordError> {
    let mut r = Reader::new(key);
    match r.i16()? {
        0 | 1 => Ok(RecordKey::OffsetCommit {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        }),
        2 => Ok(RecordKey::GroupMetadata { group: r.string()? }),
        v => Err(RecordError::UnknownKeyVersion(v)),
    }
}

/// Decodes an offset commit value, versions 0 to 3.
pub fn decode_offset_commit_value(value: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    match version {
        0 | 2 => Ok(OffsetCommitValue {
            offset: r.i64()?,
            leader_epoch: None,
            metadata: r.string()?,
            commit_timestamp_ms: r.i64()?,
            expire_timestamp_ms: None,
        }),
        1 => Ok(OffsetCommitValue {
            offset: r.i64()?,
            leader_epoch: None,
            metadata: r.string()?,
            commit_timestamp_ms: r.i64()?,
            expire_timestamp_ms: Some(r.i64()?),
        }),
        3 => {
            let offset = r.i64()?;
            let epoch = r.i32()?;
            Ok(OffsetCommitValue {
                offset,
                leader_epoch: (epoch >= 0).then_some(epoch),
                metadata: r.string()?,
                commit_timestamp_ms: r.i64()?,
                expire_timestamp_ms: None,
            })
        }
        v => Err(RecordError::UnknownValueVersion(v)),
    }
}

/// Smallest encoding of one member (v0: four empty strings, one i32, two empty byte arrays).
const MEMBER_RECORD_BYTES_MIN: usize = 2 * 3 + 4 + 4 * 2;

/// Decodes a group metadata value, versions 0 to 3.
pub fn decode_group_metadata_value(value: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnknownValueVersion(version));
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    if count < 0 {
        return Err(RecordError::NegativeLength(count));
    }
    let count = count as usize;
    // Bound the allocation by what the remaining bytes can possibly hold.
    if count > r.remaining() / MEMBER_RECORD_BYTES_MIN {
        return Err(RecordError::Truncated {
            needed_bytes: count.saturating_mul(MEMBER_RECORD_BYTES_MIN),
            remaining_bytes: r.remaining(),
        });
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout = if version >= 1 { Some(r.i32()?) } else { None };
        let session_timeout_ms = r.i32()?;
        members.push(MemberRecord {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupMetadataValue {
        protocol_type,
        generation_id,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation_id: 7,
            protocol: Some("range".into()),
            leader: Some("c-1".into()),
            current_state_timestamp_ms: 1_700_000_000_000,
            members: vec![
                MemberRecord {
                    member_id: "c-1".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"assign"),
                },
                MemberRecord {
                    member_id: "i-2".into(),
                    group_instance_id: Some("i".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 60_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn offset_commit_key_has_kafka_byte_layout_and_round_trips() {
        // Proves the key is version 1, two i16-prefixed strings and a partition, as Kafka.
        let key = encode_offset_commit_key("g", "t", 3).unwrap();
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::OffsetCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 3
            }
        );
    }

    #[test]
    fn group_metadata_key_round_trips() {
        // Proves the group key is version 2 and the group string.
        let key = encode_group_metadata_key("grp").unwrap();
        assert_eq!(&key[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::GroupMetadata {
                group: "grp".into()
            }
        );
    }

    #[test]
    fn offset_commit_value_v3_and_v1_round_trip() {
        // Proves both written value versions decode to what was written.
        let v3 = OffsetCommitValue {
            offset: 42,
            leader_epoch: Some(5),
            metadata: "meta".into(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: None,
        };
        let bytes = encode_offset_commit_value(&v3).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(bytes.len(), 2 + 8 + 4 + 2 + 4 + 8);
        assert_eq!(decode_offset_commit_value(&bytes).unwrap(), v3);

        let v1 = OffsetCommitValue {
            offset: 42,
            leader_epoch: None,
            metadata: String::new(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: Some(2000),
        };
        let bytes = encode_offset_commit_value(&v1).unwrap();
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(decode_offset_commit_value(&bytes).unwrap(), v1);
    }

    #[test]
    fn offset_commit_value_v0_decodes() {
        // Proves the oldest value version (offset, metadata, timestamp) is read.
        let mut raw = vec![0, 0];
        raw.extend_from_slice(&9i64.to_be_bytes());
        raw.extend_from_slice(&[0, 2, b'h', b'i']);
        raw.extend_from_slice(&77i64.to_be_bytes());
        let v = decode_offset_commit_value(&raw).unwrap();
        assert_eq!(v.offset, 9);
        assert_eq!(v.metadata, "hi");
        assert_eq!(v.commit_timestamp_ms, 77);
        assert_eq!(v.leader_epoch, None);
    }

    #[test]
    fn group_metadata_value_round_trips() {
        // Proves a v3 group record with static and dynamic members decodes to what was written.
        let g = sample_group();
        let bytes = encode_group_metadata_value(&g).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_group_metadata_value(&bytes).unwrap(), g);
    }

    #[test]
    fn empty_group_metadata_with_null_protocol_round_trips() {
        // Proves null protocol and leader (an Empty group) are written as -1 lengths.
        let g = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation_id: 3,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 5,
            members: vec![],
        };
        let bytes = encode_group_metadata_value(&g).unwrap();
        assert_eq!(decode_group_metadata_value(&bytes).unwrap(), g);
    }

    #[test]
    fn decoders_reject_garbage_without_panicking() {
        // Proves truncated, oversized and unknown-version input yields errors, never panics.
        let g = encode_group_metadata_value(&sample_group()).unwrap();
        for cut in 0..g.len() {
            assert!(decode_group_metadata_value(&g[..cut]).is_err(), "cut {cut}");
        }
        let k = encode_offset_commit_key("g", "t", 1).unwrap();
        for cut in 0..k.len() {
            assert!(decode_key(&k[..cut]).is_err());
        }
        // A member count of 2^31-1 must not allocate.
        let mut huge = vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&0i64.to_be_bytes());
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_group_metadata_value(&huge).is_err());
        assert_eq!(decode_key(&[0, 9]), Err(RecordError::UnknownKeyVersion(9)));
        assert_eq!(
            decode_offset_commit_value(&[0, 4, 1]),
            Err(RecordError::UnknownValueVersion(4))
        );
        assert_eq!(
            decode_key(&[0, 2, 0, 2, 0xff, 0xfe]),
            Err(RecordError::InvalidUtf8)
        );
        // Pseudo-random bytes: whatever the result, no panic.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = decode_key(&buf);
            let _ = decode_offset_commit_value(&buf);
            let _ = decode_group_metadata_value(&buf);
        }
    }

    #[test]
    fn encoders_refuse_strings_longer_than_i16() {
        // Proves an over-long string is an error instead of a corrupt length prefix.
        let long = "x".repeat(40_000);
        assert_eq!(
            encode_group_metadata_key(&long),
            Err(RecordError::StringTooLong(40_000))
        );
    }
}
