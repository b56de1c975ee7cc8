//! One running jail: a thread that takes lines from its source (files or
//! the journal), runs them through its filter, counts failures and asks for
//! a ban when an address reaches `maxretry` within `findtime`.
//!
//! The thread also keeps the jail's health (`jail::health`): lines/s, lag
//! behind its log, match-limit hits, lines cut or not UTF-8, published
//! about once a second, with a warning logged when the lag passes half of
//! `findtime`. Files are read [`READ_BUDGET`] bytes at a time, so a flood
//! cannot keep the thread from saving positions, publishing or stopping.
//!
//! The jail decides *that* an address should be banned; the daemon's core
//! decides *whether* and *for how long* (allowlists, own addresses, repeat
//! offenders) and is the only one that bans, through [`JailActions`]. Ban
//! requests wait while a burst is read (the lines already written, up to
//! [`MAX_PENDING_BANS`] or [`MAX_BAN_DELAY`]) and go to the core as one
//! request, which stores them with one fsync and applies them in one
//! transaction: a burst of jail bans costs what one `BanMany` costs. The
//! jail also hands its read positions to the core, which persists them, so
//! a restart resumes where reading stopped.

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::counter::FailureCounter;
#[cfg(doc)]
use super::file_source::READ_BUDGET;
use super::file_source::{FileFollower, FilePosition, FileWatch};
use super::health::{Health, HealthMeter, LagChange, human_bytes, human_lag};
use super::journal_source::{JournalEntry, JournalFollower};
use super::line_filter::{LineFilter, LineMatch};
use super::recent_asks::RecentAsks;
use crate::config::{JailConfig, JailSource};

/// How often files are checked even without an inotify event.
const FILE_POLL: Duration = Duration::from_secs(2);
/// Positions are saved at most this often (each save is an fsync).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Wake-ups and journal entries waiting for the jail thread.
const WAKE_QUEUE: usize = 4096;
/// How often addresses with no failure left in `findtime` are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Ban requests held while a burst is read, at most; then they go.
pub const MAX_PENDING_BANS: usize = 10_000;
/// How long a ban request waits for the rest of its burst, at most.
pub const MAX_BAN_DELAY: Duration = Duration::from_millis(50);
/// Outcomes of one burst logged one by one; the rest get one summary
/// line (journald would drop a flood of lines anyway: by default it keeps
/// 10,000 per service in 30 s).
const LOGGED_PER_BURST: u64 = 100;
/// Queued wake-ups (journal entries) handled before the bans they led to
/// are sent and positions saved.
const WAKES_PER_ROUND: usize = 1024;
/// How long an `ignore_command` may run before it is killed.
const IGNORE_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// What a jail asks of the daemon.
pub trait JailActions: Send + Sync {
    /// Bans `nets` (addresses, or IPv6 prefixes: `ipv6_prefix`) for jail
    /// `jail`, each after `failures` failures, as one request. Returns per
    /// network a line for the log: what was done, or why not; `Err` when
    /// the whole request failed.
    fn ban_many(&self, jail: &JailConfig, nets: Vec<IpNet>, failures: u32) -> BanOutcomes;
    /// Persists read positions (key, value).
    fn save_positions(&self, positions: Vec<(String, String)>) -> Result<(), String>;
    /// A count that moves whenever a ban is removed (unban, expiry), read
    /// without waiting: the jail asks again about a network it asked about
    /// seconds ago once it moved (`recent_asks`).
    fn removals(&self) -> u64;
}

/// What a [`JailActions::ban_many`] request came to: per network, a line
/// for the log or why it was not banned; `Err` when the request failed.
pub type BanOutcomes = Result<Vec<(IpNet, Result<String, String>)>, String>;

/// Counters for `orch status`, shared with the daemon.
#[derive(Debug, Default)]
pub struct JailStats {
    pub lines: AtomicU64,
    pub failures: AtomicU64,
    pub tracked: AtomicU64,
    pub bans: AtomicU64,
    /// What the source is doing, e.g. "following 2 files" or an error.
    pub state: Mutex<String>,
    /// The reader's health, published about once a second; `None` for a
    /// jail that reads no log (recidive) or before the first publication.
    pub health: Mutex<Option<Health>>,
}

impl JailStats {
    /// Replaces the state text shown by `orch status`.
    pub fn set_state(&self, text: String) {
        if let Ok(mut state) = self.state.lock() {
            *state = text;
        }
    }

    /// The last published health, if any.
    pub fn health(&self) -> Option<Health> {
        self.health.lock().ok().and_then(|health| *health)
    }
}

