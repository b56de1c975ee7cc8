//! `orch store verify` and `orch store salvage`: examining and repairing a
//! damaged ban store on disk, without the daemon.
//!
//! Verify only reads (it takes no lock, so it works while orch runs) and
//! reports every file, its records and every problem with its byte
//! offset. Salvage takes the store's lock (so orch must be stopped), keeps
//! every record it can read (stepping over damage with the same resync as
//! the store's open), writes a fresh snapshot and keeps the damaged files
//! as `<name>.damaged-<unix time>`. Both read files through the store's
//! own frame reader; nothing here writes except through the store's
//! atomic helpers.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::files::{
    create_log, keep_aside, remove_leftover_tmp_files, rename_into_place, sync_dir,
    write_snapshot_tmp,
};
use super::frames::{Found, parse_file_header, walk_leniently};
use super::lock::lock_dir;
use super::records::Record;
use super::replay::FileRole;
use super::state::MemState;
use super::{
    FILE_HEADER_LEN, LOCK_FILE, LOG_FILE, LOG_MAGIC, LOG_PREV_FILE, SNAPSHOT_FILE, SNAPSHOT_MAGIC,
    SNAPSHOT_PREV_FILE, SNAPSHOT_TMP_FILE, StoreError, io_error,
};

/// The largest store file verify or salvage reads (a million bans take
/// about 70 MB); a larger one is reported, not read.
const MAX_FILE_BYTES: u64 = 1 << 31;

/// The files of a store, in the order a start reads them.
const STORE_FILES: [(&str, FileRole); 4] = [
    (SNAPSHOT_FILE, FileRole::Snapshot),
    (LOG_FILE, FileRole::Log),
    (SNAPSHOT_PREV_FILE, FileRole::Snapshot),
    (LOG_PREV_FILE, FileRole::Log),
];

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset in the file.
    pub offset: u64,
    /// Bytes it covers (skipped by salvage); 0 for a problem with no extent.
    pub len: u64,
    pub detail: String,
}

/// What verify found in one store file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub name: &'static str,
    /// `None`: the file does not exist.
    pub size: Option<u64>,
    /// From a sound header.
    pub generation: Option<u64>,
    /// Records read (a snapshot's end marker not counted).
    pub records: u64,
    /// Damage: everything here is a reason to exit 1.
    pub problems: Vec<Problem>,
    /// A log's torn last record (a crash mid-append): cut at the next
    /// start, not damage.
    pub torn_tail: Option<Problem>,
    role: FileRole,
    /// A format version this build does not read.
    unsupported_version: Option<u32>,
}

impl FileReport {
    fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn present(&self) -> bool {
        self.size.is_some()
    }
}

/// One file read for verify or salvage: its report and its bytes.
struct ReadFile {
    report: FileReport,
    bytes: Vec<u8>,
}

impl ReadFile {
    /// Reads and examines `dir/name` leniently: every record that can be
    /// read is counted, every problem noted with its offset.
    fn examine(dir: &Path, name: &'static str, role: FileRole) -> ReadFile {
        let mut report = FileReport {
            name,
            size: None,
            generation: None,
            records: 0,
            problems: Vec::new(),
            torn_tail: None,
            role,
            unsupported_version: None,
        };
        let bytes = match read_bounded(&dir.join(name)) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return ReadFile {
                    report,
                    bytes: Vec::new(),
                };
            }
            Err(problem) => {
                report.size = Some(0);
                report.problems.push(problem);
                return ReadFile {
                    report,
                    bytes: Vec::new(),
                };
            }
        };
        report.size = Some(bytes.len() as u64);
        let magic = match role {
            FileRole::Snapshot => &SNAPSHOT_MAGIC,
            FileRole::Log => &LOG_MAGIC,
        };
        match parse_file_header(&bytes, magic, &dir.join(name)) {
            Ok(generation) => report.generation = Some(generation),
            Err(StoreError::UnsupportedVersion { found, .. }) => {
                report.unsupported_version = Some(found);
                report.problems.push(Problem {
                    offset: 0,
                    len: 0,
                    detail: format!("format version {found}; this build reads version 1"),
                });
                return ReadFile { report, bytes };
            }
            Err(error) => report.problems.push(Problem {
                offset: 0,
                len: FILE_HEADER_LEN.min(bytes.len()) as u64,
                detail: format!("bad header: {}", header_problem(&error)),
            }),
        }
        examine_records(&bytes, &mut report);
        ReadFile { report, bytes }
    }

    /// Hands every readable record to `apply`, in file order (a
    /// snapshot's end marker left out); returns how many.
    fn replay(&self, mut apply: impl FnMut(&Record<'_>)) -> u64 {
        let mut count = 0;
        walk_leniently(&self.bytes, FILE_HEADER_LEN, |found| {
            if let Found::Record { record, .. } = found
                && !matches!(record, Record::SnapshotEnd { .. })
            {
                apply(&record);
                count += 1;
            }
        });
        count
    }
}

