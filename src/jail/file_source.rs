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
//! newline. A line longer than [`MAX_LINE_BYTES`] is cut to it, and bytes
//! that are not UTF-8 are replaced by U+FFFD; both are counted
//! ([`LineCounts`]) for `orch status`. Each call of
//! [`FileFollower::read_new`] reads at most [`READ_BUDGET`] bytes and says
//! whether it reached the end of every file. Positions are exported as `device:inode:offset` and, on start,
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
/// Bytes read per call of [`FileFollower::read_new`], over all files of a
/// jail. One flooding file must not keep the jail thread reading for
/// minutes (the filter may take tens of ms on a hostile line when the PCRE2
/// JIT is off): between two calls the thread saves positions, publishes its
/// health and notices a stop or reload. 1 MiB is about 8,000 syslog lines,
/// well under a second of filtering on ordinary lines.
pub const READ_BUDGET: usize = 1 << 20;
/// How long a rotated-away file is still drained for late writes.
const RETIRED_GRACE: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 64 * 1024;

/// (device, inode): which file a descriptor or a path refers to.
type Identity = (u64, u64);

/// Lines that could not be handed out as written, since the follower
/// started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// Lines longer than [`MAX_LINE_BYTES`], cut to it.
    pub too_long: u64,
    /// Lines with bytes that are not UTF-8, replaced by U+FFFD. They are
    /// still judged: skipping them would let a writer hide a failure line
    /// behind one invalid byte (in a user name, say).
    pub not_utf8: u64,
}

/// One call of [`FileFollower::read_new`]: the read buffer, what is left of
/// [`READ_BUDGET`], and the counts to add to.
struct Turn<'a> {
    buffer: &'a mut [u8],
    budget: usize,
    counts: &'a mut LineCounts,
}

