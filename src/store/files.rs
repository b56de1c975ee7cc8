//! The store's files on disk: loading the snapshot and the log (cutting a
//! torn tail), writing snapshots and empty logs, and replacing files
//! atomically (tmp file, fsync, rename, directory fsync), keeping the
//! previous pair.
//!
//! It must not decide what a record means (`replay.rs` does) nor when to
//! compact (the `Store` does, and appends to the log itself).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::frames::{encode_file_header, encode_record, parse_file_header};
use super::records::{
    Record, ban_record_payload, history_record, jail_history_record, shadow_record,
};
use super::replay::{FileRole, TornTail, replay_file};
use super::state::{BanSlot, MemState, history_is_retained};
use super::{
    DIR_MODE, FILE_HEADER_LEN, FILE_MODE, HEADER_GENERATION_OFFSET, LOG_FILE, LOG_MAGIC,
    LOG_PREV_FILE, LOG_TMP_FILE, PREV_LINK_TMP_FILE, SNAPSHOT_FILE, SNAPSHOT_MAGIC,
    SNAPSHOT_PREV_FILE, SNAPSHOT_TMP_FILE, SNAPSHOT_WRITE_BUFFER, StoreError, corrupt, io_error,
};

pub(super) struct LoadedSnapshot {
    pub(super) generation: u64,
    pub(super) len: u64,
}

/// Replays the snapshot at `path` into `state`; `None` if there is none.
pub(super) fn load_snapshot(
    path: &Path,
    state: &mut MemState,
    now: u64,
) -> Result<Option<LoadedSnapshot>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", path, error)),
    };
    let generation = parse_file_header(&bytes, &SNAPSHOT_MAGIC, path)?;
    replay_file(state, &bytes, FileRole::Snapshot, path, now)?;
    Ok(Some(LoadedSnapshot {
        generation,
        len: bytes.len() as u64,
    }))
}

/// Keeps the current snapshot and log as the previous ones (hard links,
/// each swapped in by rename), so that the next snapshot, if damaged, can
/// be rebuilt from them.
pub(super) fn keep_as_previous(dir: &Path) -> Result<(), StoreError> {
    for (current, previous) in [
        (SNAPSHOT_FILE, SNAPSHOT_PREV_FILE),
        (LOG_FILE, LOG_PREV_FILE),
    ] {
        link_as(dir, current, PREV_LINK_TMP_FILE)?;
        rename_into_place(dir, PREV_LINK_TMP_FILE, previous)?;
    }
    sync_dir(dir)
}

/// Hard-links `dir/name` as `dir/link_name`, replacing a leftover link.
fn link_as(dir: &Path, name: &str, link_name: &str) -> Result<(), StoreError> {
    let link = dir.join(link_name);
    let _ = fs::remove_file(&link);
    fs::hard_link(dir.join(name), &link).map_err(|error| io_error("link", &dir.join(name), error))
}

/// Keeps `dir/name` as `dir/name.damaged-<now>` (a hard link, so the file
/// stays in place until it is replaced); `None` if there is no such file.
pub(super) fn keep_aside(dir: &Path, name: &str, now: u64) -> Result<Option<PathBuf>, StoreError> {
    if !dir.join(name).exists() {
        return Ok(None);
    }
    let mut kept_name = format!("{name}.damaged-{now}");
    let mut attempt = 1;
    while dir.join(&kept_name).exists() {
        attempt += 1;
        kept_name = format!("{name}.damaged-{now}.{attempt}");
    }
    fs::hard_link(dir.join(name), dir.join(&kept_name))
        .map_err(|error| io_error("keep aside", &dir.join(name), error))?;
    Ok(Some(dir.join(kept_name)))
}

pub(super) struct OpenedLog {
    pub(super) file: File,
    pub(super) len: u64,
}