/// Reads a whole store file, refusing one larger than [`MAX_FILE_BYTES`].
/// `None` if it does not exist.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, Problem> {
    let unreadable = |error: io::Error| Problem {
        offset: 0,
        len: 0,
        detail: format!("cannot read: {error}"),
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(error)),
    };
    let size = file.metadata().map_err(unreadable)?.len();
    if size > MAX_FILE_BYTES {
        return Err(Problem {
            offset: 0,
            len: size,
            detail: format!("{size} bytes: larger than any store this build writes; not read"),
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    Ok(Some(bytes))
}

fn header_problem(error: &StoreError) -> String {
    match error {
        StoreError::Corrupt { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Walks the records after the header, counting them and noting damage.
fn examine_records(bytes: &[u8], report: &mut FileReport) {
    let role = report.role;
    let mut end_marker: Option<(u64, u64)> = None;
    walk_leniently(bytes, FILE_HEADER_LEN, |found| match found {
        Found::Record { offset, record } => {
            let offset = offset as u64;
            if let Some((end_offset, _)) = end_marker {
                report.problems.push(Problem {
                    offset,
                    len: 0,
                    detail: format!("record after the end marker at byte {end_offset}"),
                });
            }
            match (record, role) {
                (Record::SnapshotEnd { record_count }, FileRole::Snapshot) => {
                    end_marker = Some((offset, record_count));
                }
                (Record::SnapshotEnd { .. }, FileRole::Log) => report.problems.push(Problem {
                    offset,
                    len: 0,
                    detail: "snapshot end marker inside the log".to_string(),
                }),
                _ => report.records += 1,
            }
        }
        Found::Undecodable {
            offset,
            len,
            detail,
        } => report.problems.push(Problem {
            offset: offset as u64,
            len: len as u64,
            detail: format!("intact frame that does not decode: {detail}"),
        }),
        Found::Gap {
            offset,
            len,
            detail,
            resumed,
        } => {
            let problem = Problem {
                offset: offset as u64,
                len: len as u64,
                detail: detail.to_string(),
            };
            if role == FileRole::Log && !resumed {
                report.torn_tail = Some(problem);
            } else {
                report.problems.push(problem);
            }
        }
    });
    if role == FileRole::Snapshot && report.generation.is_some() {
        match end_marker {
            None => report.problems.push(Problem {
                offset: bytes.len() as u64,
                len: 0,
                detail: "snapshot is incomplete (no end marker)".to_string(),
            }),
            Some((offset, counted)) if counted != report.records => report.problems.push(Problem {
                offset,
                len: 0,
                detail: format!(
                    "end marker counts {counted} records but {} were read",
                    report.records
                ),
            }),
            Some(_) => {}
        }
    }
}

/// What the next start of orch will do with these files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outlook {
    /// Starts from `bans.snap` and `bans.log` as usual.
    Starts,
    /// Rebuilds a damaged `bans.snap` from the previous snapshot and its
    /// log, losing nothing, and starts.
    RebuildsSnapshot,
    /// Refuses to start until the store is salvaged.
    Refuses(String),
}

/// Everything `orch store verify` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub files: Vec<FileReport>,
    /// Problems between files (generations that do not fit together).
    pub cross_problems: Vec<String>,
    /// Facts worth knowing that are not damage.
    pub notes: Vec<String>,
    pub outlook: Outlook,
    /// The process holding the store's lock (orch running), if any.
    pub held_by: Option<u32>,
}

impl VerifyReport {
    /// No damage anywhere (a torn tail is not damage).
    pub fn is_clean(&self) -> bool {
        self.cross_problems.is_empty() && self.files.iter().all(FileReport::is_clean)
    }

    fn file(&self, name: &str) -> &FileReport {
        // Every report holds all of STORE_FILES.
        self.files
            .iter()
            .find(|file| file.name == name)
            .unwrap_or(&self.files[0])
    }
}

/// Reads the store in `dir` without changing anything and without its
/// lock (a running orch is not disturbed; a record it is appending at
/// that moment may show as a torn tail).
pub fn verify(dir: &Path) -> Result<VerifyReport, StoreError> {
    let files = read_store_files(dir)?;
    Ok(verify_files(dir, &files))
}

fn check_is_dir(dir: &Path) -> Result<(), StoreError> {
    let metadata = fs::metadata(dir).map_err(|error| io_error("read", dir, error))?;
    if metadata.is_dir() {
        Ok(())
    } else {
        let error = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
        Err(io_error("read", dir, error))
    }
}

fn read_store_files(dir: &Path) -> Result<Vec<ReadFile>, StoreError> {
    check_is_dir(dir)?;
    Ok(STORE_FILES
        .iter()
        .map(|&(name, role)| ReadFile::examine(dir, name, role))
        .collect())
}

fn verify_files(dir: &Path, files: &[ReadFile]) -> VerifyReport {
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        files: files.iter().map(|file| file.report.clone()).collect(),
        cross_problems: Vec::new(),
        notes: Vec::new(),
        outlook: Outlook::Starts,
        held_by: lock_holder(dir),
    };
    let (snapshot, log) = (report.file(SNAPSHOT_FILE), report.file(LOG_FILE));
    let (snapshot_generation, log_generation) = (snapshot.generation, log.generation);
    let (snapshot_present, log_present) = (snapshot.present(), log.present());
    match (snapshot_generation, log_generation) {
        (Some(snap), Some(log)) if log > snap => report.cross_problems.push(format!(
            "{LOG_FILE} is generation {log}, newer than {SNAPSHOT_FILE} ({snap}): \
             the snapshot was lost or replaced"
        )),
        (Some(snap), Some(log)) if log < snap => report.notes.push(format!(
            "{LOG_FILE} (generation {log}) is older than {SNAPSHOT_FILE} ({snap}): already \
             folded into it by a compaction a crash interrupted; the next start replaces it"
        )),
        _ => {}
    }
    if !snapshot_present && log_present && log_generation.is_some_and(|log| log > 0) {
        report
            .cross_problems
            .push(format!("{SNAPSHOT_FILE} is missing but {LOG_FILE} is not"));
    }
    report.outlook = outlook(&report);
    report
}

/// Predicts what `Store::open` does with the files verify read.
fn outlook(report: &VerifyReport) -> Outlook {
    let (snapshot, log) = (report.file(SNAPSHOT_FILE), report.file(LOG_FILE));
    if let Some(version) = report
        .files
        .iter()
        .filter_map(|file| file.unsupported_version)
        .next()
    {
        return Outlook::Refuses(format!(
            "a file has format version {version}, written by a newer orch"
        ));
    }
    // Without a snapshot (and without a previous one) a start begins empty.
    let previous_present = report.file(SNAPSHOT_PREV_FILE).present();
    let snapshot_sound = snapshot.is_clean() && (snapshot.present() || !previous_present);
    let base_generation = if snapshot_sound {
        snapshot.generation.unwrap_or(0)
    } else {
        match rebuild_generation(report) {
            Ok(generation) => generation,
            Err(why) => return Outlook::Refuses(why),
        }
    };
    if let Some(log_generation) = log.generation {
        if log_generation > base_generation {
            return Outlook::Refuses(format!(
                "{LOG_FILE} is newer than the snapshot it would follow"
            ));
        }
        if log_generation == base_generation && !log.is_clean() {
            return Outlook::Refuses(format!(
                "{LOG_FILE} is damaged before records that would be lost"
            ));
        }
    } else if log.present() && !log.is_clean() && log.size > Some(0) {
        return Outlook::Refuses(format!("{LOG_FILE} has a damaged header"));
    }
    if snapshot_sound {
        Outlook::Starts
    } else {
        Outlook::RebuildsSnapshot
    }
}

/// The generation of the snapshot a start would rebuild from
/// `bans.snap.prev` and its log, or why it cannot.
fn rebuild_generation(report: &VerifyReport) -> Result<u64, String> {
    let previous = report.file(SNAPSHOT_PREV_FILE);
    let Some(generation) = previous.generation.filter(|_| previous.is_clean()) else {
        return Err(format!(
            "{SNAPSHOT_FILE} is damaged and {SNAPSHOT_PREV_FILE} is {}",
            if previous.present() {
                "damaged too"
            } else {
                "missing"
            }
        ));
    };
    let damaged = report.file(SNAPSHOT_FILE).generation;
    if damaged.is_some_and(|damaged| damaged != generation + 1) {
        return Err(format!(
            "{SNAPSHOT_PREV_FILE} is not the snapshot just before {SNAPSHOT_FILE}"
        ));
    }
    let log_of_previous = [LOG_PREV_FILE, LOG_FILE]
        .iter()
        .map(|name| report.file(name))
        .find(|log| log.generation == Some(generation));
    match log_of_previous {
        Some(log) if log.is_clean() => Ok(generation + 1),
        Some(log) => Err(format!(
            "{SNAPSHOT_FILE} is damaged and so is {}, the log it would be rebuilt from",
            log.name
        )),
        None => Err(format!(
            "{SNAPSHOT_FILE} is damaged and the log of {SNAPSHOT_PREV_FILE} is gone"
        )),
    }
}

/// The pid holding the flock on the store's lock file, from /proc/locks
/// (read-only: verify never takes the lock, not even briefly).
fn lock_holder(dir: &Path) -> Option<u32> {
    let inode = fs::metadata(dir.join(LOCK_FILE)).ok()?.ino();
    let mut locks = String::new();
    File::open("/proc/locks")
        .ok()?
        .take(4 << 20)
        .read_to_string(&mut locks)
        .ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"; waiters add "->".
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let lock_inode = fields.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
        (lock_inode == inode).then(|| fields.get(4)?.parse().ok())?
    })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ban store in {}", self.dir.display())?;
        if let Some(pid) = self.held_by {
            writeln!(
                f,
                "orch (pid {pid}) holds the store; read without its lock, so a record being \
                 appended right now may show as a torn tail"
            )?;
        }
        if !self.files.iter().any(FileReport::present) {
            writeln!(
                f,
                "no store files here (orch creates them at its first start)"
            )?;
        }
        for file in &self.files {
            write_file_report(f, file)?;
        }
        for problem in &self.cross_problems {
            writeln!(f, "DAMAGED: {problem}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let problems = self.cross_problems.len()
            + self
                .files
                .iter()
                .map(|file| file.problems.len())
                .sum::<usize>();
        if problems == 0 {
            writeln!(f, "result: no damage found")?;
        } else {
            writeln!(f, "result: damaged ({problems} problem(s))")?;
        }
        match &self.outlook {
            Outlook::Starts => writeln!(f, "next start: uses {SNAPSHOT_FILE} and {LOG_FILE}"),
            Outlook::RebuildsSnapshot => writeln!(
                f,
                "next start: rebuilds {SNAPSHOT_FILE} from {SNAPSHOT_PREV_FILE} and its log \
                 (no ban lost) and keeps the damaged file as {SNAPSHOT_FILE}.damaged-<time>"
            ),
            Outlook::Refuses(why) => writeln!(
                f,
                "next start: REFUSED ({why}); stop orch (systemctl stop orch), then run \
                 `orch store salvage` to keep every valid record"
            ),
        }
    }
}

fn write_file_report(f: &mut fmt::Formatter<'_>, file: &FileReport) -> fmt::Result {
    let Some(size) = file.size else {
        return writeln!(f, "{}: missing", file.name);
    };
    let generation = file.generation.map_or_else(
        || "unknown".to_string(),
        |generation| generation.to_string(),
    );
    writeln!(
        f,
        "{}: {size} bytes, generation {generation}, {} record(s) read",
        file.name, file.records
    )?;
    for problem in &file.problems {
        write!(
            f,
            "  DAMAGED at byte {}: {}",
            problem.offset, problem.detail
        )?;
        if problem.len > 0 {
            write!(f, " ({} byte(s) unreadable)", problem.len)?;
        }
        writeln!(f)?;
    }
    if let Some(torn) = &file.torn_tail {
        writeln!(
            f,
            "  torn tail at byte {}: {} ({} byte(s)); a record cut by a crash mid-append, \
             never acknowledged; the next start cuts it",
            torn.offset, torn.detail, torn.len
        )?;
    }
    Ok(())
}

/// What `orch store salvage` did.
#[derive(Debug, Clone)]
pub struct SalvageReport {
    pub dir: PathBuf,
    /// False: no damage found, nothing changed.
    pub changed: bool,
    /// The files whose records went into the new snapshot, in order.
    pub used: Vec<&'static str>,
    /// Files present but not used (an older state, or not needed).
    pub not_used: Vec<&'static str>,
    /// Records read and applied.
    pub records_kept: u64,
    /// Damage skipped: (file, problem).
    pub dropped: Vec<(&'static str, Problem)>,
    /// Damaged files kept for inspection.
    pub kept_aside: Vec<PathBuf>,
    pub generation: u64,
    pub bans: usize,
    pub allows: usize,
    pub shadowed: usize,
    pub cursors: usize,
    pub jail_histories: usize,
}

/// Rebuilds the store in `dir` from every record that can be read, with
/// orch stopped: takes the store's lock ([`StoreError::Locked`], naming
/// the holder's pid, while orch runs), reads the files as verify does,
/// applies every readable record of the files that make up the newest
/// state, writes it as a fresh snapshot (tmp + fsync + rename + directory
/// fsync) with an empty log, keeps each damaged file as
/// `<name>.damaged-<now>` and removes the previous snapshot and log (the
/// fresh snapshot supersedes them). A clean store is left as it is.
pub fn salvage(dir: &Path, now: u64) -> Result<SalvageReport, StoreError> {
    check_is_dir(dir)?;
    let _lock = lock_dir(dir)?;
    remove_leftover_tmp_files(dir);
    let files = read_store_files(dir)?;
    let verified = verify_files(dir, &files);
    if let Some(file) = files
        .iter()
        .find(|file| file.report.unsupported_version.is_some())
    {
        return Err(StoreError::UnsupportedVersion {
            path: dir.join(file.report.name),
            found: file.report.unsupported_version.unwrap_or_default(),
            supported: super::FORMAT_VERSION,
        });
    }
    let mut report = SalvageReport {
        dir: dir.to_path_buf(),
        changed: false,
        used: Vec::new(),
        not_used: Vec::new(),
        records_kept: 0,
        dropped: Vec::new(),
        kept_aside: Vec::new(),
        generation: 0,
        bans: 0,
        allows: 0,
        shadowed: 0,
        cursors: 0,
        jail_histories: 0,
    };
    if verified.is_clean() {
        return Ok(report);
    }
    let plan = salvage_plan(&files);
    let mut state = MemState::default();
    for &index in &plan {
        let file = &files[index];
        report.records_kept += file.replay(|record| match state.net_change(record, now) {
            Some(change) => state.apply_net_change(change),
            None => state.apply_side_record(record, now),
        });
        report.used.push(file.report.name);
        let mut dropped = file.report.problems.clone();
        dropped.extend(file.report.torn_tail.clone());
        report.dropped.extend(
            dropped
                .into_iter()
                .map(|problem| (file.report.name, problem)),
        );
    }
    report.not_used = files
        .iter()
        .enumerate()
        .filter(|(index, file)| file.report.present() && !plan.contains(index))
        .map(|(_, file)| file.report.name)
        .collect();
    state.forget_old_history(now);
    state.take_expired(now);
    report.generation = files
        .iter()
        .filter_map(|file| file.report.generation)
        .max()
        .map_or(1, |newest| newest + 1);
    install_salvaged(dir, &files, &state, now, &mut report)?;
    report.changed = true;
    report.bans = state.bans.len();
    report.allows = state.allows.len();
    report.shadowed = state.shadows.len();
    report.cursors = state.cursors.len();
    report.jail_histories = state.jail_histories.len();
    Ok(report)
}

/// Which files (indices into [`STORE_FILES`]) make up the newest state,
/// in replay order: the current snapshot and its log if the snapshot is
/// sound; else the previous snapshot, its log and the current log if the
/// previous snapshot is sound; else whatever of the current snapshot can
/// be read, and its log. Older and newer states are never mixed, so no
/// lifted ban comes back from an older file.
fn salvage_plan(files: &[ReadFile]) -> Vec<usize> {
    let [snapshot, log, previous, previous_log] = [0, 1, 2, 3].map(|index| &files[index].report);
    let log_follows = |generation: Option<u64>| {
        log.present()
            && (generation.is_none() || log.generation.is_none() || log.generation >= generation)
    };
    if snapshot.present() && snapshot.is_clean() {
        let mut plan = vec![0];
        if log_follows(snapshot.generation) {
            plan.push(1);
        }
        return plan;
    }
    // The previous snapshot and its log rebuild the current snapshot
    // exactly, as at a start, when both are sound and fit together.
    if let Some(generation) = previous.generation.filter(|_| previous.is_clean())
        && snapshot
            .generation
            .is_none_or(|damaged| damaged == generation + 1)
    {
        let sound_log_of = |candidate: &FileReport| {
            candidate.generation == Some(generation) && candidate.is_clean()
        };
        if sound_log_of(previous_log) {
            let mut plan = vec![2, 3];
            if log.present()
                && log.generation != Some(generation)
                && log_follows(Some(generation + 1))
            {
                plan.push(1);
            }
            return plan;
        }
        if sound_log_of(log) {
            return vec![2, 1];
        }
    }
    let mut plan = Vec::new();
    if snapshot.present() {
        plan.push(0);
    } else if previous.present() {
        plan.push(2);
        if previous_log.present() && previous_log.generation == previous.generation {
            plan.push(3);
        }
    }
    if log_follows(snapshot.generation.or(previous.generation)) {
        plan.push(1);
    }
    plan
}

/// Writes the salvaged state as a fresh snapshot with an empty log, and
/// moves the old files out of the way, so that a crash at any step leaves
/// a store that opens: the damaged files are kept by hard link before the
/// new snapshot replaces `bans.snap`, and the old log is older than the
/// new snapshot, so it is ignored until the new empty log replaces it.
fn install_salvaged(
    dir: &Path,
    files: &[ReadFile],
    state: &MemState,
    now: u64,
    report: &mut SalvageReport,
) -> Result<(), StoreError> {
    write_snapshot_tmp(dir, report.generation, state, now)?;
    for file in files.iter().filter(|file| !file.report.is_clean()) {
        if let Some(kept) = keep_aside(dir, file.report.name, now)? {
            report.kept_aside.push(kept);
        }
    }
    rename_into_place(dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE)?;
    sync_dir(dir)?;
    drop(create_log(dir, report.generation)?);
    for name in [SNAPSHOT_PREV_FILE, LOG_PREV_FILE] {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("remove", &dir.join(name), error)),
        }
    }
    sync_dir(dir)?;
    Ok(())
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ban store in {}", self.dir.display())?;
        if !self.changed {
            return writeln!(f, "no damage found; nothing changed");
        }
        writeln!(
            f,
            "read {} record(s) from {}",
            self.records_kept,
            self.used.join(" + ")
        )?;
        if !self.not_used.is_empty() {
            writeln!(
                f,
                "not used (another state, superseded by the new snapshot): {}",
                self.not_used.join(", ")
            )?;
        }
        for (name, problem) in &self.dropped {
            writeln!(
                f,
                "dropped: {name} byte {}: {} ({} byte(s))",
                problem.offset, problem.detail, problem.len
            )?;
        }
        if self.dropped.is_empty() {
            writeln!(f, "dropped: nothing from the files used")?;
        }
        writeln!(
            f,
            "kept: {} active ban(s), {} runtime allow(s), {} shadowed ban(s), {} log position(s), \
             {} jail ban history entr(ies) (bans already expired were dropped as at any start)",
            self.bans, self.allows, self.shadowed, self.cursors, self.jail_histories
        )?;
        writeln!(
            f,
            "wrote a fresh {SNAPSHOT_FILE} (generation {}) and an empty {LOG_FILE}",
            self.generation
        )?;
        for kept in &self.kept_aside {
            writeln!(f, "damaged file kept as {}", kept.display())?;
        }
        writeln!(f, "start orch again: systemctl start orch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::frames::{Frame, read_frame};
    use crate::store::records::decode_payload;
    use crate::store::test_support::{
        DAMAGE_POINTS, HOUR, NOW, assert_locked_by_this_process, ban,
        ban_with_fake_frame_in_reason, five_ban_log, five_ban_log_damaged_mid, flip_byte,
        frame_offsets, log_path, net, open, snapshot_path, sorted_bans, store_with_two_generations,
    };
    use crate::store::{BanRecord, RECORD_HEADER_LEN, Store};
    use ipnet::IpNet;

    fn ban_nets(dir: &Path) -> Vec<IpNet> {
        sorted_bans(&open(dir)).iter().map(|ban| ban.net).collect()
    }

    /// Every file in `dir` with its bytes, by name.
    fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                (name, fs::read(entry.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    fn nets(texts: &[&str]) -> Vec<IpNet> {
        let mut nets: Vec<IpNet> = texts.iter().map(|text| net(text)).collect();
        nets.sort();
        nets
    }

    #[test]
    fn verify_reports_a_bad_frame_mid_log_with_its_offset() {
        for (what, within) in DAMAGE_POINTS {
            let dir = tempfile::tempdir().unwrap();
            let offsets = five_ban_log_damaged_mid(dir.path(), within);
            let files_before = dir_contents(dir.path());
            let report = verify(dir.path()).unwrap();
            assert_eq!(
                dir_contents(dir.path()),
                files_before,
                "{what}: verify changes nothing"
            );
            assert!(!report.is_clean(), "{what}");
            let log = report.file(LOG_FILE);
            assert_eq!(log.records, 4, "{what}");
            assert_eq!(log.problems.len(), 1, "{what}: {:?}", log.problems);
            assert_eq!(log.problems[0].offset, offsets[1] as u64, "{what}");
            assert_eq!(
                log.problems[0].len,
                (offsets[2] - offsets[1]) as u64,
                "{what}"
            );
            assert!(matches!(report.outlook, Outlook::Refuses(_)), "{what}");
            let shown = report.to_string();
            for needed in [
                format!(
                    "bans.log: {} bytes, generation 0, 4 record(s) read",
                    log.size.unwrap()
                ),
                format!("DAMAGED at byte {}", offsets[1]),
                "result: damaged (1 problem(s))".to_string(),
                "next start: REFUSED".to_string(),
                "orch store salvage".to_string(),
            ] {
                assert!(
                    shown.contains(&needed),
                    "{what}: {needed:?} missing in\n{shown}"
                );
            }
        }
    }

    #[test]
    fn verify_of_a_sound_store_is_clean_and_a_torn_tail_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let offsets = five_ban_log(dir.path());
        let report = verify(dir.path()).unwrap();
        assert!(report.is_clean());
        assert_eq!(report.outlook, Outlook::Starts);
        assert_eq!(report.file(SNAPSHOT_FILE).records, 0);
        assert_eq!(report.file(LOG_FILE).records, 5);
        assert!(!report.file(SNAPSHOT_PREV_FILE).present());

        flip_byte(&log_path(dir.path()), offsets[4] + 5);
        let report = verify(dir.path()).unwrap();
        assert!(report.is_clean());
        let torn = report.file(LOG_FILE).torn_tail.clone().expect("torn tail");
        assert_eq!(torn.offset, offsets[4] as u64);
        assert!(report.to_string().contains("result: no damage found"));
    }

    #[test]
    fn verify_predicts_the_rebuild_of_a_damaged_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_generations(dir.path());
        flip_byte(
            &snapshot_path(dir.path()),
            FILE_HEADER_LEN + RECORD_HEADER_LEN + 2,
        );
        let report = verify(dir.path()).unwrap();
        assert!(!report.is_clean());
        assert_eq!(report.outlook, Outlook::RebuildsSnapshot);
        let snapshot = report.file(SNAPSHOT_FILE);
        assert_eq!(snapshot.problems[0].offset, FILE_HEADER_LEN as u64);
        assert_eq!(report.file(SNAPSHOT_PREV_FILE).generation, Some(1));
        assert_eq!(report.file(LOG_PREV_FILE).generation, Some(1));
    }

    #[test]
    fn verify_works_while_the_store_is_open_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path());
        let report = verify(dir.path()).unwrap();
        assert!(report.is_clean());
        assert_eq!(report.held_by, Some(std::process::id()));
        assert!(
            report
                .to_string()
                .contains(&format!("orch (pid {})", std::process::id()))
        );
    }

    #[test]
    fn salvage_keeps_exactly_the_valid_records_of_a_damaged_log() {
        for (what, within) in DAMAGE_POINTS {
            let dir = tempfile::tempdir().unwrap();
            let offsets = five_ban_log_damaged_mid(dir.path(), within);
            let damaged = fs::read(log_path(dir.path())).unwrap();
            let report = salvage(dir.path(), NOW).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(report.changed, "{what}");
            assert_eq!(report.records_kept, 4, "{what}");
            assert_eq!(report.bans, 4, "{what}");
            assert_eq!(report.used, [SNAPSHOT_FILE, LOG_FILE], "{what}");
            assert_eq!(report.dropped.len(), 1, "{what}");
            assert_eq!(report.dropped[0].1.offset, offsets[1] as u64, "{what}");
            let kept = dir.path().join(format!("{LOG_FILE}.damaged-{NOW}"));
            assert_eq!(report.kept_aside, std::slice::from_ref(&kept), "{what}");
            assert_eq!(fs::read(&kept).unwrap(), damaged, "{what}");
            let shown = report.to_string();
            assert!(shown.contains("kept: 4 active ban(s)"), "{what}: {shown}");
            assert!(
                shown.contains(&format!("dropped: bans.log byte {}", offsets[1])),
                "{what}: {shown}"
            );
            assert_eq!(
                ban_nets(dir.path()),
                nets(&[
                    "192.0.2.1/32",
                    "192.0.2.3/32",
                    "192.0.2.4/32",
                    "192.0.2.5/32"
                ]),
                "{what}"
            );
            let again = verify(dir.path()).unwrap();
            assert!(again.is_clean(), "{what}: {again}");
            assert!(!salvage(dir.path(), NOW).unwrap().changed, "{what}");
        }
    }

    #[test]
    fn salvage_refuses_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        five_ban_log_damaged_mid(dir.path(), 5);
        // The damaged log stops Store::open, so hold the lock as orch does.
        let lock = lock_dir(dir.path()).unwrap();
        assert_locked_by_this_process(salvage(dir.path(), NOW).expect_err("locked"));
        drop(lock);
        assert!(salvage(dir.path(), NOW).unwrap().changed);
    }

    /// The ban of the first snapshot frame holding a ban, found before the
    /// frame is damaged.
    fn first_banned_frame(bytes: &[u8]) -> (usize, IpNet) {
        frame_offsets(bytes)
            .into_iter()
            .find_map(|offset| {
                let Frame::Intact { payload, .. } = read_frame(bytes, offset) else {
                    return None;
                };
                match decode_payload(payload).ok()? {
                    Record::Ban { net, .. } => Some((offset, net)),
                    _ => None,
                }
            })
            .expect("a ban in the snapshot")
    }

    #[test]
    fn salvage_of_two_damaged_snapshots_keeps_every_readable_record() {
        let dir = tempfile::tempdir().unwrap();
        let (expected, allows) = store_with_two_generations(dir.path());
        let snapshot = snapshot_path(dir.path());
        let (offset, lost) = first_banned_frame(&fs::read(&snapshot).unwrap());
        flip_byte(&snapshot, offset + RECORD_HEADER_LEN + 2);
        flip_byte(&dir.path().join(SNAPSHOT_PREV_FILE), FILE_HEADER_LEN + 1);
        assert!(Store::open(dir.path(), NOW).is_err());
        let report = verify(dir.path()).unwrap();
        assert!(matches!(report.outlook, Outlook::Refuses(_)), "{report}");

        let report = salvage(dir.path(), NOW).unwrap();
        assert_eq!(report.used, [SNAPSHOT_FILE, LOG_FILE]);
        assert_eq!(report.not_used, [SNAPSHOT_PREV_FILE, LOG_PREV_FILE]);
        assert_eq!(report.generation, 3);
        let store = open(dir.path());
        let kept: Vec<BanRecord> = sorted_bans(&store);
        let wanted: Vec<BanRecord> = expected.into_iter().filter(|ban| ban.net != lost).collect();
        assert_eq!(kept, wanted);
        assert_eq!(store.runtime_allows().copied().collect::<Vec<_>>(), allows);
        for name in [SNAPSHOT_FILE, SNAPSHOT_PREV_FILE] {
            assert!(
                dir.path().join(format!("{name}.damaged-{NOW}")).exists(),
                "{name}"
            );
        }
        assert!(!dir.path().join(SNAPSHOT_PREV_FILE).exists());
        assert!(!dir.path().join(LOG_PREV_FILE).exists());
    }

    #[test]
    fn salvage_uses_the_previous_snapshot_when_it_rebuilds_the_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let (expected, allows) = store_with_two_generations(dir.path());
        flip_byte(&snapshot_path(dir.path()), 3);
        let report = salvage(dir.path(), NOW).unwrap();
        assert_eq!(report.used, [SNAPSHOT_PREV_FILE, LOG_PREV_FILE, LOG_FILE]);
        let store = open(dir.path());
        assert_eq!(sorted_bans(&store), expected);
        assert_eq!(store.runtime_allows().copied().collect::<Vec<_>>(), allows);
    }

    #[test]
    fn salvage_never_takes_a_frame_inside_a_reason_for_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let (hostile, _) = ban_with_fake_frame_in_reason();
        let damaged = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            let damaged = fs::metadata(log_path(dir.path())).unwrap().len() as usize;
            store.insert_bans(&[hostile]).unwrap();
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            damaged
        };
        flip_byte(&log_path(dir.path()), damaged + 3);
        let report = salvage(dir.path(), NOW).unwrap();
        assert_eq!(report.records_kept, 2);
        assert_eq!(report.allows, 0, "no allow from inside a reason");
        let store = open(dir.path());
        assert_eq!(store.runtime_allows().count(), 0);
        assert_eq!(
            sorted_bans(&store)
                .iter()
                .map(|ban| ban.net)
                .collect::<Vec<_>>(),
            nets(&["192.0.2.1/32", "192.0.2.2/32"])
        );
    }
}