/// The store key of a jail's position for `path` or its journal cursor.
pub fn position_key(jail: &str, path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("jail/{jail}/file:{}", path.display()),
        None => format!("jail/{jail}/journal"),
    }
}

enum Wake {
    Files,
    Journal(JournalEntry),
    Stop,
}

/// A started jail; [`RunningJail::stop`] ends it after saving positions.
pub struct RunningJail {
    pub config: Arc<JailConfig>,
    pub stats: Arc<JailStats>,
    wake: mpsc::SyncSender<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl RunningJail {
    /// Starts `config` with `filter`. `saved` gives stored positions by key.
    pub fn start(
        config: JailConfig,
        filter: Box<dyn LineFilter>,
        max_tracked: usize,
        saved: &dyn Fn(&str) -> Option<String>,
        actions: Arc<dyn JailActions>,
    ) -> std::io::Result<RunningJail> {
        let config = Arc::new(config);
        let stats = Arc::new(JailStats::default());
        // Bounded: a journal backlog waits in the journal (the reader thread
        // blocks on a full queue), not here.
        let (wake, woken) = mpsc::sync_channel(WAKE_QUEUE);
        let source = match &config.source {
            JailSource::Files(patterns) => {
                let unsaved = std::cell::Cell::new(false);
                let follower = FileFollower::new(patterns, &|path| {
                    let position = saved(&position_key(&config.name, Some(path)))
                        .and_then(|text| FilePosition::decode(&text));
                    unsaved.set(unsaved.get() || position.is_none());
                    position
                });
                // A file with no saved position starts at its end. That
                // start is saved now, before the daemon is ready: a crash
                // before the first periodic save would otherwise restart at
                // the new end and skip the lines written in between.
                if unsaved.get()
                    && let Err(err) =
                        actions.save_positions(file_positions(&config.name, &follower))
                {
                    tracing::warn!(orch_jail = %config.name, "cannot save read positions: {err}");
                }
                let waker = wake.clone();
                let (watch, unwatched) = FileWatch::start(&follower.directories(), move || {
                    // A full queue already holds a wake-up; files are read
                    // to their end each time, so one is enough.
                    let _ = waker.try_send(Wake::Files);
                });
                for dir in unwatched {
                    tracing::warn!(orch_jail = %config.name, "cannot watch {}; polling it every {FILE_POLL:?}", dir.display());
                }
                Source::Files {
                    follower,
                    _watch: watch,
                }
            }
            JailSource::OwnBans => {
                return Err(std::io::Error::other(
                    "the recidive jail is run by the core, not by a reader thread",
                ));
            }
            JailSource::Journal { matches } => {
                let cursor = saved(&position_key(&config.name, None));
                let entries = wake.clone();
                let status = stats.clone();
                let delivered = Arc::new(AtomicU64::new(0));
                let counted = delivered.clone();
                let follower = JournalFollower::start(
                    matches,
                    cursor.as_deref(),
                    move |entry| {
                        // Counted first: the jail is caught up when it has
                        // handled as many entries as were delivered.
                        counted.fetch_add(1, Ordering::Relaxed);
                        let _ = entries.send(Wake::Journal(entry));
                    },
                    move |state| status.set_state(state),
                )
                .map_err(std::io::Error::other)?;
                Source::Journal {
                    _follower: follower,
                    saved_cursor: cursor.clone(),
                    cursor,
                    delivered,
                    handled: 0,
                }
            }
        };
        let judge = Judge {
            counter: FailureCounter::new(config.max_retry, config.find_time.as_secs(), max_tracked),
            config: config.clone(),
            filter,
            stats: stats.clone(),
            actions,
            found: Vec::new(),
            last_expire: Instant::now(),
            meter: HealthMeter::new(config.find_time),
            asked: RecentAsks::default(),
            pending: Vec::new(),
            pending_since: None,
        };
        let mut worker = Worker {
            source,
            judge,
            last_save: Instant::now(),
            dirty: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("orch-jail-{}", config.name))
            .spawn(move || worker.run(woken))?;
        Ok(RunningJail {
            config,
            stats,
            wake,
            thread: Some(thread),
        })
    }

    /// Ends the jail: its positions are saved first.
    pub fn stop(mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum Source {
    Files {
        follower: FileFollower,
        _watch: FileWatch,
    },
    Journal {
        _follower: JournalFollower,
        /// The cursor of the last entry handled.
        cursor: Option<String>,
        /// The cursor last persisted.
        saved_cursor: Option<String>,
        /// Entries handed to the jail thread, and handled by it.
        delivered: Arc<AtomicU64>,
        handled: u64,
    },
}

/// The reading side of a jail: its source and where reading stands. The
/// jail's config, counters and actions are the judge's.
struct Worker {
    source: Source,
    judge: Judge,
    last_save: Instant,
    /// Positions moved since the last save.
    dirty: bool,
}

/// The deciding side: filter, failure counter, ban requests.
struct Judge {
    config: Arc<JailConfig>,
    filter: Box<dyn LineFilter>,
    counter: FailureCounter,
    stats: Arc<JailStats>,
    actions: Arc<dyn JailActions>,
    found: Vec<LineMatch>,
    last_expire: Instant,
    meter: HealthMeter,
    /// Networks asked about in the last seconds, not asked again.
    asked: RecentAsks,
    /// Ban requests waiting for the rest of their burst, and since when.
    pending: Vec<IpNet>,
    pending_since: Option<Instant>,
}

impl Worker {
    fn run(&mut self, woken: mpsc::Receiver<Wake>) {
        tracing::info!(orch_jail = %self.judge.config.name, filter = %self.judge.filter.origin(), source = %self.judge.config.source, "jail started");
        let mut caught_up = self.read_files();
        self.publish_health_if_due();
        loop {
            // Bytes left over by the read budget are read at once: they are
            // written already, so no inotify event may come for them.
            let wait = if caught_up { FILE_POLL } else { Duration::ZERO };
            let mut woke = woken.recv_timeout(wait);
            // What is already queued (a burst of journal entries) is
            // handled before the bans it leads to go out, up to a bound.
            for _ in 0..WAKES_PER_ROUND {
                match woke {
                    Ok(Wake::Files) | Err(RecvTimeoutError::Timeout) => {
                        caught_up = self.read_files();
                        self.judge.expire_if_due();
                    }
                    Ok(Wake::Journal(entry)) => self.handle_entry(entry),
                    Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => {
                        self.judge.send_bans();
                        self.save_positions(true);
                        tracing::info!(orch_jail = %self.judge.config.name, "jail stopped");
                        return;
                    }
                }
                if self.judge.bans_due() {
                    break;
                }
                woke = match woken.try_recv() {
                    Ok(wake) => Ok(wake),
                    Err(_) => break,
                };
            }
            // Bans are durable before the positions past their lines are.
            self.judge.send_bans();
            self.save_positions(false);
            self.publish_health_if_due();
        }
    }

    /// Publishes the jail's health if a second has passed since the last
    /// time.
    fn publish_health_if_due(&mut self) {
        let now = Instant::now();
        if self.judge.meter.due(now) {
            self.judge.publish_health(now);
        }
    }

    /// Judges one journal entry; the jail is behind from the first entry
    /// until it has handled every entry delivered.
    fn handle_entry(&mut self, entry: JournalEntry) {
        self.judge.meter.clock.start_work(Instant::now());
        self.judge.meter.newest_entry = u64::try_from(entry.time).ok();
        if entry.undecodable {
            self.judge.meter.not_utf8 += 1;
        }
        if entry.cut {
            self.judge.meter.too_long += 1;
        }
        self.judge.handle_line(&entry.line, Some(entry.time));
        if let Source::Journal {
            cursor,
            delivered,
            handled,
            ..
        } = &mut self.source
        {
            *cursor = Some(entry.cursor);
            self.dirty = true;
            *handled += 1;
            if *handled >= delivered.load(Ordering::Relaxed) {
                self.judge.meter.clock.caught_up();
            }
        }
    }

    /// Reads what the budget allows; returns whether every file was read
    /// to its end.
    fn read_files(&mut self) -> bool {
        let Source::Files { follower, .. } = &mut self.source else {
            return true;
        };
        // Lines are judged as they are read, so a burst of any size costs
        // one read buffer, not a copy of the burst.
        let judge = &mut self.judge;
        let mut read_any = false;
        judge.meter.clock.start_work(Instant::now());
        let caught_up = follower.read_new(&mut |_, line| {
            read_any = true;
            judge.handle_line(line, None);
        });
        if caught_up {
            judge.meter.clock.caught_up();
        }
        // One fstat per file per budget read: cheap next to the reading.
        judge.meter.bytes_behind = Some(follower.bytes_behind());
        let counts = follower.line_counts();
        (judge.meter.too_long, judge.meter.not_utf8) = (counts.too_long, counts.not_utf8);
        let open = follower.open_files();
        let not_read = follower.not_read();
        let state = if not_read.is_empty() {
            format!("following {open} file(s)")
        } else {
            format!(
                "following {open} file(s); not read: {}",
                not_read.join("; ")
            )
        };
        self.judge.stats.set_state(state);
        self.dirty |= read_any;
        caught_up
    }

    fn save_positions(&mut self, now: bool) {
        if !self.dirty || (!now && self.last_save.elapsed() < SAVE_EVERY) {
            return;
        }
        let jail = &self.judge.config.name;
        let positions: Vec<(String, String)> = match &mut self.source {
            Source::Files { follower, .. } => file_positions(jail, follower),
            Source::Journal {
                cursor,
                saved_cursor,
                ..
            } => {
                if cursor == saved_cursor {
                    Vec::new()
                } else {
                    saved_cursor.clone_from(cursor);
                    cursor
                        .iter()
                        .map(|c| (position_key(jail, None), c.clone()))
                        .collect()
                }
            }
        };
        self.dirty = false;
        self.last_save = Instant::now();
        if positions.is_empty() {
            return;
        }
        if let Err(err) = self.judge.actions.save_positions(positions) {
            tracing::warn!(orch_jail = %jail, "cannot save read positions: {err}");
        }
    }
}

/// The store entries of every position `follower` holds.
fn file_positions(jail: &str, follower: &FileFollower) -> Vec<(String, String)> {
    follower
        .positions()
        .into_iter()
        .map(|(path, position)| (position_key(jail, Some(&path)), position.encode()))
        .collect()
}

impl Judge {
    /// Forgets addresses whose failures all left `findtime`, once a minute.
    fn expire_if_due(&mut self) {
        if self.last_expire.elapsed() < EXPIRE_EVERY {
            return;
        }
        self.last_expire = Instant::now();
        self.counter.expire(crate::timefmt::now_unix());
        self.stats
            .tracked
            .store(self.counter.tracked() as u64, Ordering::Relaxed);
    }

    /// Runs one line through the filter and counts what it finds.
    /// `source_time` is the journal's timestamp, which wins over a date the
    /// filter found in the text.
    fn handle_line(&mut self, line: &str, source_time: Option<i64>) {
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        // A long batch of slow lines still publishes once a second.
        if self.meter.line_read() {
            let now = Instant::now();
            if self.meter.due(now) {
                self.publish_health(now);
            }
        }
        self.found.clear();
        self.filter.feed(line, &mut self.found);
        if self.found.is_empty() {
            return;
        }
        // The clock is read only for lines with failures.
        let now = crate::timefmt::now_unix();
        let failures = std::mem::take(&mut self.found);
        for failure in &failures {
            let time = source_time
                .or(failure.time)
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(now)
                .min(now);
            // Old news (a backlog read after a restart) does not ban.
            if now - time >= self.config.find_time.as_secs() {
                continue;
            }
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            // IPv6 failures add up per prefix: maxretry failures from any
            // addresses of one /64 (by default) ban the /64.
            let net = crate::addr::jail_net(failure.host, self.config.ipv6_prefix);
            if self.counter.record(net.network(), time) {
                self.ban(failure.host, net);
            }
        }
        self.found = failures;
        self.stats
            .tracked
            .store(self.counter.tracked() as u64, Ordering::Relaxed);
    }

    /// Publishes the jail's health, and logs when the lag warning is
    /// raised or cleared.
    fn publish_health(&mut self, now: Instant) {
        let (health, change) = self.meter.snapshot(
            now,
            crate::timefmt::now_unix(),
            self.stats.lines.load(Ordering::Relaxed),
            self.filter.limit_hits(),
        );
        if let Ok(mut published) = self.stats.health.lock() {
            *published = Some(health);
        }
        let jail = &self.config.name;
        let lag = human_lag(health.lag);
        match change {
            Some(LagChange::Raised) => {
                let unread = health
                    .bytes_behind
                    .map(|bytes| format!(", {} unread", human_bytes(bytes)))
                    .unwrap_or_default();
                tracing::warn!(
                    orch_jail = %jail,
                    "jail {jail} is {lag} behind its log{unread}, more than half its findtime ({}): failures older than findtime are dropped as stale; {:.0} lines/s, {} match-limit hits",
                    human_lag(self.config.find_time),
                    health.lines_per_sec,
                    health.limit_hits,
                );
            }
            Some(LagChange::Cleared) => {
                tracing::info!(orch_jail = %jail, "jail {jail} has caught up with its log (lag {lag}, under {})", human_lag(self.meter.threshold() / 2));
            }
            None => {}
        }
    }

    /// Bans `net` after `addr`'s last failure (`net` is `addr`, or its
    /// IPv6 prefix).
    fn ban(&mut self, addr: IpAddr, net: IpNet) {
        // Asked seconds ago, and no ban removed since: the answer stands
        // (banned, or refused).
        if !self
            .asked
            .should_ask(net, Instant::now(), self.actions.removals())
        {
            return;
        }
        let config = self.config.clone();
        let jail = &config.name;
        if let Some(ignored) = config
            .ignore
            .iter()
            .find(|ignored| crate::addr::overlaps(ignored, &net))
        {
            tracing::info!(orch_jail = %jail, orch_address = %net, "not banned: in this jail's ignore list ({ignored})");
            return;
        }
        if !config.ignore_command.is_empty() && ignore_command_says_ignore(&config, addr) {
            tracing::info!(orch_jail = %jail, orch_address = %addr, "not banned: ignore_command exited 0");
            return;
        }
        // The ban waits for the rest of its burst, briefly.
        self.pending.push(net);
        self.pending_since.get_or_insert_with(Instant::now);
        if self.bans_due() {
            self.send_bans();
        }
    }

    /// Whether the waiting ban requests should go now: enough of them, or
    /// the first has waited long enough.
    fn bans_due(&self) -> bool {
        self.pending.len() >= MAX_PENDING_BANS
            || self
                .pending_since
                .is_some_and(|since| since.elapsed() >= MAX_BAN_DELAY)
    }

    /// Sends the waiting ban requests to the core as one request and logs
    /// what each came to. The bans are durable before this returns, so
    /// positions saved afterwards never skip a line whose ban was lost.
    fn send_bans(&mut self) {
        self.pending_since = None;
        if self.pending.is_empty() {
            return;
        }
        let nets = std::mem::take(&mut self.pending);
        let count = nets.len();
        let jail = &self.config.name;
        match self
            .actions
            .ban_many(&self.config, nets, self.config.max_retry)
        {
            Ok(outcomes) => {
                let (mut banned, mut refused) = (0u64, 0u64);
                for (net, outcome) in outcomes {
                    let logged = banned + refused < LOGGED_PER_BURST;
                    match outcome {
                        Ok(done) => {
                            banned += 1;
                            if logged {
                                // ban_log has logged the ban itself.
                                tracing::debug!(orch_jail = %jail, orch_address = %net, "{done}");
                            }
                        }
                        Err(why) => {
                            refused += 1;
                            if logged {
                                tracing::warn!(orch_jail = %jail, orch_address = %net, "not banned: {why}");
                            }
                        }
                    }
                }
                self.stats.bans.fetch_add(banned, Ordering::Relaxed);
                let unlogged = (banned + refused).saturating_sub(LOGGED_PER_BURST);
                if unlogged > 0 {
                    tracing::info!(
                        orch_jail = %jail,
                        "this burst also handled {unlogged} more networks, not logged one by one ({banned} banned, {refused} not banned in all; `orch list` shows the bans)"
                    );
                }
            }
            Err(failed) => tracing::warn!(orch_jail = %jail, count, "not banned: {failed}"),
        }
    }
}

/// Runs the jail's `ignore_command` with `<ip>` replaced; exit status 0
/// means "ignore". A command that cannot start, fails or hangs (its whole
/// process group killed after [`IGNORE_COMMAND_TIMEOUT`]) does not stop
/// the ban. It gets a clean environment (a fixed PATH, `ORCH_JAIL`,
/// `ORCH_IP`) and only descriptors 0-2.
fn ignore_command_says_ignore(config: &JailConfig, addr: IpAddr) -> bool {
    let ip = addr.to_string();
    let argv: Vec<String> = config
        .ignore_command
        .iter()
        .map(|arg| arg.replace("<ip>", &ip))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", crate::child::CLEAN_PATH)
        .env("ORCH_JAIL", &config.name)
        .env("ORCH_IP", &ip)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    let child = crate::child::only_standard_fds(&mut command).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            tracing::warn!(orch_jail = %config.name, "ignore_command {program}: {err}");
            return false;
        }
    };
    let deadline = Instant::now() + IGNORE_COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                // The group is the child's own (process_group(0)): its
                // children go with it.
                if let Ok(group) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: plain kill(2) of a process group we created.
                    unsafe {
                        libc::kill(-group, libc::SIGKILL);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(orch_jail = %config.name, "ignore_command {program} did not finish in {IGNORE_COMMAND_TIMEOUT:?}; killed");
                return false;
            }
        }
    }
}
