//! Following the systemd journal for the journal jails: one reader thread
//! per process serves them all, each through its own libsystemd handle
//! (`sd_journal.rs`) with the jail's matches, resuming after its cursor.
//!
//! When to look for new entries is the design question. journald tells
//! readers about a write only when a 250 ms timer fires (its
//! `POST_CHANGE_TIMER_INTERVAL_USEC`), so a reader that only waits for
//! that is a quarter second late for every line after a quiet spell. An
//! entry is readable from the shared mapping as soon as journald has
//! written it, and asking an open handle for the next entry costs
//! microseconds, but each timed wake-up costs about 60 µs of CPU on a VM
//! (docs/benchmarks.md). So the reader polls every [`JOURNAL_POLL`] while
//! it is *hot*: for [`HOT_FOR`] after the last entry a jail got, as while
//! an attack goes on. Otherwise it polls every [`QUIET_POLL`], or sooner
//! on journald's signal or a new jail. Rotated and new journal files are taken in
//! on every round (`sd_journal_process`, which does not wait); a handle
//! that has seen nothing for [`REOPEN_QUIET`] is opened afresh at its
//! cursor, against the stuck follower once seen with `journalctl --follow`
//! in a container booted early.
//!
//! Each entry becomes a syslog-style line, `Mmm dd hh:mm:ss HOST IDENT[PID]:
//! MESSAGE` (UTC), so native filters and fail2ban filters read journal
//! entries exactly as they read syslog files; the entry's own timestamp
//! travels alongside and is what failures are counted by. Line breaks
//! inside a message become spaces, so one entry is always one line, and a
//! message is cut to [`MAX_LINE_BYTES`] as a file line is.
//!
//! A new jail (no saved cursor) starts at the time it starts; one with a
//! cursor gets every entry after it, so a restart loses nothing. This
//! module reads; it must not interpret messages.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::file_source::MAX_LINE_BYTES;
use super::sd_journal::{Journal, SdJournalError};
use crate::timefmt::civil_from_days;

/// How often a hot reader asks every jail's handle for new entries.
pub const JOURNAL_POLL: Duration = Duration::from_millis(30);
/// How long the reader stays hot after the last entry a jail got.
pub const HOT_FOR: Duration = Duration::from_secs(30);
/// How often a quiet reader looks: the first line after a quiet spell
/// waits at most this long, and an idle daemon wakes 5 times a second.
pub const QUIET_POLL: Duration = Duration::from_millis(200);
/// A handle that delivered nothing for this long is reopened.
const REOPEN_QUIET: Duration = Duration::from_secs(60);
/// A handle that could not be opened is tried again after this.
const RETRY_OPEN: Duration = Duration::from_secs(5);
/// Entries read from one handle before the others get their turn.
const ENTRIES_PER_TURN: usize = 4096;

/// One journal entry, ready for a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `Mmm dd hh:mm:ss HOST IDENT[PID]: MESSAGE`.
    pub line: String,
    /// Unix seconds, from the entry's realtime timestamp.
    pub time: i64,
    /// Where to resume after this entry.
    pub cursor: String,
    /// The message was not UTF-8: invalid bytes were replaced by U+FFFD.
    pub undecodable: bool,
    /// The message was longer than [`MAX_LINE_BYTES`] and was cut.
    pub cut: bool,
}

/// The fields of one entry a line is made of, as journald stored them.
#[derive(Debug, Default, Clone)]
pub struct EntryFields {
    pub message: Vec<u8>,
    pub hostname: Option<Vec<u8>>,
    pub syslog_identifier: Option<Vec<u8>>,
    pub comm: Option<Vec<u8>>,
    pub pid: Option<Vec<u8>>,
    pub syslog_pid: Option<Vec<u8>>,
    /// Microseconds of Unix time.
    pub realtime_micros: u64,
    pub cursor: String,
}

/// Why a jail could not join the reader.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the journal reader: {0}")]
pub struct JournalError(#[from] std::io::Error);

type OnEntry = Box<dyn FnMut(JournalEntry) + Send>;
type OnStatus = Box<dyn Fn(String) + Send>;

/// One jail's place in the reader; it leaves the reader when dropped.
pub struct JournalFollower {
    id: u64,
    reader: Arc<SharedReader>,
}

impl std::fmt::Debug for JournalFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalFollower({})", self.id)
    }
}

