//! Scenario tests for `Log` on real files in a temp directory.

use super::batch::test_util::{encode, record, simple_batch};
use super::*;
use kafka_protocol::records::Compression;

const NOW_MS: i64 = 1_700_000_000_000;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2000,
        index_interval_bytes: 300,
        ..LogConfig::default()
    }
}

/// Appends `n` batches of 3 records; batch i has timestamps ts0 + 10 i + {0,1,2}.
fn fill(log: &mut Log, n: usize, ts0: i64) {
    for i in 0..n {
        let mut b = simple_batch(3, ts0 + 10 * i as i64, 40);
        log.append(&mut b, 5, NOW_MS).unwrap();
    }
}

fn decode_all(bytes: &[u8]) -> Vec<kafka_protocol::records::Record> {
    let mut buf = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.records)
        .collect()
}

fn read_all(log: &Log, from: i64) -> Vec<kafka_protocol::records::Record> {
    let r = log.read(from, usize::MAX >> 1, i64::MAX).unwrap();
    decode_all(&r.to_vec().unwrap())
}

/// Parses `.index` files back by hand and checks each entry against the log bytes.
fn check_index_files(log: &Log) -> usize {
    let mut total = 0;
    for base in log.segment_base_offsets() {
        let log_bytes = std::fs::read(log.dir().join(segment::log_file_name(base))).unwrap();
        let idx = std::fs::read(log.dir().join(segment::index_file_name(base))).unwrap();
        assert_eq!(idx.len() % 8, 0);
        for e in idx.chunks(8) {
            let rel = u32::from_be_bytes(e[0..4].try_into().unwrap());
            let pos = u32::from_be_bytes(e[4..8].try_into().unwrap()) as usize;
            let h = BatchHeader::parse(&log_bytes[pos..]).unwrap();
            assert_eq!(
                h.last_offset(),
                base + i64::from(rel),
                "entry points at its batch"
            );
            total += 1;
        }
        let tidx = std::fs::read(log.dir().join(segment::time_index_file_name(base))).unwrap();
        assert_eq!(tidx.len() % 12, 0);
        let mut last_ts = i64::MIN;
        for e in tidx.chunks(12) {
            let ts = i64::from_be_bytes(e[0..8].try_into().unwrap());
            let rel = u32::from_be_bytes(e[8..12].try_into().unwrap());
            assert!(ts > last_ts);
            last_ts = ts;
            assert!(base + i64::from(rel) < log.log_end_offset());
        }
    }
    total
}

#[test]
fn append_and_read_round_trip_across_segments() {
    // Proves offsets are assigned from the LEO, batches land in several segments, and a
    // read from any offset returns whole batches starting at the batch holding it.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&dir.path().join("t-0"), small_config(), false).unwrap();
    let mut b = simple_batch(3, 100, 40);
    let info = log.append(&mut b, 7, NOW_MS).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.max_timestamp),
        (0, 2, 102)
    );
    fill(&mut log, 49, 1000);
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.segment_count() > 3, "segments: {}", log.segment_count());
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 150);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.offset == i as i64));
    assert_eq!(records[0].partition_leader_epoch, 7);
    assert_eq!(records[3].partition_leader_epoch, 5);
    for offset in [0, 4, 76, 149] {
        let r = log.read(offset, 1, i64::MAX).unwrap();
        assert_eq!(r.regions.len(), 1, "max_bytes 1 still returns one batch");
        let recs = decode_all(&r.to_vec().unwrap());
        assert_eq!(recs[0].offset, offset / 3 * 3);
        assert_eq!(recs.len(), 3);
    }
    // The high watermark bounds reads; the LEO reads empty; past it is out of range.
    let r = log.read(0, 1 << 20, 30).unwrap();
    assert_eq!(decode_all(&r.to_vec().unwrap()).last().unwrap().offset, 29);
    assert!(log.read(150, 1 << 20, i64::MAX).unwrap().regions.is_empty());
    let err = log.read(151, 1 << 20, i64::MAX).unwrap_err();
    assert_eq!(err.kafka_error_code(), 1);
    // max_bytes is respected beyond the first batch.
    let one = log.read(0, 1, i64::MAX).unwrap().total_bytes();
    let r = log.read(0, (one * 2 + 1) as usize, i64::MAX).unwrap();
    assert_eq!(r.total_bytes(), one * 2);
    // Without min_one_batch a first batch larger than max_bytes is not returned at all
    // (a fetch's later partitions), and max_bytes still bounds what is.
    let none = log
        .read_batches(0, (one - 1) as usize, i64::MAX, false)
        .unwrap();
    assert!(none.regions.is_empty());
    let r = log
        .read_batches(0, (one * 2 + 1) as usize, i64::MAX, false)
        .unwrap();
    assert_eq!(r.total_bytes(), one * 2);
}