/// Replays the log of `snapshot_generation` into `state`, cutting a torn
/// tail; a missing, headerless or stale (pre-compaction) log is replaced by
/// an empty one without being replayed.
pub(super) fn open_log(
    dir: &Path,
    snapshot_generation: u64,
    state: &mut MemState,
    now: u64,
) -> Result<OpenedLog, StoreError> {
    let path = dir.join(LOG_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return fresh_log(dir, snapshot_generation);
        }
        Err(error) => return Err(io_error("open", &path, error)),
    };
    let bytes = read_whole(&file, &path)?;
    if bytes.len() < FILE_HEADER_LEN {
        tracing::warn!(
            path = %path.display(),
            len = bytes.len(),
            "ban store: log has no complete header; starting an empty log"
        );
        return fresh_log(dir, snapshot_generation);
    }
    let log_generation = parse_file_header(&bytes, &LOG_MAGIC, &path)?;
    if log_generation < snapshot_generation {
        tracing::warn!(
            path = %path.display(),
            log_generation,
            snapshot_generation,
            "ban store: ignoring a log already folded into the snapshot (crash during compaction)"
        );
        return fresh_log(dir, snapshot_generation);
    }
    if log_generation > snapshot_generation {
        let detail = format!(
            "log generation {log_generation} is newer than snapshot generation \
             {snapshot_generation} (snapshot lost or replaced?)"
        );
        return Err(corrupt(&path, HEADER_GENERATION_OFFSET, detail));
    }
    let valid_len = match replay_file(state, &bytes, FileRole::Log, &path, now)? {
        Some(torn) => cut_torn_tail(&file, &path, &torn, bytes.len())?,
        None => bytes.len(),
    };
    Ok(OpenedLog {
        file,
        len: valid_len as u64,
    })
}

fn fresh_log(dir: &Path, generation: u64) -> Result<OpenedLog, StoreError> {
    Ok(OpenedLog {
        file: create_log(dir, generation)?,
        len: FILE_HEADER_LEN as u64,
    })
}

fn cut_torn_tail(
    file: &File,
    path: &Path,
    torn: &TornTail,
    file_len: usize,
) -> Result<usize, StoreError> {
    tracing::warn!(
        path = %path.display(),
        offset = torn.offset,
        dropped_bytes = file_len - torn.offset,
        problem = torn.detail,
        "ban store: log ends in a torn or damaged record (crash mid-write?); truncating it away"
    );
    file.set_len(torn.offset as u64)
        .and_then(|()| file.sync_data())
        .map_err(|error| io_error("truncate torn tail of", path, error))?;
    Ok(torn.offset)
}

fn read_whole(mut file: &File, path: &Path) -> Result<Vec<u8>, StoreError> {
    let expected_len = file.metadata().map(|meta| meta.len() as usize).unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected_len);
    file.read_to_end(&mut bytes)
        .map_err(|error| io_error("read", path, error))?;
    Ok(bytes)
}

