//! Following log files for a jail: new complete lines, in order, across
//! rotation, with a position that survives restarts.
//!
//! Each configured path is `/dir/name`, where the name may hold `*` and `?`.
//! A followed file is identified by (device, inode), and read through a file
//! descriptor kept open, so:
//! - **rename rotation** (`auth.log` -> `auth.log.1`, new `auth.log`): the
//!   old descriptor is drained to its end, kept a while for late writes,
//!   and the new file is read from its start;
//! - **copytruncate**: the size drops below the offset, so reading restarts
//!   at the start of the same file;
//! - **late creation**: a path that does not exist yet is picked up, from
//!   its start, when it appears.
//!
//! Only complete lines are handed out; a partial last line waits for its
//! newline. Positions are exported as `device:inode:offset` and, on start,
//! a saved position resumes exactly there (or in `NAME.1` when the file was
//! rotated while orch was down). A path with no saved position starts at
//! its end: a new jail does not ban for old history.
//!
//! This module reads; waking up on change is the caller's business (see
//! [`FileWatch`]). It must not interpret lines.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest line kept; the rest of a longer line is dropped (a hostile or
/// broken writer must not grow memory without bound).
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// How long a rotated-away file is still drained for late writes.
const RETIRED_GRACE: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 64 * 1024;

/// (device, inode): which file a descriptor or a path refers to.
type Identity = (u64, u64);

/// A saved position: which file, and how far it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePosition {
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
}

impl FilePosition {
    /// `device:inode:offset`, as kept in the store.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.device, self.inode, self.offset)
    }

    /// The inverse of [`FilePosition::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<FilePosition> {
        let mut parts = text.split(':').map(str::parse::<u64>);
        let position = FilePosition {
            device: parts.next()?.ok()?,
            inode: parts.next()?.ok()?,
            offset: parts.next()?.ok()?,
        };
        parts.next().is_none().then_some(position)
    }
}

/// One open file being read.
#[derive(Debug)]
struct OpenFile {
    file: File,
    identity: Identity,
    offset: u64,
    /// Bytes after the last newline, waiting for the rest of their line.
    partial: Vec<u8>,
    /// Set while a too-long line is being skipped up to its newline.
    skipping: bool,
}

impl OpenFile {
    /// Opens a regular file without blocking: a FIFO or device at a log
    /// path must not hold the jail (or the daemon's start) up.
    fn open(path: &Path, offset: u64) -> Option<OpenFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(OpenFile {
            identity: (meta.dev(), meta.ino()),
            offset: offset.min(meta.len()),
            file,
            partial: Vec::new(),
            skipping: false,
        })
    }

    /// Reads everything from the offset to the end and hands out complete
    /// lines. Returns whether anything was read.
    fn drain(&mut self, buffer: &mut [u8], sink: &mut dyn FnMut(&str)) -> bool {
        if self.file.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut read_any = false;
        loop {
            let count = match self.file.read(buffer) {
                Ok(0) | Err(_) => break,
                Ok(count) => count,
            };
            read_any = true;
            self.offset += count as u64;
            self.split_lines(&buffer[..count], sink);
        }
        read_any
    }

    fn split_lines(&mut self, mut bytes: &[u8], sink: &mut dyn FnMut(&str)) {
        while let Some(newline) = memchr::memchr(b'\n', bytes) {
            let (line, rest) = bytes.split_at(newline);
            bytes = &rest[1..];
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                emit(line, sink);
            } else {
                self.partial.extend_from_slice(line);
                emit(&self.partial, sink);
                self.partial.clear();
            }
        }
        if !self.skipping {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE_BYTES {
                // Hand out what fits, then skip to the next newline.
                self.partial.truncate(MAX_LINE_BYTES);
                emit(&self.partial, sink);
                self.partial.clear();
                self.skipping = true;
            }
        }
    }

    /// The position of the last complete line handed out.
    fn position(&self) -> FilePosition {
        FilePosition {
            device: self.identity.0,
            inode: self.identity.1,
            offset: self.offset - self.partial.len() as u64,
        }
    }
}

