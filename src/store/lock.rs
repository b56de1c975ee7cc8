//! The store directory's lock: one process at a time writes a store, and
//! the lock file names the holder for the messages of those refused.
//!
//! It only takes the lock and reads the holder's pid; it must not touch
//! the store files.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::{FILE_MODE, LOCK_FILE, StoreError, io_error};

/// Takes an exclusive, non-blocking lock so two processes never write the
/// same store.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|error| io_error("open lock file", &path, error))?;
    match file.try_lock() {
        Ok(()) => {
            // Names the holder for `orch store salvage` and `verify`; only
            // a hint, so a failure to write it changes nothing.
            let pid = format!("{}\n", std::process::id());
            let _ = file
                .set_len(0)
                .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            pid: lock_file_pid(dir),
        }),
        Err(TryLockError::Error(error)) => Err(io_error("lock", &path, error)),
    }
}

/// The pid the last holder of the lock wrote into the lock file, if any.
/// It may be stale: whether the lock is held is another question.
fn lock_file_pid(dir: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(dir.join(LOCK_FILE))
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::test_support::{NOW, assert_locked_by_this_process, open};

    #[test]
    fn second_open_of_same_dir_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        assert!(matches!(
            Store::open(dir.path(), NOW),
            Err(StoreError::Locked { .. })
        ));
        drop(first);
        drop(open(dir.path()));
    }

    #[test]
    fn lock_file_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path());
        assert_locked_by_this_process(Store::open(dir.path(), NOW).expect_err("locked"));
    }
}