#[test]
fn index_files_have_kafkas_byte_layout() {
    // Proves .index holds 8-byte (relative last offset, position) entries pointing at
    // their batch and .timeindex 12-byte entries with growing timestamps.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&dir.path().join("t-0"), small_config(), false).unwrap();
    fill(&mut log, 60, 1000);
    assert!(check_index_files(&log) > 10);
}

#[test]
fn reopen_after_clean_close_keeps_everything() {
    // Proves a closed log reopens without recovery to the same state and keeps appending.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, small_config(), false).unwrap();
    fill(&mut log, 40, 1000);
    let index_before = std::fs::read(path.join(segment::index_file_name(0))).unwrap();
    let segments = log.segment_count();
    log.close().unwrap();
    let mut log = Log::open(&path, small_config(), false).unwrap();
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(log.recovery_point(), 120);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(
        std::fs::read(path.join(segment::index_file_name(0))).unwrap(),
        index_before
    );
    fill(&mut log, 1, 5000);
    assert_eq!(log.log_end_offset(), 123);
    assert_eq!(read_all(&log, 0).len(), 123);
    assert_eq!(log.max_timestamp_and_offset().unwrap(), Some((122, 5002)));
}

fn damaged_log_recovers(damage: impl Fn(&Path, u64), expected_leo: i64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, small_config(), false).unwrap();
    fill(&mut log, 100, 1000);
    let last_base = *log.segment_base_offsets().last().unwrap();
    let last_batch = log.read(297, 1, i64::MAX).unwrap().regions[0].clone();
    let log_file = path.join(segment::log_file_name(last_base));
    drop(log); // no close: unclean shutdown
    damage(&log_file, last_batch.position);
    let log = Log::open(&path, small_config(), true).unwrap();
    assert_eq!(log.log_end_offset(), expected_leo);
    let records = read_all(&log, 0);
    assert_eq!(records.len() as i64, expected_leo);
    check_index_files(&log);
    let size = std::fs::metadata(&log_file).unwrap().len();
    assert_eq!(size, log.active_segment().size_bytes());
}

#[test]
fn recovery_cuts_appended_garbage() {
    // Proves bytes after the last valid batch are truncated and nothing valid is lost.
    damaged_log_recovers(
        |f, _| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(f).unwrap();
            file.write_all(&[0xAB; 100]).unwrap();
        },
        300,
    );
}

#[test]
fn recovery_cuts_a_torn_last_batch() {
    // Proves a batch cut mid-way (crash during write) is removed on recovery.
    damaged_log_recovers(
        |f, pos| {
            let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
            file.set_len(pos + 30).unwrap();
        },
        297,
    );
}

#[test]
fn recovery_cuts_a_batch_with_a_bad_crc() {
    // Proves a bit flip inside the last batch fails its CRC and the batch is removed.
    damaged_log_recovers(
        |f, pos| {
            let mut bytes = std::fs::read(f).unwrap();
            let at = pos as usize + 70;
            bytes[at] ^= 0x01;
            std::fs::write(f, bytes).unwrap();
        },
        297,
    );
}