impl JournalFollower {
    /// Starts following entries that match `matches` (journalctl syntax:
    /// `FIELD=value`, `+` between alternative groups) after `cursor`, or
    /// from now without one. `on_entry` runs on the reader thread for
    /// every entry, in order; `on_status` reports what the jail's reading
    /// is doing, and errors (the reader keeps retrying).
    pub fn start(
        matches: &[String],
        cursor: Option<&str>,
        on_entry: impl FnMut(JournalEntry) + Send + 'static,
        on_status: impl Fn(String) + Send + 'static,
    ) -> Result<JournalFollower, JournalError> {
        let (matches, hardened) = crate::jail::journal_trust::unforgeable_matches(matches);
        if let Some(warning) = crate::jail::journal_trust::warning(&hardened) {
            tracing::warn!("{warning}");
        }
        let reader = SharedReader::get()?;
        let id = reader.next_id.fetch_add(1, Ordering::Relaxed);
        let position = match cursor {
            Some(cursor) => Position::After(cursor.to_string()),
            None => Position::Since(now_micros()),
        };
        let follower = Follower {
            id,
            matches,
            position,
            journal: None,
            last_open: None,
            last_entry: Instant::now(),
            healthy: None,
            on_entry: Box::new(on_entry),
            on_status: Box::new(on_status),
        };
        reader.send(Command::Add(Box::new(follower)))?;
        Ok(JournalFollower { id, reader })
    }
}

impl Drop for JournalFollower {
    fn drop(&mut self) {
        let _ = self.reader.send(Command::Remove(self.id));
    }
}

enum Command {
    Add(Box<Follower>),
    Remove(u64),
    Stop,
}

/// The reader thread, shared by every follower while any is alive.
struct SharedReader {
    commands: mpsc::Sender<Command>,
    /// Written after each command, so a sleeping reader wakes for it.
    doorbell: Arc<OwnedFd>,
    next_id: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SharedReader {
    /// The running reader, started if no follower holds one.
    fn get() -> std::io::Result<Arc<SharedReader>> {
        static READER: Mutex<Weak<SharedReader>> = Mutex::new(Weak::new());
        let mut shared = READER
            .lock()
            .map_err(|_| std::io::Error::other("journal reader lock poisoned"))?;
        if let Some(reader) = shared.upgrade() {
            return Ok(reader);
        }
        let (commands, received) = mpsc::channel();
        // SAFETY: eventfd returns a new descriptor or -1.
        let doorbell = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if doorbell < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned from here on.
        let doorbell = Arc::new(unsafe { OwnedFd::from_raw_fd(doorbell) });
        let rung = doorbell.clone();
        let thread = std::thread::Builder::new()
            .name("orch-journal".into())
            .spawn(move || run(received, &rung))?;
        let reader = Arc::new(SharedReader {
            commands,
            doorbell,
            next_id: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
        });
        *shared = Arc::downgrade(&reader);
        Ok(reader)
    }
}

impl SharedReader {
    /// Hands `command` to the reader thread and wakes it.
    fn send(&self, command: Command) -> std::io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| std::io::Error::other("the journal reader has stopped"))?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an owned eventfd. A
        // full counter (EAGAIN) still leaves it readable, which is enough.
        unsafe {
            libc::write(
                self.doorbell.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        Ok(())
    }
}

impl Drop for SharedReader {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Ok(mut thread) = self.thread.lock()
            && let Some(thread) = thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// The reader thread: takes commands, reads every follower's new entries,
/// and waits: not at all while any has more, else [`JOURNAL_POLL`] while
/// hot and [`QUIET_POLL`] while not, or until journald's signal or a
/// command.
fn run(commands: mpsc::Receiver<Command>, doorbell: &OwnedFd) {
    let mut followers: Vec<Box<Follower>> = Vec::new();
    let mut last_entry: Option<Instant> = None;
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Add(follower)) => followers.push(follower),
                Ok(Command::Remove(id)) => followers.retain(|f| f.id != id),
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        let mut more = false;
        for follower in &mut followers {
            let turn = follower.read_turn();
            if turn.read > 0 {
                last_entry = Some(Instant::now());
            }
            more |= turn.more;
        }
        if more {
            continue;
        }
        let hot = last_entry.is_some_and(|at| at.elapsed() < HOT_FOR);
        let mut descriptors: Vec<RawFd> = vec![doorbell.as_raw_fd()];
        descriptors.extend(followers.iter().filter_map(|f| f.changes_fd()));
        wait_readable(&descriptors, if hot { JOURNAL_POLL } else { QUIET_POLL });
        drain(doorbell);
    }
}

/// Waits until one of `descriptors` is readable or `timeout` has passed.
fn wait_readable(descriptors: &[RawFd], timeout: Duration) {
    let mut polled: Vec<libc::pollfd> = descriptors
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `polled` is a live array of as many pollfds as passed.
    unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, millis) };
}