/// What draining one file came to.
#[derive(Debug, Clone, Copy)]
struct Drained {
    /// Some bytes were read.
    read_any: bool,
    /// The read stopped at the end of the file (not at the budget).
    at_end: bool,
}

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

    /// Reads from the offset to the end, or until the turn's budget is
    /// spent, and hands out complete lines.
    fn drain(&mut self, turn: &mut Turn, sink: &mut dyn FnMut(&str)) -> Drained {
        let mut drained = Drained {
            read_any: false,
            at_end: true,
        };
        if self.file.seek(SeekFrom::Start(self.offset)).is_err() {
            return drained;
        }
        loop {
            if turn.budget == 0 {
                drained.at_end = false;
                return drained;
            }
            let want = turn.buffer.len().min(turn.budget);
            let count = match self.file.read(&mut turn.buffer[..want]) {
                Ok(0) | Err(_) => return drained,
                Ok(count) => count,
            };
            drained.read_any = true;
            turn.budget -= count;
            self.offset += count as u64;
            self.split_lines(&turn.buffer[..count], turn.counts, sink);
        }
    }

    fn split_lines(
        &mut self,
        mut bytes: &[u8],
        counts: &mut LineCounts,
        sink: &mut dyn FnMut(&str),
    ) {
        while let Some(newline) = memchr::memchr(b'\n', bytes) {
            let (line, rest) = bytes.split_at(newline);
            bytes = &rest[1..];
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                emit(line, counts, sink);
            } else {
                // One byte past the cap is enough for `emit` to cut.
                let room = (MAX_LINE_BYTES + 1).saturating_sub(self.partial.len());
                self.partial
                    .extend_from_slice(&line[..line.len().min(room)]);
                emit(&self.partial, counts, sink);
                self.partial.clear();
            }
        }
        if !self.skipping {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE_BYTES {
                // Hand out what fits, then skip to the next newline.
                emit(&self.partial, counts, sink);
                self.partial.clear();
                self.skipping = true;
            }
        }
    }

    /// Bytes between the offset and the end of the file.
    fn bytes_behind(&self) -> u64 {
        self.file
            .metadata()
            .map_or(0, |meta| meta.len().saturating_sub(self.offset))
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

/// Hands out one line: cut to [`MAX_LINE_BYTES`] (at a character
/// boundary), bytes that are not UTF-8 replaced; both counted.
fn emit(line: &[u8], counts: &mut LineCounts, sink: &mut dyn FnMut(&str)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = line.len() > MAX_LINE_BYTES;
    let line = if cut {
        counts.too_long += 1;
        &line[..MAX_LINE_BYTES]
    } else {
        line
    };
    match std::str::from_utf8(line) {
        Ok(text) => sink(text),
        // The cut split the last character: leave it out.
        Err(err) if cut && err.error_len().is_none() => {
            sink(std::str::from_utf8(&line[..err.valid_up_to()]).unwrap_or_default());
        }
        Err(_) => {
            counts.not_utf8 += 1;
            sink(&String::from_utf8_lossy(line));
        }
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
    counts: LineCounts,
    /// The path whose reading spent the last budget: the next call starts
    /// after it, so one flooding file cannot starve the others.
    spent_at: Option<PathBuf>,
}

impl FileFollower {
    /// Starts following `patterns`. `saved` returns the stored position of
    /// a path, if any; paths without one start at their end.
    pub fn new(patterns: &[String], saved: &dyn Fn(&Path) -> Option<FilePosition>) -> FileFollower {
        let mut follower = FileFollower {
            patterns: patterns.iter().map(|p| PathPattern::new(p)).collect(),
            followed: BTreeMap::new(),
            buffer: vec![0; READ_CHUNK],
            counts: LineCounts::default(),
            spent_at: None,
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

    /// Reads new complete lines, at most [`READ_BUDGET`] bytes in all, and
    /// hands each to `sink` with its path. Returns true when every file was
    /// read to its end; false when the budget ran out first: then call
    /// again soon, without waiting for a change (the bytes are already
    /// written, so no change may come).
    pub fn read_new(&mut self, sink: &mut dyn FnMut(&Path, &str)) -> bool {
        let now = Instant::now();
        let mut paths = self.current_paths();
        if let Some(spent_at) = self.spent_at.take() {
            let after = paths.partition_point(|path| *path <= spent_at);
            paths.rotate_left(after);
        }
        let mut turn = Turn {
            buffer: &mut self.buffer,
            budget: READ_BUDGET,
            counts: &mut self.counts,
        };
        for path in paths {
            let state = self.followed.entry(path.clone()).or_default();
            let mut line_sink = |line: &str| sink(&path, line);
            if !state.read(&path, &mut turn, &mut line_sink, now) {
                self.spent_at = Some(path);
                return false;
            }
        }
        true
    }

    /// Lines cut or with bytes replaced so far.
    pub fn line_counts(&self) -> LineCounts {
        self.counts
    }

    /// Bytes not read yet, up to the ends of the files followed.
    pub fn bytes_behind(&self) -> u64 {
        self.followed
            .values()
            .flat_map(|state| {
                state
                    .current
                    .iter()
                    .chain(state.retired.iter().map(|(f, _)| f))
            })
            .map(OpenFile::bytes_behind)
            .sum()
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

    /// Reads what is new at `path` (rotated-away files first). Returns
    /// false when the turn's budget ran out before the end.
    fn read(
        &mut self,
        path: &Path,
        turn: &mut Turn,
        sink: &mut dyn FnMut(&str),
        now: Instant,
    ) -> bool {
        // Lines still being written to rotated files come first: they are
        // older than anything in the new file.
        let mut at_end = true;
        self.retired.retain_mut(|(file, last_growth)| {
            let drained = file.drain(turn, sink);
            if drained.read_any {
                *last_growth = now;
            }
            at_end &= drained.at_end;
            // Kept while it has unread bytes, or grew lately.
            !drained.at_end || now.duration_since(*last_growth) < RETIRED_GRACE
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
            return at_end;
        }
        let Some(on_disk) = on_disk else {
            // Gone (rotated, not yet re-created): finish the old file.
            if let Some(mut current) = self.current.take() {
                at_end &= current.drain(turn, sink).at_end;
                self.retired.push((current, now));
            }
            return at_end;
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
                at_end &= current.drain(turn, sink).at_end;
            }
            _ => {
                if let Some(mut old) = self.current.take() {
                    at_end &= old.drain(turn, sink).at_end;
                    self.retired.push((old, now));
                }
                // A file that appeared after start is read from its start;
                // one present at start without a saved position was opened
                // at its end in `FileFollower::new`.
                self.current = OpenFile::open(path, 0);
                if let Some(current) = &mut self.current {
                    at_end &= current.drain(turn, sink).at_end;
                }
            }
        }
        at_end
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

    /// An empty `auth.log` in a temp dir, followed from its start.
    fn followed_empty_log() -> (tempfile::TempDir, PathBuf, FileFollower) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        append(&log, "");
        let follower = FileFollower::new(&[log.display().to_string()], &no_saved);
        (dir, log, follower)
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
        let (dir, log, mut follower) = followed_empty_log();
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
        let (dir, log, mut follower) = followed_empty_log();
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
        let (_dir, log, mut follower) = followed_empty_log();
        append(&log, &"x".repeat(MAX_LINE_BYTES * 3));
        let lines = read_all(&mut follower);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        append(&log, "tail\nnext\n");
        assert_eq!(read_all(&mut follower), ["next"]);
    }

    #[test]
    fn every_overlong_line_is_cut_at_a_character_and_counted() {
        let (_dir, log, mut follower) = followed_empty_log();
        // Whole in one read: cut all the same. "é" is two bytes, so the cap
        // falls inside one; that character is left out, not replaced.
        let long = format!("a{}\n", "é".repeat(MAX_LINE_BYTES));
        append(&log, &format!("{long}short\n"));
        let lines = read_all(&mut follower);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES - 1);
        assert!(!lines[0].contains('\u{fffd}'));
        assert_eq!(lines[1], "short");
        // Completed across two reads: cut too.
        append(&log, &"b".repeat(MAX_LINE_BYTES - 10));
        assert!(read_all(&mut follower).is_empty());
        append(&log, &format!("{}\n", "c".repeat(100)));
        let lines = read_all(&mut follower);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(
            follower.line_counts(),
            LineCounts {
                too_long: 2,
                not_utf8: 0
            }
        );
    }

    #[test]
    fn lines_that_are_not_utf8_are_judged_with_replacements_and_counted() {
        let (_dir, log, mut follower) = followed_empty_log();
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"Invalid user \xff\xfe from 192.0.2.1\nfine\n")
            .unwrap();
        assert_eq!(
            read_all(&mut follower),
            ["Invalid user \u{fffd}\u{fffd} from 192.0.2.1", "fine"]
        );
        assert_eq!(follower.line_counts().not_utf8, 1);
        assert_eq!(follower.line_counts().too_long, 0);
    }

    /// A flood is read [`READ_BUDGET`] bytes per call; the caller is told
    /// to call again, and the rest comes without any new write.
    #[test]
    fn a_flood_is_read_a_budget_at_a_time_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let quiet = dir.path().join("b.log");
        append(&log, "");
        append(&quiet, "");
        let pattern = dir.path().join("*.log").display().to_string();
        let mut follower = FileFollower::new(&[pattern], &no_saved);
        let line = format!("{}\n", "x".repeat(99));
        let count = 3 * READ_BUDGET / line.len() + 7;
        append(&log, &line.repeat(count));
        append(&quiet, "quiet\n");
        assert_eq!(follower.bytes_behind(), (count * line.len() + 6) as u64);

        let mut lines = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            let mut read = 0;
            let done = follower.read_new(&mut |_, l| {
                read += l.len() + 1;
                lines.push(l.to_string());
            });
            // The budget, plus the start of a line the last call cut.
            assert!(
                read <= READ_BUDGET + line.len(),
                "call {calls} handed out {read} bytes"
            );
            if done {
                break;
            }
            assert!(calls < 10, "never caught up");
        }
        assert_eq!(calls, 4, "3 full budgets and the rest");
        assert_eq!(lines.len(), count + 1);
        // The quiet file was not starved: read in the second call, right
        // after the first budget went to the flood.
        let quiet_at = lines.iter().position(|l| l == "quiet").unwrap();
        assert!(quiet_at <= READ_BUDGET / line.len() + 1, "{quiet_at}");
        assert_eq!(follower.bytes_behind(), 0);
        assert!(read_all(&mut follower).is_empty());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.log", "auth.log"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("*.log", "auth.log.1"));
        assert!(wildcard_match("*access*.log", "site-access-2.log"));
    }
}