#[test]
fn corrupt_index_is_rebuilt_without_recover_flag() {
    // Proves a torn index file is rebuilt on open even after a "clean" shutdown.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, small_config(), false).unwrap();
    fill(&mut log, 30, 1000);
    log.close().unwrap();
    let idx = path.join(segment::index_file_name(0));
    let good = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &good[..good.len() - 3]).unwrap();
    std::fs::write(path.join("00000000000000000000.log.cleaned"), b"junk").unwrap();
    let log = Log::open(&path, small_config(), false).unwrap();
    assert_eq!(std::fs::read(&idx).unwrap(), good);
    assert!(!path.join("00000000000000000000.log.cleaned").exists());
    assert_eq!(read_all(&log, 0).len(), 90);
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    // Proves ListOffsets-by-timestamp returns the exact record, not just its batch.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&dir.path().join("t-0"), small_config(), false).unwrap();
    fill(&mut log, 50, 1000); // batch i: ts 1000+10i+{0,1,2}, offsets 3i+{0,1,2}
    assert_eq!(log.fetch_offset_by_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(
        log.fetch_offset_by_timestamp(1051).unwrap(),
        Some((16, 1051))
    );
    assert_eq!(
        log.fetch_offset_by_timestamp(1053).unwrap(),
        Some((18, 1060))
    );
    assert_eq!(
        log.fetch_offset_by_timestamp(1492).unwrap(),
        Some((149, 1492))
    );
    assert_eq!(log.fetch_offset_by_timestamp(1493).unwrap(), None);
    assert_eq!(log.max_timestamp_and_offset().unwrap(), Some((149, 1492)));
}

#[test]
fn retention_by_time_deletes_only_old_segments() {
    // Proves segments older than retention.ms go, newer ones and the active one stay,
    // and the log start offset moves to the new first segment.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1000,
        ..small_config()
    };
    let mut log = Log::open(&dir.path().join("t-0"), config, false).unwrap();
    fill(&mut log, 30, NOW_MS - 10_000);
    let old_segments = log.segment_count();
    fill(&mut log, 30, NOW_MS);
    let result = log.enforce_retention(NOW_MS).unwrap();
    assert!(result.deleted_segments >= old_segments - 1);
    assert!(log.log_start_offset() > 0 && log.log_start_offset() <= 90);
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    assert_eq!(log.log_end_offset(), 180);
    assert!(read_all(&log, log.log_start_offset())
        .iter()
        .any(|r| r.offset == 90));
    assert_eq!(
        log.read(0, 100, i64::MAX).unwrap_err().kafka_error_code(),
        1
    );
    // Everything expired: the active segment is rolled and deleted too.
    let result = log.enforce_retention(NOW_MS + 10_000).unwrap();
    assert!(result.deleted_segments > 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 180);
    assert_eq!(log.log_end_offset(), 180);
}

#[test]
fn retention_by_bytes_keeps_the_newest_within_the_limit() {
    // Proves Kafka's size rule: delete oldest while size - segment >= retention.bytes.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 4000,
        retention_ms: -1,
        ..small_config()
    };
    let mut log = Log::open(&dir.path().join("t-0"), config, false).unwrap();
    fill(&mut log, 60, NOW_MS);
    log.enforce_retention(NOW_MS).unwrap();
    assert!(log.size_bytes() >= 4000 - 2000 && log.size_bytes() < 4000 + 2000);
    let sizes: u64 = log.size_bytes();
    let first = log.segments.values().next().unwrap().size_bytes();
    assert!(sizes - first < 4000);
    assert_eq!(log.log_end_offset(), 180);
}