/// Atomically installs an empty log of `generation` and returns it open for
/// reading and writing.
pub(super) fn create_log(dir: &Path, generation: u64) -> Result<File, StoreError> {
    let header = encode_file_header(&LOG_MAGIC, generation);
    let (file, _) = write_synced_tmp(dir, LOG_TMP_FILE, |out| out.write_all(&header))?;
    rename_into_place(dir, LOG_TMP_FILE, LOG_FILE)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Installs a snapshot holding nothing (first open of a new store).
pub(super) fn write_empty_snapshot(dir: &Path, generation: u64) -> Result<u64, StoreError> {
    let empty = MemState::default();
    let written = write_snapshot_tmp(dir, generation, &empty, 0)?;
    rename_into_place(dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE)?;
    sync_dir(dir)?;
    Ok(written)
}

/// Writes `state` as a complete, fsynced snapshot of `generation` to the
/// tmp file; returns its length. Bans expired at `now` become history.
pub(super) fn write_snapshot_tmp(
    dir: &Path,
    generation: u64,
    state: &MemState,
    now: u64,
) -> Result<u64, StoreError> {
    let (_, written) = write_synced_tmp(dir, SNAPSHOT_TMP_FILE, |out| {
        out.write_all(&encode_file_header(&SNAPSHOT_MAGIC, generation))?;
        write_snapshot_records(out, state, now)
    })?;
    Ok(written)
}

fn write_snapshot_records(
    out: &mut BufWriter<&File>,
    state: &MemState,
    now: u64,
) -> io::Result<()> {
    let mut scratch = Vec::with_capacity(256);
    let mut record_count: u64 = 0;
    let mut emit = |out: &mut BufWriter<&File>, record: &Record<'_>| {
        scratch.clear();
        encode_record(&mut scratch, record);
        record_count += 1;
        out.write_all(&scratch)
    };
    // Each net has at most one Ban or History record here, so their order
    // does not matter (see `replay_file`).
    for BanSlot(ban) in &state.bans {
        let history = state.active_history(ban);
        if ban.expires > now {
            emit(out, &ban_record_payload(ban, history.count))?;
        } else {
            emit(out, &history_record(ban.net, history))?;
        }
    }
    for (net, history) in &state.idle_history {
        if history_is_retained(history, now) {
            emit(out, &history_record(*net, *history))?;
        }
    }
    for net in &state.allows {
        match state.allow_notes.get(net) {
            Some(note) => emit(out, &super::records::allow_noted_record(*net, note))?,
            None => emit(out, &Record::Allow { net: *net })?,
        }
    }
    for (key, value) in &state.cursors {
        emit(out, &Record::Cursor { key, value })?;
    }
    for (jail, net, history) in state.jail_histories.iter() {
        if history_is_retained(&history, now) {
            emit(out, &jail_history_record(jail, net, history))?;
        }
    }
    for shadow in state.shadows.values() {
        if shadow.expires > now {
            emit(out, &shadow_record(shadow))?;
        }
    }
    let mut end = Vec::with_capacity(32);
    encode_record(&mut end, &Record::SnapshotEnd { record_count });
    out.write_all(&end)
}

/// Creates `dir/tmp_name` (0600, truncated), fills it through a buffer and
/// fsyncs it. Returns the open file and its length. The tmp file is removed
/// again if anything fails.
fn write_synced_tmp(
    dir: &Path,
    tmp_name: &str,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(File, u64), StoreError> {
    let path = dir.join(tmp_name);
    let written = create_and_fill(&path, fill);
    if written.is_err() {
        let _ = fs::remove_file(&path);
    }
    written.map_err(|error| io_error("write", &path, error))
}

fn create_and_fill(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    {
        let mut out = BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER, &file);
        fill(&mut out)?;
        out.flush()?;
    }
    file.sync_all()?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

pub(super) fn rename_into_place(
    dir: &Path,
    tmp_name: &str,
    final_name: &str,
) -> Result<(), StoreError> {
    let tmp_path = dir.join(tmp_name);
    fs::rename(&tmp_path, dir.join(final_name))
        .map_err(|error| io_error("rename", &tmp_path, error))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| io_error("fsync directory", dir, error))
}

pub(super) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|error| io_error("create directory", dir, error))
}

