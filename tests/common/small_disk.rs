//! A small tmpfs mounted over a directory, for tests of a full disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_command;

/// A tmpfs of `size` mounted over `dir` (its files copied in first),
/// unmounted (lazily, whoever still holds it) when dropped.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    pub fn mount_over(dir: &Path, size: &str) -> SmallDisk {
        let saved = tempfile::tempdir().expect("tempdir");
        run_command(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", dir.display()))
                .arg(saved.path()),
        )
        .expect_ok("save the state dir");
        run_command(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "orch-test-full",
                ])
                .arg(dir),
        )
        .expect_ok("mount a small tmpfs");
        run_command(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", saved.path().display()))
                .arg(dir),
        )
        .expect_ok("restore the state dir");
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a file until the disk is full.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let block = vec![0x55u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(err) => panic!("filling the disk: {err}"),
            }
        }
        // Small writes take what whole blocks left.
        while file.write(&[0x55]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