#[test]
fn delete_records_raises_log_start_and_drops_segments() {
    // Proves DeleteRecords moves the log start, deletes whole segments below it, survives
    // a reopen, and rejects offsets beyond the LEO.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, small_config(), false).unwrap();
    fill(&mut log, 50, 1000);
    let before = log.segment_count();
    assert_eq!(log.delete_records_before(100).unwrap(), 100);
    assert!(log.segment_count() < before);
    assert!(log.segment_base_offsets()[0] <= 100);
    assert_eq!(
        log.read(99, 10, i64::MAX).unwrap_err().kafka_error_code(),
        1
    );
    assert_eq!(
        log.delete_records_before(151)
            .unwrap_err()
            .kafka_error_code(),
        1
    );
    log.close().unwrap();
    let mut log = Log::open(&path, small_config(), false).unwrap();
    assert_eq!(log.log_start_offset(), 100);
    assert_eq!(log.delete_records_before(150).unwrap(), 150);
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.read(150, 10, i64::MAX).unwrap().regions.is_empty());
}

#[test]
fn truncate_to_cuts_the_tail_and_appends_continue() {
    // Proves follower truncation removes later batches and segments.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&dir.path().join("t-0"), small_config(), false).unwrap();
    fill(&mut log, 50, 1000);
    log.truncate_to(60).unwrap();
    assert_eq!(log.log_end_offset(), 60);
    check_index_files(&log);
    fill(&mut log, 1, 9000);
    assert_eq!(read_all(&log, 0).len(), 63);
    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn compaction_keeps_the_latest_value_per_key() {
    // Proves compaction drops superseded records, keeps offsets and the active segment,
    // and removes old tombstones only after they survived one cleaning.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy_compact: true,
        cleanup_policy_delete: false,
        delete_retention_ms: 1000,
        ..small_config()
    };
    let mut log = Log::open(&dir.path().join("t-0"), config, false).unwrap();
    for round in 0..10 {
        let records: Vec<_> = (0..5)
            .map(|k| {
                let value = format!("v{round}");
                let v = if round == 9 && k == 0 {
                    None
                } else {
                    Some(value.as_str())
                };
                record(k, NOW_MS - 5000 + round, Some(&format!("key{k}")), v)
            })
            .collect();
        let compression = if round % 2 == 0 {
            Compression::None
        } else {
            Compression::Lz4
        };
        log.append(&mut encode(&records, compression), 1, NOW_MS)
            .unwrap();
    }
    // An active segment with a newer value for key1 that must not be compacted.
    log.roll(NOW_MS).unwrap();
    log.append(
        &mut encode(
            &[record(0, NOW_MS, Some("key1"), Some("new"))],
            Compression::None,
        ),
        1,
        NOW_MS,
    )
    .unwrap();
    let size_before = log.size_bytes();
    let result = log.compact(NOW_MS).unwrap();
    assert!(result.ran && result.records_removed >= 40, "{result:?}");
    assert!(log.size_bytes() < size_before);
    let records = read_all(&log, 0);
    let summary: Vec<(i64, String, Option<String>)> = records
        .iter()
        .map(|r| {
            let s = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            (r.offset, s(&r.key).unwrap(), s(&r.value))
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (45, "key0".into(), None),
            (46, "key1".into(), Some("v9".into())),
            (47, "key2".into(), Some("v9".into())),
            (48, "key3".into(), Some("v9".into())),
            (49, "key4".into(), Some("v9".into())),
            (50, "key1".into(), Some("new".into())),
        ]
    );
    assert_eq!(log.log_end_offset(), 51);
    check_index_files(&log);
    // Second pass once the active data is cleanable: the tombstone has survived one
    // cleaning and is older than delete.retention.ms, so it goes; key1's old value too.
    log.roll(NOW_MS).unwrap();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..log.config().clone()
    };
    log.update_config(config);
    let result = log.compact(NOW_MS + 10_000).unwrap();
    assert_eq!(result.tombstones_removed, 1, "{result:?}");
    let offsets: Vec<i64> = read_all(&log, 0).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![47, 48, 49, 50]);
    assert_eq!(
        log.fetch_offset_by_timestamp(0).unwrap().map(|x| x.0),
        Some(47)
    );
}

