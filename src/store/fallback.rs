//! Rebuilding a damaged or missing snapshot at start from the previous
//! snapshot and its log (`bans.snap.prev`, `bans.log.prev`), keeping the
//! damaged file aside.
//!
//! It must not guess: when the previous pair cannot stand in exactly (a
//! file missing or damaged, a generation gap) it returns the damage for
//! `orch store verify` / `salvage`, and it never repairs anything else.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use super::files::{
    LoadedSnapshot, keep_aside, load_snapshot, rename_into_place, sync_dir, write_snapshot_tmp,
};
use super::frames::parse_file_header;
use super::replay::{FileRole, replay_file};
use super::state::MemState;
use super::{
    FILE_HEADER_LEN, LOG_FILE, LOG_MAGIC, LOG_PREV_FILE, SNAPSHOT_FILE, SNAPSHOT_MAGIC,
    SNAPSHOT_PREV_FILE, SNAPSHOT_TMP_FILE, StoreError, io_error,
};

/// Rebuilds a damaged (or missing) current snapshot from the previous
/// snapshot and the log appended to it, which is exactly what compaction
/// folded into the current one. Logs loudly, keeps the damaged file as
/// `bans.snap.damaged-<now>`, installs the rebuilt snapshot (so the log of
/// the current generation applies on top as usual) and returns it. When
/// the previous snapshot or its log is missing or damaged too, or is not
/// the generation just before the damaged one, returns `damage` with why.
pub(super) fn fall_back_to_previous(
    dir: &Path,
    state: &mut MemState,
    now: u64,
    damage: StoreError,
) -> Result<LoadedSnapshot, StoreError> {
    let previous = match load_snapshot(&dir.join(SNAPSHOT_PREV_FILE), state, now) {
        Ok(Some(previous)) => previous,
        Ok(None) => {
            let why = format!("there is no {SNAPSHOT_PREV_FILE} (the first compaction makes one)");
            return Err(fallback_failed(damage, &why));
        }
        Err(error) => return Err(fallback_failed(damage, &damage_summary(&error))),
    };
    let generation = previous.generation;
    let damaged_generation = read_file_generation(&dir.join(SNAPSHOT_FILE), &SNAPSHOT_MAGIC);
    if let Some(damaged) = damaged_generation.filter(|&damaged| damaged != generation + 1) {
        let why = format!(
            "{SNAPSHOT_PREV_FILE} is generation {generation}, the damaged snapshot {damaged}: \
             the logs between them are gone"
        );
        return Err(fallback_failed(damage, &why));
    }
    if let Some(newer) = read_file_generation(&dir.join(LOG_FILE), &LOG_MAGIC)
        .filter(|&current| current > generation + 1)
    {
        let why = format!(
            "{SNAPSHOT_PREV_FILE} is generation {generation}, {LOG_FILE} {newer}: \
             the logs between them are gone"
        );
        return Err(fallback_failed(damage, &why));
    }
    let Some(log_path) = [LOG_PREV_FILE, LOG_FILE]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| read_file_generation(path, &LOG_MAGIC) == Some(generation))
    else {
        let why = format!("no log of its generation {generation} is left");
        return Err(fallback_failed(damage, &why));
    };
    let replayed = fs::read(&log_path)
        .map_err(|error| io_error("read", &log_path, error))
        .and_then(|bytes| replay_file(state, &bytes, FileRole::Log, &log_path, now));
    match replayed {
        Ok(None) => {}
        Ok(Some(torn)) => tracing::warn!(
            path = %log_path.display(),
            offset = torn.offset,
            problem = torn.detail,
            "ban store: the previous snapshot's log ends in a torn record; replayed up to it"
        ),
        Err(error) => return Err(fallback_failed(damage, &damage_summary(&error))),
    }
    let rebuilt_generation = generation + 1;
    let len = write_snapshot_tmp(dir, rebuilt_generation, state, now)?;
    let kept = keep_aside(dir, SNAPSHOT_FILE, now)?;
    rename_into_place(dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE)?;
    sync_dir(dir)?;
    let kept = kept.map_or_else(
        || "nothing (it was missing)".to_string(),
        |kept| kept.display().to_string(),
    );
    tracing::warn!(
        damage = %damage_summary(&damage),
        damaged_file_kept_as = %kept,
        rebuilt_from = %format!("{SNAPSHOT_PREV_FILE} + {}", log_path.display()),
        "BAN STORE SNAPSHOT DAMAGED: rebuilt it from the previous snapshot and its log; \
         no ban is lost. Check the disk; `orch store verify` shows what else is damaged"
    );
    Ok(LoadedSnapshot {
        generation: rebuilt_generation,
        len,
    })
}