/// Empties the doorbell's counter.
fn drain(doorbell: &OwnedFd) {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; non-blocking.
    unsafe {
        libc::read(
            doorbell.as_raw_fd(),
            (&mut count as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
}

/// What one follower's turn read.
struct Turn {
    read: usize,
    /// It stopped at [`ENTRIES_PER_TURN`]: there may be more.
    more: bool,
}

/// Where a follower stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// After the entry with this cursor.
    After(String),
    /// From this time (microseconds of Unix time) on.
    Since(u64),
}

/// One jail's handle on the journal, owned by the reader thread.
struct Follower {
    id: u64,
    matches: Vec<String>,
    position: Position,
    journal: Option<Journal>,
    last_open: Option<Instant>,
    last_entry: Instant,
    /// Whether the last status reported was a healthy one.
    healthy: Option<bool>,
    on_entry: OnEntry,
    on_status: OnStatus,
}

impl Follower {
    /// Reads up to [`ENTRIES_PER_TURN`] new entries.
    fn read_turn(&mut self) -> Turn {
        let nothing = Turn {
            read: 0,
            more: false,
        };
        if self.journal.is_none() || self.last_entry.elapsed() >= REOPEN_QUIET {
            if self.journal.is_none() && self.last_open.is_some_and(|at| at.elapsed() < RETRY_OPEN)
            {
                return nothing;
            }
            self.reopen();
        }
        let Some(journal) = self.journal.as_mut() else {
            return nothing;
        };
        match read_entries(journal, &mut self.position, &mut self.on_entry) {
            Ok(0) => nothing,
            Ok(read) => {
                self.last_entry = Instant::now();
                self.report(Ok(()));
                Turn {
                    read,
                    more: read >= ENTRIES_PER_TURN,
                }
            }
            Err(err) => {
                // Opened afresh at the position on the next turn.
                self.journal = None;
                self.report(Err(err));
                nothing
            }
        }
    }

    /// The descriptor journald's changes make readable, once open.
    fn changes_fd(&self) -> Option<RawFd> {
        self.journal.as_ref().map(Journal::changes_fd)
    }

    /// Opens the journal at this follower's position.
    fn reopen(&mut self) {
        self.journal = None;
        self.last_open = Some(Instant::now());
        self.last_entry = Instant::now();
        let opened = open_at(&self.matches, &self.position);
        let report = opened.as_ref().map(drop).map_err(Clone::clone);
        self.journal = opened.ok();
        self.report(report);
    }

    fn report(&mut self, result: Result<(), SdJournalError>) {
        match result {
            Ok(()) => {
                if self.healthy != Some(true) {
                    (self.on_status)(format!("following the journal {}", self.matches.join(" ")));
                    self.healthy = Some(true);
                }
            }
            Err(err) => {
                if self.healthy != Some(false) {
                    tracing::warn!("reading the journal: {err}");
                    self.healthy = Some(false);
                }
                (self.on_status)(format!("reading the journal: {err}"));
            }
        }
    }
}

/// A handle with `matches`, placed so the next step reads the first entry
/// after `position`.
fn open_at(matches: &[String], position: &Position) -> Result<Journal, SdJournalError> {
    let mut journal = Journal::open_local(MAX_LINE_BYTES + 64)?;
    journal.add_matches(matches)?;
    match position {
        Position::Since(micros) => journal.seek_realtime(*micros)?,
        Position::After(cursor) => {
            journal.seek_cursor(cursor)?;
            // The step lands on the cursor's entry if it still exists
            // (delivered already), else on the first one after where it
            // was, which is new: step back over nothing in that case.
            if journal.step()? && !journal.is_at(cursor) {
                journal.seek_cursor(cursor)?;
            }
        }
    }
    Ok(journal)
}

/// Hands up to [`ENTRIES_PER_TURN`] new entries to `on_entry`, moving
/// `position` past each; the number read.
fn read_entries(
    journal: &mut Journal,
    position: &mut Position,
    on_entry: &mut OnEntry,
) -> Result<usize, SdJournalError> {
    journal.process()?;
    let mut count = 0;
    while count < ENTRIES_PER_TURN && journal.step()? {
        let fields = read_fields(journal)?;
        *position = Position::After(fields.cursor.clone());
        count += 1;
        if let Some(entry) = fields.into_entry() {
            on_entry(entry);
        }
    }
    Ok(count)
}

/// The current entry's fields that make its line.
fn read_fields(journal: &mut Journal) -> Result<EntryFields, SdJournalError> {
    const MESSAGE: &CStr = c"MESSAGE";
    const HOSTNAME: &CStr = c"_HOSTNAME";
    const SYSLOG_IDENTIFIER: &CStr = c"SYSLOG_IDENTIFIER";
    const COMM: &CStr = c"_COMM";
    const PID: &CStr = c"_PID";
    const SYSLOG_PID: &CStr = c"SYSLOG_PID";
    Ok(EntryFields {
        cursor: journal.cursor()?,
        realtime_micros: journal.realtime_micros()?,
        message: journal.field(MESSAGE).unwrap_or_default(),
        hostname: journal.field(HOSTNAME),
        syslog_identifier: journal.field(SYSLOG_IDENTIFIER),
        comm: journal.field(COMM),
        pid: journal.field(PID),
        syslog_pid: journal.field(SYSLOG_PID),
    })
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_micros() as u64)
        .unwrap_or(0)
}

impl EntryFields {
    /// The entry as a syslog-style line; `None` for an entry without a
    /// message (nothing for a filter to read).
    pub fn into_entry(self) -> Option<JournalEntry> {
        if self.message.is_empty() {
            return None;
        }
        let text = |bytes: &Option<Vec<u8>>| {
            bytes
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let time = i64::try_from(self.realtime_micros / 1_000_000).unwrap_or(i64::MAX);
        let host = text(&self.hostname).unwrap_or_else(|| "localhost".to_string());
        let ident = text(&self.syslog_identifier)
            .or_else(|| text(&self.comm))
            .unwrap_or_else(|| "unknown".to_string());
        let tag = match text(&self.pid).or_else(|| text(&self.syslog_pid)) {
            Some(pid) => format!("{ident}[{pid}]"),
            None => ident,
        };
        let cut = self.message.len() > MAX_LINE_BYTES;
        let message = &self.message[..self.message.len().min(MAX_LINE_BYTES)];
        let undecodable = std::str::from_utf8(message).is_err_and(|err| {
            // A character cut in two at the limit is not the writer's fault.
            !(cut && err.error_len().is_none())
        });
        let message: String = String::from_utf8_lossy(message)
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let line = format!(
            "{} {} {}: {}",
            bsd_timestamp(time),
            one_word(&host),
            one_word(&tag),
            message.trim_end()
        );
        Some(JournalEntry {
            line,
            time,
            cursor: self.cursor,
            undecodable,
            cut,
        })
    }
}

/// Host names and tags must not carry spaces into the syslog prefix.
fn one_word(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// `Mmm dd hh:mm:ss` in UTC.
fn bsd_timestamp(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    let (_, month, day) = civil_from_days(days);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[(month - 1) as usize],
        day,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &[u8]) -> EntryFields {
        EntryFields {
            message: message.to_vec(),
            cursor: "s=1;i=2".to_string(),
            ..EntryFields::default()
        }
    }

    #[test]
    fn entries_become_syslog_lines_with_the_journal_time() {
        let entry = EntryFields {
            hostname: Some(b"web1".to_vec()),
            syslog_identifier: Some(b"sshd-session".to_vec()),
            comm: Some(b"sshd".to_vec()),
            pid: Some(b"4242".to_vec()),
            realtime_micros: 1_764_064_800_123_456,
            ..fields(b"Invalid user x from 192.0.2.7 port 22")
        }
        .into_entry()
        .unwrap();
        assert_eq!(entry.time, 1_764_064_800);
        assert_eq!(entry.cursor, "s=1;i=2");
        assert_eq!(
            entry.line,
            "Nov 25 10:00:00 web1 sshd-session[4242]: Invalid user x from 192.0.2.7 port 22"
        );
        assert!(!entry.undecodable && !entry.cut);
    }

    #[test]
    fn undecodable_messages_line_breaks_and_spaces_in_names_are_handled() {
        let entry = fields(b"hi\n\xff").into_entry().unwrap();
        assert_eq!(entry.line, "Jan  1 00:00:00 localhost unknown: hi \u{fffd}");
        assert!(entry.undecodable);
        let entry = EntryFields {
            comm: Some(b"my prog".to_vec()),
            syslog_pid: Some(b"7".to_vec()),
            hostname: Some(b"a b".to_vec()),
            ..fields(b"hi\x1b")
        }
        .into_entry()
        .unwrap();
        assert_eq!(entry.line, "Jan  1 00:00:00 a_b my_prog[7]: hi\u{1b}");
        assert!(!entry.undecodable);
    }

    #[test]
    fn long_messages_are_cut_and_empty_ones_skipped() {
        // A two-byte character straddling the limit is cut, not counted as
        // a writer's bad byte.
        let mut long = vec![b'a'; MAX_LINE_BYTES - 1];
        long.extend("é".repeat(100).as_bytes());
        let entry = fields(&long).into_entry().unwrap();
        assert!(entry.cut && !entry.undecodable);
        assert!(entry.line.len() <= MAX_LINE_BYTES + 64);
        assert!(fields(b"").into_entry().is_none());
    }
}