#[test]
fn random_damage_never_panics_recovery() {
    // Proves recovery turns arbitrary damage to segment and index files into a shorter
    // valid log (every remaining batch decodes), never a panic. Prints its seed.
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let mut log = Log::open(&path, small_config(), false).unwrap();
        fill(&mut log, 30, 1000);
        drop(log);
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with("offset") && !p.ends_with("recovery-point"))
            .collect();
        files.sort();
        for _ in 0..rng.random_range(1..4) {
            let file = &files[rng.random_range(0..files.len())];
            let mut bytes = std::fs::read(file).unwrap();
            if !bytes.is_empty() {
                match rng.random_range(0..3) {
                    0 => bytes.truncate(rng.random_range(0..bytes.len())),
                    1 => {
                        let i = rng.random_range(0..bytes.len());
                        bytes[i] = rng.random();
                    }
                    _ => bytes.extend((0..rng.random_range(1..100)).map(|_| rng.random::<u8>())),
                }
            }
            std::fs::write(file, bytes).unwrap();
        }
        // Damage anywhere (not just a torn tail) models a lost recovery point: without it every
        // segment is recovered. (With it, segments fsynced at roll are trusted, as in Kafka.)
        let _ = std::fs::remove_file(path.join("recovery-point"));
        let log = Log::open(&path, small_config(), true).unwrap();
        let records = read_all(&log, log.log_start_offset());
        assert!(records.len() as i64 <= log.log_end_offset() - log.log_start_offset() + 3);
        let _ = log.fetch_offset_by_timestamp(1100);
        let _ = log.max_timestamp_and_offset();
    }
}

#[test]
fn flush_ms_flushes_an_idle_log_once_due() {
    // Proves the time-based flush rule applies without further appends: records wait until
    // `flush_ms` has passed since the last flush, then one call fsyncs them all.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_ms: 1_000,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config, false).unwrap();
    // The log starts its flush clock at open (wall time).
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut batch = simple_batch(3, t0, 10);
    log.append(&mut batch, 0, t0).unwrap();
    let waiting = log.unflushed_records();
    assert!(
        waiting >= 1,
        "an append below the thresholds leaves records unflushed"
    );
    assert!(!log.flush_if_due(t0 + 10).unwrap(), "not due yet");
    assert_eq!(log.unflushed_records(), waiting);
    assert!(
        log.flush_if_due(t0 + 10 + 1_000_000).unwrap(),
        "due after flush.ms"
    );
    assert_eq!(log.unflushed_records(), 0);
    assert!(
        !log.flush_if_due(t0 + 20_000_000).unwrap(),
        "nothing left to flush"
    );
}

#[test]
fn rolling_advances_the_recovery_point_so_a_crash_rescans_only_the_tail() {
    // Proves recovery work is bounded: after rolls, the recovery point sits at the active
    // segment's base, so an unclean open re-validates only the active segment: damage there is
    // cut, while the same damage in a rolled (fsynced) segment below the point is not rescanned.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), false).unwrap();
    fill(&mut log, 60, NOW_MS);
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3, "several segments: {bases:?}");
    let active = *bases.last().unwrap();
    assert_eq!(log.recovery_point(), active);
    let leo = log.log_end_offset();
    let last_batch = log.read(leo - 1, 1, i64::MAX).unwrap().regions[0].clone();
    drop(log); // no close: as after SIGKILL
               // One flipped payload byte (a bad CRC) in the first segment's first batch and in the
               // active segment's last batch.
    let flip = |file: &Path, at: usize| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[at] ^= 0x01;
        std::fs::write(file, bytes).unwrap();
    };
    let first = dir.path().join(segment::log_file_name(bases[0]));
    let first_len = std::fs::metadata(&first).unwrap().len();
    flip(&first, 70);
    flip(
        &dir.path().join(segment::log_file_name(active)),
        last_batch.position as usize + 70,
    );
    let reopened = Log::open(dir.path(), small_config(), true).unwrap();
    assert!(
        reopened.log_end_offset() < leo,
        "the damaged last batch of the active segment is cut"
    );
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        first_len,
        "the segment below the recovery point is not rescanned"
    );
    assert!(
        reopened.recovery_point() >= active,
        "recovery started at the active segment"
    );
}