/// `damage` with why the previous snapshot could not stand in for it.
fn fallback_failed(damage: StoreError, why: &str) -> StoreError {
    match damage {
        StoreError::Corrupt {
            path,
            offset,
            detail,
        } => StoreError::Corrupt {
            path,
            offset,
            detail: format!("{detail}; the previous snapshot cannot stand in for it: {why}"),
        },
        other => other,
    }
}

/// One line about a store error, without the repair hint.
fn damage_summary(error: &StoreError) -> String {
    match error {
        StoreError::Corrupt {
            path,
            offset,
            detail,
        }
        | StoreError::LogDamaged {
            path,
            offset,
            detail,
            ..
        } => format!("{} is damaged at byte {offset}: {detail}", path.display()),
        other => other.to_string(),
    }
}

/// The generation in the header of the file at `path`, if it has a sound
/// header of the kind `magic` (reads the header only).
fn read_file_generation(path: &Path, magic: &[u8; 8]) -> Option<u64> {
    let mut header = Vec::with_capacity(FILE_HEADER_LEN);
    File::open(path)
        .ok()?
        .take(FILE_HEADER_LEN as u64)
        .read_to_end(&mut header)
        .ok()?;
    parse_file_header(&header, magic, path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{
        HOUR, NOW, ban, build_mixed_state, expect_corrupt, file_len, flip_byte, log_path, net,
        open, snapshot_path, sorted_bans, store_with_two_generations,
    };
    use crate::store::{
        BanRecord, FILE_HEADER_CRC_OFFSET, HEADER_GENERATION_OFFSET, RECORD_HEADER_LEN, Store,
    };
    use ipnet::IpNet;

    /// Fifty bans compacted into the snapshot, then the previous snapshot
    /// and log removed, as in a store that never compacted twice.
    fn store_without_previous_snapshot(dir: &Path) {
        let mut store = open(dir);
        let bans: Vec<BanRecord> = (0..50u32)
            .map(|i| ban(&format!("192.0.2.{i}/32"), NOW, NOW + HOUR, "scan"))
            .collect();
        store.insert_bans(&bans).unwrap();
        store.compact().unwrap();
        drop(store);
        fs::remove_file(dir.join(SNAPSHOT_PREV_FILE)).unwrap();
        fs::remove_file(dir.join(LOG_PREV_FILE)).unwrap();
    }

    #[test]
    fn damaged_snapshot_without_previous_is_corrupt_with_offset_and_repair_hint() {
        let dir = tempfile::tempdir().unwrap();
        store_without_previous_snapshot(dir.path());
        let mut bytes = fs::read(snapshot_path(dir.path())).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        fs::write(snapshot_path(dir.path()), &bytes).unwrap();
        let error = Store::open(dir.path(), NOW).expect_err("damaged snapshot");
        let message = error.to_string();
        let (path, offset, detail) = expect_corrupt(Err(error));
        assert_eq!(path, snapshot_path(dir.path()));
        assert!(
            offset >= FILE_HEADER_LEN as u64 && offset <= middle as u64,
            "{offset}"
        );
        assert!(detail.contains("there is no bans.snap.prev"), "{detail}");
        for needed in [
            snapshot_path(dir.path()).display().to_string(),
            format!("at byte {offset}"),
            "orch store verify".to_string(),
            "orch store salvage".to_string(),
        ] {
            assert!(message.contains(&needed), "{needed:?} missing in {message}");
        }
    }

    fn bans_and_allows(store: &Store) -> (Vec<BanRecord>, Vec<IpNet>) {
        (
            sorted_bans(store),
            store.runtime_allows().copied().collect(),
        )
    }

    fn kept_damaged_snapshots(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("bans.snap.damaged-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn damaged_snapshot_falls_back_to_previous_plus_logs_with_the_same_bans() {
        let snapshot_points = [
            ("magic", 2),
            ("generation", HEADER_GENERATION_OFFSET + 1),
            ("header crc", FILE_HEADER_CRC_OFFSET),
            ("first frame length", FILE_HEADER_LEN + 1),
            (
                "first frame payload",
                FILE_HEADER_LEN + RECORD_HEADER_LEN + 3,
            ),
            ("end marker", usize::MAX),
        ];
        for (what, offset) in snapshot_points {
            let dir = tempfile::tempdir().unwrap();
            let expected = store_with_two_generations(dir.path());
            let snapshot = snapshot_path(dir.path());
            let offset = if offset == usize::MAX {
                file_len(&snapshot) as usize - 2
            } else {
                offset
            };
            flip_byte(&snapshot, offset);
            let damaged = fs::read(&snapshot).unwrap();
            let mut store = Store::open(dir.path(), NOW).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(bans_and_allows(&store), expected, "{what}");
            assert_eq!(store.history(&net("192.0.2.1/32")).count, 2, "{what}");
            let kept = kept_damaged_snapshots(dir.path());
            assert_eq!(kept, [format!("bans.snap.damaged-{NOW}")], "{what}");
            assert_eq!(
                fs::read(dir.path().join(&kept[0])).unwrap(),
                damaged,
                "{what}"
            );
            // The rebuilt snapshot takes the damaged one's place: appends
            // and later starts go on as usual, with no second rebuild.
            store
                .insert_bans(&[ban("192.0.2.30/32", NOW, NOW + HOUR, "after")])
                .unwrap();
            drop(store);
            let store = open(dir.path());
            assert_eq!(store.ban_count(), expected.0.len() + 1, "{what}");
            assert_eq!(kept_damaged_snapshots(dir.path()).len(), 1, "{what}");
        }
    }

    #[test]
    fn missing_snapshot_with_previous_one_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let expected = store_with_two_generations(dir.path());
        fs::remove_file(snapshot_path(dir.path())).unwrap();
        let store = open(dir.path());
        assert_eq!(bans_and_allows(&store), expected);
    }

    #[test]
    fn crash_after_compaction_rename_then_damaged_snapshot_still_falls_back() {
        // New snapshot in place, the old log not yet replaced (it is the
        // previous log too): the previous snapshot and that log rebuild it.
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
            store.compact().unwrap();
            store
                .insert_bans(&[ban("192.0.2.10/32", NOW, NOW + HOUR, "x")])
                .unwrap();
            let expected = bans_and_allows(&store);
            let old_log = fs::read(log_path(dir.path())).unwrap();
            store.compact().unwrap();
            drop(store);
            fs::write(log_path(dir.path()), old_log).unwrap();
            expected
        };
        fs::remove_file(dir.path().join(LOG_PREV_FILE)).unwrap();
        flip_byte(&snapshot_path(dir.path()), FILE_HEADER_LEN + 1);
        let store = open(dir.path());
        assert_eq!(bans_and_allows(&store), expected);
    }

    #[test]
    fn both_snapshots_damaged_stops_open_naming_repair_commands() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_generations(dir.path());
        flip_byte(&snapshot_path(dir.path()), FILE_HEADER_LEN + 1);
        flip_byte(&dir.path().join(SNAPSHOT_PREV_FILE), FILE_HEADER_LEN + 1);
        let error = Store::open(dir.path(), NOW).expect_err("no sound snapshot");
        let message = error.to_string();
        let (path, offset, detail) = expect_corrupt(Err(error));
        assert_eq!(path, snapshot_path(dir.path()));
        assert_eq!(offset, FILE_HEADER_LEN as u64);
        assert!(
            detail.contains("the previous snapshot cannot stand in"),
            "{detail}"
        );
        assert!(detail.contains(SNAPSHOT_PREV_FILE), "{detail}");
        assert!(message.contains("orch store verify"), "{message}");
        assert!(message.contains("orch store salvage"), "{message}");
        assert!(
            kept_damaged_snapshots(dir.path()).is_empty(),
            "nothing moved"
        );
    }

    #[test]
    fn previous_snapshot_without_its_log_does_not_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_generations(dir.path());
        fs::remove_file(dir.path().join(LOG_PREV_FILE)).unwrap();
        flip_byte(&snapshot_path(dir.path()), FILE_HEADER_LEN + 1);
        let (_, _, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert!(detail.contains("no log of its generation 1"), "{detail}");
    }
}
