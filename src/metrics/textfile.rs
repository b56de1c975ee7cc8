//! The node_exporter textfile: the metrics written to a `.prom` file every
//! `interval`, atomically (a temporary file beside it, renamed over it), so
//! the collector never reads half a file.
//!
//! The temporary name does not end in `.prom`, so the collector skips it.
//! This module writes only that file and its temporary; it renders what
//! the daemon already published and never queues work on the core.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server::Render;

/// Mode of the file: node_exporter runs as another user.
const FILE_MODE: u32 = 0o644;

/// Rewrites `path` every `interval` until the task is dropped. A failure
/// is logged when it starts and when it ends, not at every attempt.
pub async fn run(path: PathBuf, interval: Duration, render: Render) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let (target, render) = (path.clone(), render.clone());
        let written = tokio::task::spawn_blocking(move || write_atomically(&target, &render()))
            .await
            .unwrap_or_else(|err| Err(std::io::Error::other(err)));
        match written {
            Ok(()) if failing => {
                tracing::info!(path = %path.display(), "metrics textfile written again");
                failing = false;
            }
            Ok(()) => {}
            Err(err) if !failing => {
                tracing::warn!(path = %path.display(), "cannot write the metrics textfile: {err}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Writes `text` to `path` through `<path>.tmp` (mode 0644) and a rename.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(".tmp");
    let staging = PathBuf::from(staging);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&staging)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            // The daemon's umask (0077 in the unit) narrows the mode.
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        })
        .and_then(|()| std::fs::rename(&staging, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("orch.prom");
        super::write_atomically(&path, "orch_a 1\n").expect("first");
        super::write_atomically(&path, "orch_a 2\n").expect("second");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "orch_a 2\n");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["orch.prom"], "no temporary file is left");
        let missing = dir.path().join("no/such/dir/orch.prom");
        assert!(super::write_atomically(&missing, "x").is_err());
    }
}
