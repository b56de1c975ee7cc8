//! Replaying a store file: walking its records in file order into the
//! in-memory state, telling a torn tail (a crash mid-append) from damage,
//! and doing it fast for a million bans.
//!
//! It works on bytes already read: it must not do any I/O (`files.rs`
//! reads and cuts the files) and it must not apply anything from a
//! record it has not validated.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;

use ipnet::IpNet;

use super::frames::{Found, Frame, read_frame, resync, walk_leniently};
use super::records::{PayloadReader, Record, decode_payload};
use super::state::{BanSlot, MemState, NetChange};
use super::{FILE_HEADER_LEN, KIND_BAN, KIND_HISTORY, KIND_UNBAN, StoreError, corrupt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileRole {
    Snapshot,
    Log,
}

/// Where replay of a log stopped early because of a torn tail.
pub(super) struct TornTail {
    pub(super) offset: usize,
    pub(super) detail: &'static str,
}

/// Decodes every record after the header of `bytes` in file order and hands
/// it, with its offset, to `visit`. In the log a damaged frame with nothing
/// believable after it ends the walk (torn tail: a crash mid-append); one
/// with sound records after it (see [`resync`]) is
/// [`StoreError::LogDamaged`]. In the snapshot any damage, or a missing end
/// marker, is corruption, as is any record `visit` rejects.
fn walk_records<'a>(
    bytes: &'a [u8],
    role: FileRole,
    path: &Path,
    mut visit: impl FnMut(usize, Record<'a>) -> Result<(), String>,
) -> Result<Option<TornTail>, StoreError> {
    let mut offset = FILE_HEADER_LEN;
    let mut records_visited: u64 = 0;
    let mut end_marker_seen = false;
    loop {
        let (payload, next) = match read_frame(bytes, offset) {
            Frame::Intact { payload, next } => (payload, next),
            Frame::EndOfData => break,
            Frame::Damaged(detail) if role == FileRole::Log => {
                let Some(resumed) = resync(bytes, offset) else {
                    return Ok(Some(TornTail { offset, detail }));
                };
                let mut intact_after = 0;
                walk_leniently(bytes, resumed, |found| {
                    intact_after += u64::from(matches!(found, Found::Record { .. }));
                });
                return Err(StoreError::LogDamaged {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    detail: detail.to_string(),
                    intact_after,
                });
            }
            Frame::Damaged(detail) => return Err(corrupt(path, offset, detail)),
        };
        if end_marker_seen {
            return Err(corrupt(path, offset, "data after the snapshot end marker"));
        }
        let record = decode_payload(payload).map_err(|detail| corrupt(path, offset, detail))?;
        let visited = match record {
            Record::SnapshotEnd { record_count } => {
                end_marker_seen = true;
                check_end_marker(role, record_count, records_visited)
            }
            record => {
                records_visited += 1;
                visit(offset, record)
            }
        };
        visited.map_err(|detail| corrupt(path, offset, detail))?;
        offset = next;
    }
    if role == FileRole::Snapshot && !end_marker_seen {
        return Err(corrupt(
            path,
            offset,
            "snapshot is incomplete (no end marker)",
        ));
    }
    Ok(None)
}

/// Replays a snapshot or log into `state`; for a log, also returns where a
/// torn tail begins (nothing after it was applied).
///
/// Inserting a million bans in file order makes nearly every insert a cache
/// and TLB miss on the ~150 MB ban table, which dominated load time. Since
/// records about different nets commute, replay instead reads the file
/// strictly sequentially three times: `scan_file` hashes the net of each
/// net-keyed record with the table's hasher; the decoding walk validates
/// every record, applies allowlist records at once and stages net records
/// by the table region their net lands in, keeping file order within a
/// region (and so within a net); finally the staged changes are applied
/// region by region, sweeping the table instead of hopping around it.
pub(super) fn replay_file(
    state: &mut MemState,
    bytes: &[u8],
    role: FileRole,
    path: &Path,
    now: u64,
) -> Result<Option<TornTail>, StoreError> {
    let scan = scan_file(bytes, state.bans.hasher());
    state.reserve(scan.ban_records, scan.history_records);
    let placement = TablePlacement::of(&state.bans);
    let mut staging = NetChangeStaging::new(&placement, &scan.net_hashes);
    drop(scan);
    let torn = walk_records(bytes, role, path, |_, record| {
        match state.net_change(&record, now) {
            Some(change) => staging.stage(change)?,
            None => state.apply_side_record(&record, now),
        }
        Ok(())
    })?;
    for change in staging.into_changes() {
        state.apply_net_change(change);
    }
    Ok(torn)
}

/// What a quick first pass over a file learns for sizing and placement.
struct FileScan {
    /// Table hash of the net of each Ban, Unban and History record, in file
    /// order: exactly the records `MemState::net_change` maps to a change.
    net_hashes: Vec<u64>,
    ban_records: usize,
    history_records: usize,
}

/// Walks the intact frames up to the first problem (the decoding walk
/// reports it) and hashes the nets of net-keyed records.
fn scan_file(bytes: &[u8], hasher: &RandomState) -> FileScan {
    let mut scan = FileScan {
        net_hashes: Vec::new(),
        ban_records: 0,
        history_records: 0,
    };
    let mut offset = FILE_HEADER_LEN;
    while let Frame::Intact { payload, next } = read_frame(bytes, offset) {
        let kind = payload.first().copied();
        if matches!(kind, Some(KIND_BAN | KIND_UNBAN | KIND_HISTORY)) {
            let Some(net) = leading_net(payload) else {
                break;
            };
            scan.net_hashes.push(hasher.hash_one(net));
            scan.ban_records += usize::from(kind == Some(KIND_BAN));
            scan.history_records += usize::from(kind == Some(KIND_HISTORY));
        }
        offset = next;
    }
    scan
}

/// The net right after the kind byte, decoded as `decode_payload` does.
fn leading_net(payload: &[u8]) -> Option<IpNet> {
    let mut reader = PayloadReader {
        bytes: payload,
        pos: 1,
    };
    reader.net().ok()
}

/// Predicts which region of the ban table a hash lands in: hashbrown keeps
/// power-of-two buckets at most 7/8 full and starts probing at
/// `hash & (buckets - 1)`. A wrong guess costs speed, never correctness.
struct TablePlacement {
    bucket_mask: u64,
    region_shift: u32,
}

impl TablePlacement {
    /// 1024 regions: for a million bans one region is ~150 KB of table.
    const MAX_REGION_BITS: u32 = 10;

    fn of(table: &HashSet<BanSlot>) -> TablePlacement {
        let buckets = (table.capacity().saturating_mul(8) / 7)
            .max(1)
            .next_power_of_two() as u64;
        let bucket_bits = buckets.trailing_zeros();
        TablePlacement {
            bucket_mask: buckets - 1,
            region_shift: bucket_bits.saturating_sub(Self::MAX_REGION_BITS),
        }
    }

    fn region_count(&self) -> usize {
        (self.bucket_mask >> self.region_shift) as usize + 1
    }

    fn region(&self, hash: u64) -> u16 {
        // At most MAX_REGION_BITS bits remain after the shift.
        ((hash & self.bucket_mask) >> self.region_shift) as u16
    }
}

/// Net changes grouped by table region, file order kept within a region: a
/// counting sort whose counts come from the scan pass.
struct NetChangeStaging {
    /// Region of each net-keyed record, in file order.
    regions_in_file_order: Vec<u16>,
    staged_count: usize,
    next_slot: Vec<usize>,
    region_end: Vec<usize>,
    slots: Vec<Option<NetChange>>,
}

impl NetChangeStaging {
    fn new(placement: &TablePlacement, net_hashes: &[u64]) -> NetChangeStaging {
        let regions_in_file_order: Vec<u16> = net_hashes
            .iter()
            .map(|&hash| placement.region(hash))
            .collect();
        let mut region_sizes = vec![0usize; placement.region_count()];
        for &region in &regions_in_file_order {
            region_sizes[usize::from(region)] += 1;
        }
        let mut next_slot = Vec::with_capacity(region_sizes.len());
        let mut region_end = Vec::with_capacity(region_sizes.len());
        let mut boundary = 0;
        for size in region_sizes {
            next_slot.push(boundary);
            boundary += size;
            region_end.push(boundary);
        }
        NetChangeStaging {
            regions_in_file_order,
            staged_count: 0,
            next_slot,
            region_end,
            slots: vec![None; net_hashes.len()],
        }
    }

    /// Places the next net change (in file order) into its region.
    fn stage(&mut self, change: NetChange) -> Result<(), String> {
        let inconsistent = || "records differ between load passes".to_string();
        let region = self
            .regions_in_file_order
            .get(self.staged_count)
            .map(|&region| usize::from(region))
            .ok_or_else(inconsistent)?;
        let slot_index = self.next_slot[region];
        if slot_index >= self.region_end[region] {
            return Err(inconsistent());
        }
        self.slots[slot_index] = Some(change);
        self.next_slot[region] += 1;
        self.staged_count += 1;
        Ok(())
    }

    fn into_changes(self) -> impl Iterator<Item = NetChange> {
        self.slots.into_iter().flatten()
    }
}

fn check_end_marker(role: FileRole, record_count: u64, records_applied: u64) -> Result<(), String> {
    if role == FileRole::Log {
        return Err("snapshot end marker inside the log".to_string());
    }
    if record_count != records_applied {
        return Err(format!(
            "end marker counts {record_count} records but {records_applied} were read"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::frames::seal_record;
    use crate::store::test_support::{
        DAMAGE_POINTS, HOUR, NOW, append_garbage, assert_mixed_state, ban, build_mixed_state,
        expect_corrupt, file_len, five_ban_log, five_ban_log_damaged_mid, flip_byte, log_path,
        many_bans, net, open, snapshot_path, sorted_bans,
    };
    use crate::store::{BanHistory, BanRecord, RECORD_HEADER_LEN, Store};
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::time::Instant;

    /// Appends a correctly framed record with arbitrary payload to the log.
    fn append_raw_record(dir: &Path, payload: &[u8]) {
        let mut framed = vec![0; RECORD_HEADER_LEN];
        framed.extend_from_slice(payload);
        seal_record(&mut framed, 0);
        let mut log = OpenOptions::new()
            .append(true)
            .open(log_path(dir))
            .expect("open log");
        log.write_all(&framed).expect("append");
    }

    #[test]
    fn torn_tail_garbage_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let valid_len = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            file_len(&log_path(dir.path()))
        };
        append_garbage(dir.path(), b"\x13\x00\x00\x00garbage that is not a record");
        {
            let mut store = open(dir.path());
            assert_eq!(store.ban_count(), 2);
            assert_eq!(file_len(&log_path(dir.path())), valid_len);
            store
                .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.ban_count(), 3);
    }

    #[test]
    fn record_cut_in_half_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let before_last = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            let before_last = file_len(&log_path(dir.path()));
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            before_last
        };
        let full = file_len(&log_path(dir.path()));
        let log = OpenOptions::new()
            .write(true)
            .open(log_path(dir.path()))
            .unwrap();
        log.set_len(before_last + (full - before_last) / 2).unwrap();
        drop(log);
        {
            let mut store = open(dir.path());
            assert_eq!(store.ban_count(), 1);
            assert!(store.get_ban(&net("192.0.2.1/32")).is_some());
            assert_eq!(file_len(&log_path(dir.path())), before_last);
            store.remove_ban(&net("192.0.2.1/32")).unwrap();
            store
                .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
                .unwrap();
        }
        let store = open(dir.path());
        let nets: Vec<IpNet> = sorted_bans(&store)
            .iter()
            .map(|record| record.net)
            .collect();
        assert_eq!(nets, vec![net("192.0.2.3/32")]);
    }

    #[test]
    fn zeroed_tail_and_cut_record_header_are_torn() {
        for tail in [&[0u8; 64][..], &[5, 0, 0][..]] {
            let dir = tempfile::tempdir().unwrap();
            {
                let mut store = open(dir.path());
                store.add_allow(net("192.0.2.0/24")).unwrap();
            }
            append_garbage(dir.path(), tail);
            let store = open(dir.path());
            assert_eq!(store.runtime_allows().count(), 1);
        }
    }

    #[test]
    fn bad_checksum_in_last_record_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
        }
        let mut bytes = fs::read(log_path(dir.path())).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(log_path(dir.path()), &bytes).unwrap();
        let store = open(dir.path());
        assert_eq!(store.ban_count(), 1);
    }

    #[test]
    fn intact_but_undecodable_log_record_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        append_raw_record(dir.path(), &[99, 1, 2, 3]);
        let (path, offset, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert_eq!(path, log_path(dir.path()));
        assert_eq!(offset, FILE_HEADER_LEN as u64);
        assert!(detail.contains("unknown record kind 99"), "{detail}");
    }

    #[test]
    fn snapshot_without_end_marker_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let bytes = fs::read(snapshot_path(dir.path())).unwrap();
        fs::write(snapshot_path(dir.path()), &bytes[..FILE_HEADER_LEN]).unwrap();
        let (_, _, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert!(detail.contains("no end marker"), "{detail}");
    }

    #[test]
    fn replaying_same_files_twice_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
        }
        for _ in 0..3 {
            let store = open(dir.path());
            assert_mixed_state(&store);
        }
    }

    /// Everything observable about a store, for comparing two of them.
    fn observable_state(
        store: &Store,
        nets: &[IpNet],
    ) -> (Vec<BanRecord>, Vec<BanHistory>, Vec<IpNet>) {
        let histories = nets.iter().map(|net| store.history(net)).collect();
        (
            sorted_bans(store),
            histories,
            store.runtime_allows().copied().collect(),
        )
    }

    /// Tiny deterministic generator so the test needs no extra crates.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % bound
        }
    }

    #[test]
    fn random_operations_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let nets: Vec<IpNet> = (0..90u32)
            .map(|i| match i % 3 {
                0 => net(&format!("192.0.{}.{}/32", i / 256, i % 256)),
                1 => net(&format!("2001:db8:{i:x}::/48")),
                _ => net(&format!("10.{}.{}.0/24", i / 256, i % 256)),
            })
            .collect();
        let mut random = Lcg(7);
        let mut store = open(dir.path());
        for round in 0..4 {
            for step in 0..300u64 {
                let target = nets[random.below(nets.len() as u64) as usize];
                let at = NOW + round * 100 + step % 50;
                match random.below(10) {
                    0..=4 => {
                        let expires = at + 1 + random.below(400);
                        let mut record = ban(
                            "192.0.2.1/32",
                            at,
                            expires,
                            ["a", "b", "c"][step as usize % 3],
                        );
                        record.net = target;
                        store.insert_bans(&[record]).unwrap();
                    }
                    5 | 6 => {
                        store.remove_ban(&target).unwrap();
                    }
                    7 => {
                        store.add_allow(target).unwrap();
                    }
                    8 => {
                        store.remove_allow(&target).unwrap();
                    }
                    _ => {
                        store.purge_expired(at);
                    }
                }
            }
            let reopen_at = store.latest_now;
            store.purge_expired(reopen_at);
            let expected = observable_state(&store, &nets);
            if round % 2 == 1 {
                store.compact().unwrap();
            }
            drop(store);
            store = Store::open(dir.path(), reopen_at).unwrap();
            assert_eq!(observable_state(&store, &nets), expected, "round {round}");
        }
    }

    /// Timing lives in the benches; run with
    /// `cargo test --release --lib store -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn million_bans_load_quickly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            for chunk in
                many_bans(1_000_000, &["ssh brute force", "http scan", "smtp auth"]).chunks(50_000)
            {
                store.insert_bans(chunk).unwrap();
            }
            store.compact().unwrap();
            store.insert_bans(&many_bans(100_000, &["again"])).unwrap();
        }
        let started = Instant::now();
        let store = open(dir.path());
        let elapsed = started.elapsed();
        assert_eq!(store.ban_count(), 1_000_000);
        eprintln!("loaded {} bans in {elapsed:?}", store.ban_count());
    }

    #[test]
    fn bad_frame_mid_log_stops_open_naming_file_offset_and_repair_commands() {
        for (what, within) in DAMAGE_POINTS {
            let dir = tempfile::tempdir().unwrap();
            let offsets = five_ban_log_damaged_mid(dir.path(), within);
            let log = log_path(dir.path());
            let before = fs::read(&log).unwrap();
            let error = Store::open(dir.path(), NOW).expect_err(what);
            let message = error.to_string();
            let StoreError::LogDamaged {
                path,
                offset,
                intact_after,
                ..
            } = error
            else {
                panic!("{what}: expected LogDamaged, got {message}");
            };
            assert_eq!(path, log, "{what}");
            assert_eq!(offset, offsets[1] as u64, "{what}");
            assert_eq!(intact_after, 3, "{what}");
            for needed in [
                log.display().to_string(),
                format!("at byte {}", offsets[1]),
                "orch store verify".to_string(),
                "orch store salvage".to_string(),
            ] {
                assert!(
                    message.contains(&needed),
                    "{what}: {needed:?} missing in {message}"
                );
            }
            assert_eq!(
                fs::read(&log).unwrap(),
                before,
                "{what}: the log is left alone"
            );
        }
    }

    #[test]
    fn bad_last_frame_is_still_a_torn_tail() {
        for (what, within) in DAMAGE_POINTS {
            let dir = tempfile::tempdir().unwrap();
            let offsets = five_ban_log(dir.path());
            flip_byte(&log_path(dir.path()), offsets[4] + within);
            let store = Store::open(dir.path(), NOW).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(store.ban_count(), 4, "{what}");
            assert_eq!(file_len(&log_path(dir.path())), offsets[4] as u64, "{what}");
        }
    }
}
