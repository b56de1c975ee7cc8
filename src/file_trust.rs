//! Whether only root could have written a file orch runs or trusts (hooks
//! today), as run-parts, cron and ssh judge it: the file, after resolving
//! symlinks, and every directory above it up to `/` must belong to root and
//! not be writable by group or others. A root-owned directory with the
//! sticky bit (such as /tmp) is accepted above it: others may add entries
//! there, but not replace the root-owned one on the path.
//!
//! Secrets (the fleet's password, nkey, creds and TLS key files) must
//! moreover be regular files that only root can read, as ssh demands of
//! private keys, and are read with a size limit.
//!
//! It only judges; callers decide what to skip and how to report it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a file is not trusted, with the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("cannot check {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path} belongs to uid {uid}, not root (fix: chown root: {path})")]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{path} is writable by group or others (mode {mode:04o}; fix: chmod go-w {path})")]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{path} holds a secret but is readable by group or others (mode {mode:04o}; fix: chmod 600 {path})"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {limit} bytes: not a secret orch reads")]
    TooLarge { path: PathBuf, limit: u64 },
}

/// Largest secret file read, in bytes (a NATS .creds file is about 1 KB).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Checks a secret file: a regular file, root's, readable by root alone,
/// and only root able to change the directories above it.
pub fn check_secret(path: &Path) -> Result<(), Untrusted> {
    check_root_only(path)?;
    let meta = std::fs::metadata(path).map_err(|e| Untrusted::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(Untrusted::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Untrusted::Readable {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(Untrusted::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_SECRET_BYTES,
        });
    }
    Ok(())
}

/// Reads a secret after [`check_secret`], at most [`MAX_SECRET_BYTES`].
pub fn read_secret(path: &Path) -> Result<String, Untrusted> {
    use std::io::Read;
    check_secret(path)?;
    let unreadable = |e: std::io::Error| Untrusted::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_SECRET_BYTES)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    Ok(text)
}

/// Checks `path` (a file) and every directory above its real location.
pub fn check_root_only(path: &Path) -> Result<(), Untrusted> {
    let real = path.canonicalize().map_err(|e| Untrusted::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check_one(&real, false)?;
    let mut dir = real.parent();
    while let Some(current) = dir {
        check_one(current, true)?;
        dir = current.parent();
    }
    Ok(())
}

fn check_one(path: &Path, is_dir: bool) -> Result<(), Untrusted> {
    let meta = std::fs::metadata(path).map_err(|e| Untrusted::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if meta.uid() != 0 {
        return Err(Untrusted::NotRootOwned {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(is_dir && sticky) {
        return Err(Untrusted::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn only_root_writable_files_in_root_writable_directories_pass() {
        // Tests run as root (the suite needs it for namespaces).
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hook");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        chmod(&file, 0o755);
        assert_eq!(check_root_only(&file), Ok(()), "/tmp is sticky: accepted");

        chmod(&file, 0o775);
        assert!(matches!(
            check_root_only(&file),
            Err(Untrusted::Writable { mode: 0o775, .. })
        ));
        chmod(&file, 0o755);

        // A writable directory on the way, and a symlink into it.
        let open_dir = dir.path().join("open");
        std::fs::create_dir(&open_dir).expect("mkdir");
        chmod(&open_dir, 0o777);
        let inside = open_dir.join("target");
        std::fs::write(&inside, "#!/bin/sh\n").expect("write");
        chmod(&inside, 0o755);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&inside, &link).expect("symlink");
        let refused = check_root_only(&link).unwrap_err();
        assert!(
            matches!(&refused, Untrusted::Writable { path, .. } if path.ends_with("open")),
            "{refused}"
        );
        assert!(refused.to_string().contains("chmod go-w"), "{refused}");

        // Not root's.
        std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
        let refused = check_root_only(&file).unwrap_err();
        assert!(
            matches!(refused, Untrusted::NotRootOwned { uid: 65534, .. }),
            "{refused}"
        );
        assert!(check_root_only(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn secrets_must_be_root_only_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("fleet.password");
        std::fs::write(&secret, "s3cret\n").expect("write");
        chmod(&secret, 0o600);
        assert_eq!(read_secret(&secret).as_deref(), Ok("s3cret\n"));
        chmod(&secret, 0o640);
        let refused = read_secret(&secret).unwrap_err();
        assert!(
            refused.to_string().contains("mode 0640; fix: chmod 600"),
            "{refused}"
        );
        let huge = dir.path().join("huge.creds");
        std::fs::write(&huge, vec![b'x'; MAX_SECRET_BYTES as usize + 1]).expect("write");
        chmod(&huge, 0o600);
        assert!(matches!(
            read_secret(&huge),
            Err(Untrusted::TooLarge { .. })
        ));
        assert!(matches!(
            check_secret(Path::new("/dev/zero")),
            Err(Untrusted::NotAFile { .. } | Untrusted::Writable { .. })
        ));
    }
}