/// Tmp files left by a crash mid-compaction were never renamed into place,
/// so they hold nothing the real files lack.
pub(super) fn remove_leftover_tmp_files(dir: &Path) {
    for name in [SNAPSHOT_TMP_FILE, LOG_TMP_FILE, PREV_LINK_TMP_FILE] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "ban store: removed leftover tmp file")
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "ban store: cannot remove leftover tmp file"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{
        HOUR, NOW, assert_mixed_state, ban, build_mixed_state, expect_corrupt, file_len, log_path,
        net, open, snapshot_path,
    };
    use crate::store::{BanHistory, LOCK_FILE, Store};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_store_creates_private_dir_and_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state").join("orch");
        let store = open(&dir);
        assert_eq!(store.dir(), dir.as_path());
        assert_eq!(store.ban_count(), 0);
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for name in [SNAPSHOT_FILE, LOG_FILE, LOCK_FILE] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        assert_eq!(file_len(&log_path(&dir)), FILE_HEADER_LEN as u64);
    }

    #[test]
    fn log_newer_than_snapshot_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        fs::write(log_path(dir.path()), encode_file_header(&LOG_MAGIC, 7)).unwrap();
        let (path, _, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert_eq!(path, log_path(dir.path()));
        assert!(detail.contains("newer"), "{detail}");
    }

    #[test]
    fn missing_log_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            store.compact().unwrap();
        }
        fs::remove_file(log_path(dir.path())).unwrap();
        let mut store = open(dir.path());
        assert_eq!(store.ban_count(), 1);
        store
            .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
            .unwrap();
        drop(store);
        assert_eq!(open(dir.path()).ban_count(), 2);
    }

    #[test]
    fn compaction_turns_expired_bans_into_history() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.1/32", NOW, NOW + 10, "a"),
                    ban("192.0.2.1/32", NOW + 1, NOW + 10, "b"),
                ])
                .unwrap();
            store.purge_expired(NOW + 5); // advances the store's clock only
            assert_eq!(store.ban_count(), 1);
            store.latest_now = NOW + 10;
            store.compact().unwrap();
            assert_eq!(
                store.ban_count(),
                1,
                "memory keeps it until purge_expired reports it"
            );
        }
        let store = Store::open(dir.path(), NOW).unwrap();
        assert_eq!(store.ban_count(), 0, "snapshot holds no expired ban");
        assert_eq!(
            store.history(&net("192.0.2.1/32")),
            BanHistory {
                count: 2,
                last_banned: NOW + 1
            }
        );
    }

    #[test]
    fn crash_after_snapshot_rename_before_log_reset_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let stale_log = {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
            let stale_log = fs::read(log_path(dir.path())).unwrap();
            store.compact().unwrap();
            stale_log
        };
        // Disk as if the crash hit between the snapshot rename and the log
        // replacement: new snapshot, old (fully folded-in) log.
        fs::write(log_path(dir.path()), &stale_log).unwrap();
        {
            let mut store = open(dir.path());
            assert_mixed_state(&store);
            assert_eq!(
                file_len(&log_path(dir.path())),
                FILE_HEADER_LEN as u64,
                "stale log replaced"
            );
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW + 2, NOW + HOUR, "a")])
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.history(&net("192.0.2.1/32")).count, 3);
    }

    #[test]
    fn crash_before_snapshot_rename_keeps_old_files_authoritative() {
        let dir = tempfile::tempdir().unwrap();
        let (old_snapshot, old_log) = {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
            let saved = (
                fs::read(snapshot_path(dir.path())).unwrap(),
                fs::read(log_path(dir.path())).unwrap(),
            );
            store.compact().unwrap();
            saved
        };
        // Disk as if the crash hit after writing the tmp snapshot but before
        // renaming it: old snapshot and log, plus a (possibly partial) tmp.
        let new_snapshot = fs::read(snapshot_path(dir.path())).unwrap();
        fs::write(
            dir.path().join(SNAPSHOT_TMP_FILE),
            &new_snapshot[..new_snapshot.len() / 2],
        )
        .unwrap();
        fs::write(snapshot_path(dir.path()), &old_snapshot).unwrap();
        fs::write(log_path(dir.path()), &old_log).unwrap();
        let store = open(dir.path());
        assert_mixed_state(&store);
        assert!(
            !dir.path().join(SNAPSHOT_TMP_FILE).exists(),
            "leftover tmp removed"
        );
    }

    #[test]
    fn compaction_keeps_previous_snapshot_and_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        build_mixed_state(&mut store);
        let log_before = fs::read(log_path(dir.path())).unwrap();
        let snapshot_before = fs::read(snapshot_path(dir.path())).unwrap();
        store.compact().unwrap();
        assert_eq!(
            fs::read(dir.path().join(LOG_PREV_FILE)).unwrap(),
            log_before
        );
        assert_eq!(
            fs::read(dir.path().join(SNAPSHOT_PREV_FILE)).unwrap(),
            snapshot_before
        );
        assert!(!dir.path().join(PREV_LINK_TMP_FILE).exists());
        store
            .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
            .unwrap();
        assert_eq!(
            fs::read(dir.path().join(LOG_PREV_FILE)).unwrap(),
            log_before,
            "appends go to the new log only"
        );
    }
}