fn emit(line: &[u8], sink: &mut dyn FnMut(&str)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Ok(text) => sink(text),
        Err(_) => sink(&String::from_utf8_lossy(line)),
    }
}

/// A path pattern split into its directory and file-name pattern.
#[derive(Debug, Clone)]
struct PathPattern {
    dir: PathBuf,
    name: String,
}

impl PathPattern {
    fn new(pattern: &str) -> PathPattern {
        let path = Path::new(pattern);
        PathPattern {
            dir: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    fn has_wildcards(&self) -> bool {
        self.name.contains(['*', '?'])
    }

    /// The existing paths this pattern names (for a plain path, that path
    /// whether or not it exists).
    fn paths(&self) -> Vec<PathBuf> {
        if !self.has_wildcards() {
            return vec![self.dir.join(&self.name)];
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| wildcard_match(&self.name, &entry.file_name().to_string_lossy()))
            .filter(|entry| {
                entry
                    .file_type()
                    .is_ok_and(|t| t.is_file() || t.is_symlink())
            })
            .map(|entry| entry.path())
            .collect();
        paths.sort();
        paths
    }
}

/// `*` (any run of characters) and `?` (one character) in a file name.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    n = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The state of one followed path.
#[derive(Debug, Default)]
struct Followed {
    current: Option<OpenFile>,
    /// Rotated-away files still drained for late writes, with the time
    /// they were last seen growing.
    retired: Vec<(OpenFile, Instant)>,
    /// What the path is when it is not a regular file (then not read).
    not_regular: Option<&'static str>,
    /// Whether that was logged already.
    warned: bool,
}

/// Follows the files of one jail.
#[derive(Debug)]
pub struct FileFollower {
    patterns: Vec<PathPattern>,
    followed: BTreeMap<PathBuf, Followed>,
    buffer: Vec<u8>,
}

impl FileFollower {
    /// Starts following `patterns`. `saved` returns the stored position of
    /// a path, if any; paths without one start at their end.
    pub fn new(patterns: &[String], saved: &dyn Fn(&Path) -> Option<FilePosition>) -> FileFollower {
        let mut follower = FileFollower {
            patterns: patterns.iter().map(|p| PathPattern::new(p)).collect(),
            followed: BTreeMap::new(),
            buffer: vec![0; READ_CHUNK],
        };
        for path in follower.current_paths() {
            let mut state = Followed::default();
            match saved(&path) {
                Some(position) => state.resume(&path, position),
                None => state.current = OpenFile::open(&path, u64::MAX),
            }
            follower.followed.insert(path, state);
        }
        follower
    }

    /// The directories to watch for changes.
    pub fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.patterns.iter().map(|p| p.dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn current_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.patterns.iter().flat_map(PathPattern::paths).collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Reads every new complete line of every file, in file order, and
    /// hands each to `sink` with its path.
    pub fn read_new(&mut self, sink: &mut dyn FnMut(&Path, &str)) {
        let now = Instant::now();
        for path in self.current_paths() {
            let state = self.followed.entry(path.clone()).or_default();
            let mut line_sink = |line: &str| sink(&path, line);
            state.read(&path, &mut self.buffer, &mut line_sink, now);
        }
    }

    /// The position of every file currently followed.
    pub fn positions(&self) -> Vec<(PathBuf, FilePosition)> {
        self.followed
            .iter()
            .filter_map(|(path, state)| Some((path.clone(), state.current.as_ref()?.position())))
            .collect()
    }

    /// Paths that are not regular files (a FIFO, a device, a directory),
    /// so not read, each with what it is (for status).
    pub fn not_read(&self) -> Vec<String> {
        self.followed
            .iter()
            .filter_map(|(path, state)| {
                state
                    .not_regular
                    .map(|kind| format!("{} is {kind}, not a regular file", path.display()))
            })
            .collect()
    }

    /// How many files are open now (for status).
    pub fn open_files(&self) -> usize {
        self.followed
            .values()
            .filter(|s| s.current.is_some())
            .count()
    }
}

/// What a path holds when it is not a regular file.
fn not_a_regular_file(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

impl Followed {
    /// Resumes at a saved position: in the same file if it is still there,
    /// else in `PATH.1` if the file was rotated while orch was down (then
    /// the new file is read from its start).
    fn resume(&mut self, path: &Path, position: FilePosition) {
        let identity = (position.device, position.inode);
        if let Some(mut file) = OpenFile::open(path, position.offset)
            && file.identity == identity
        {
            if file.offset < position.offset {
                // Copytruncate while down: the file is shorter than where
                // reading stopped, so it started over.
                file.offset = 0;
            }
            self.current = Some(file);
            return;
        }
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        if let Some(old) = OpenFile::open(Path::new(&rotated), position.offset)
            && old.identity == identity
        {
            self.retired.push((old, Instant::now()));
        }
        self.current = OpenFile::open(path, 0);
    }

    fn read(&mut self, path: &Path, buffer: &mut [u8], sink: &mut dyn FnMut(&str), now: Instant) {
        // Lines still being written to rotated files come first: they are
        // older than anything in the new file.
        self.retired.retain_mut(|(file, last_growth)| {
            if file.drain(buffer, sink) {
                *last_growth = now;
            }
            now.duration_since(*last_growth) < RETIRED_GRACE
        });
        let on_disk = std::fs::metadata(path).ok();
        self.not_regular = on_disk.as_ref().and_then(not_a_regular_file);
        if self.not_regular.is_some() {
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    "{}: {}, not a regular file: not read",
                    path.display(),
                    self.not_regular.unwrap_or_default()
                );
            }
            return;
        }
        let Some(on_disk) = on_disk else {
            // Gone (rotated, not yet re-created): finish the old file.
            if let Some(mut current) = self.current.take() {
                current.drain(buffer, sink);
                self.retired.push((current, now));
            }
            return;
        };
        let identity = (on_disk.dev(), on_disk.ino());
        match &mut self.current {
            Some(current) if current.identity == identity => {
                if on_disk.len() < current.offset {
                    // Copytruncate: the same file started over.
                    current.offset = 0;
                    current.partial.clear();
                    current.skipping = false;
                }
                current.drain(buffer, sink);
            }
            _ => {
                if let Some(mut old) = self.current.take() {
                    old.drain(buffer, sink);
                    self.retired.push((old, now));
                }
                // A file that appeared after start is read from its start;
                // one present at start without a saved position was opened
                // at its end in `FileFollower::new`.
                self.current = OpenFile::open(path, 0);
                if let Some(current) = &mut self.current {
                    current.drain(buffer, sink);
                }
            }
        }
    }
}

/// Wakes a jail when one of its directories changes: inotify through the
/// `notify` crate, or, where that is unavailable, nothing (the caller's
/// periodic poll then does the work).
pub struct FileWatch {
    _watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    /// Watches `dirs` (non-recursively); `wake` runs on every change.
    /// Returns the watch and the directories that could not be watched.
    pub fn start(dirs: &[PathBuf], wake: impl Fn() + Send + 'static) -> (FileWatch, Vec<PathBuf>) {
        use notify::Watcher;
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                wake();
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(err) => {
                tracing::warn!("cannot use inotify ({err}); polling log files instead");
                return (FileWatch { _watcher: None }, dirs.to_vec());
            }
        };
        let mut unwatched = Vec::new();
        for dir in dirs {
            if watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .is_err()
            {
                unwatched.push(dir.clone());
            }
        }
        (
            FileWatch {
                _watcher: Some(watcher),
            },
            unwatched,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn read_all(follower: &mut FileFollower) -> Vec<String> {
        let mut lines = Vec::new();
        follower.read_new(&mut |_, line| lines.push(line.to_string()));
        lines
    }

    fn no_saved(_: &Path) -> Option<FilePosition> {
        None
    }

    #[test]
    fn starts_at_the_end_and_hands_out_complete_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "old line\n");
        let pattern = log.display().to_string();
        let mut follower = FileFollower::new(&[pattern], &no_saved);
        assert!(
            read_all(&mut follower).is_empty(),
            "history is not replayed"
        );
        append(&log, "one\ntw");
        assert_eq!(read_all(&mut follower), ["one"]);
        append(&log, "o\r\nthree\n");
        assert_eq!(read_all(&mut follower), ["two", "three"]);
    }

    #[test]
    fn rename_rotation_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "");
        let mut follower = FileFollower::new(&[log.display().to_string()], &no_saved);
        append(&log, "a\n");
        assert_eq!(read_all(&mut follower), ["a"]);
        append(&log, "b\n");
        std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
        // The writer still has the old file open for a moment.
        append(&dir.path().join("auth.log.1"), "c\n");
        append(&log, "d\n");
        assert_eq!(read_all(&mut follower), ["b", "c", "d"]);
        append(&dir.path().join("auth.log.1"), "late\n");
        append(&log, "e\n");
        assert_eq!(read_all(&mut follower), ["late", "e"]);
    }

    #[test]
    fn copytruncate_restarts_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "");
        let mut follower = FileFollower::new(&[log.display().to_string()], &no_saved);
        append(&log, "first line is long\n");
        assert_eq!(read_all(&mut follower), ["first line is long"]);
        std::fs::copy(&log, dir.path().join("auth.log.1")).unwrap();
        std::fs::File::create(&log).unwrap();
        append(&log, "x\n");
        assert_eq!(read_all(&mut follower), ["x"]);
    }

    #[test]
    fn late_files_are_read_from_their_start_and_wildcards_expand() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = dir.path().join("*.log").display().to_string();
        let mut follower = FileFollower::new(&[pattern], &no_saved);
        assert!(read_all(&mut follower).is_empty());
        append(&dir.path().join("b.log"), "from b\n");
        append(&dir.path().join("a.log"), "from a\n");
        append(&dir.path().join("a.txt"), "not followed\n");
        assert_eq!(read_all(&mut follower), ["from a", "from b"]);
    }

    #[test]
    fn a_saved_position_resumes_there_even_after_rotation_while_down() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "seen\n");
        let pattern = log.display().to_string();
        let position = {
            let mut follower = FileFollower::new(std::slice::from_ref(&pattern), &|_| {
                Some(FilePosition {
                    device: 0,
                    inode: 0,
                    offset: 0,
                })
            });
            // Unknown identity and no .1: the file is read from the start.
            assert_eq!(read_all(&mut follower), ["seen"]);
            follower.positions()[0].1
        };
        assert_eq!(FilePosition::decode(&position.encode()), Some(position));
        append(&log, "while down 1\n");
        let mut follower = FileFollower::new(std::slice::from_ref(&pattern), &|_| Some(position));
        assert_eq!(read_all(&mut follower), ["while down 1"]);
        let position = follower.positions()[0].1;
        drop(follower);
        append(&log, "while down 2\n");
        std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
        append(&log, "new file\n");
        let mut follower = FileFollower::new(&[pattern], &|_| Some(position));
        assert_eq!(read_all(&mut follower), ["while down 2", "new file"]);
    }

    #[test]
    fn overlong_lines_are_cut_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "");
        let mut follower = FileFollower::new(&[log.display().to_string()], &no_saved);
        append(&log, &"x".repeat(MAX_LINE_BYTES * 3));
        let lines = read_all(&mut follower);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        append(&log, "tail\nnext\n");
        assert_eq!(read_all(&mut follower), ["next"]);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.log", "auth.log"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("*.log", "auth.log.1"));
        assert!(wildcard_match("*access*.log", "site-access-2.log"));
    }
}
