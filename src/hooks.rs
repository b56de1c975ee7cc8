//! Runs the admin's hooks: the executables in `hooks.dir`, in lexical order
//! of file name, one at a time.
//!
//! Each hook runs in its own process group, with a clean environment, stdin
//! on /dev/null and `/` as working directory, under a timeout. Its output
//! goes to the log, capped, and the last lines of its stderr are kept for
//! `orch status`. A failing hook never stops the others, and nothing a hook
//! does makes the runner hang: on timeout the whole process group is killed,
//! and once the hook has ended its pipes are read for at most a second
//! before whatever it left in its process group is killed too.
//!
//! A hook that someone other than root could have written (the file, or a
//! directory above it, not root's or writable by group or others) is not
//! run; its result says why ([`crate::file_trust`]).
//!
//! Ban actions' programs ([`run_program`]) run the same way, with their
//! arguments and the event's addresses on stdin.
//!
//! This module only *runs* hooks; `daemon::hook_runs` decides when.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// Where hooks live unless `hooks.dir` says otherwise.
pub const DEFAULT_DIR: &str = "/etc/orch/hooks.d";
/// How long a hook may run unless `hooks.timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// PATH every hook gets.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// LANG every hook gets.
pub const HOOK_LANG: &str = "C.UTF-8";

/// Longest line logged; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;
/// Most output logged per hook (stdout and stderr together).
const MAX_OUTPUT: usize = 64 * 1024;
/// Stderr lines kept in [`HookResult::stderr_tail`].
const STDERR_TAIL: usize = 5;
/// How long the pipes are still read after the hook itself has ended.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for a killed hook to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);
/// Spawn attempts when the file is busy being written (ETXTBSY).
const BUSY_RETRIES: u32 = 5;
/// Marker appended to a line cut at [`MAX_LINE`].
const CUT_MARKER: &str = " [...]";

/// Names ending like this are backups or package-manager leftovers.
const SKIPPED_SUFFIXES: &[&str] = &[
    "~",
    ".dpkg-old",
    ".dpkg-dist",
    ".dpkg-new",
    ".rpmnew",
    ".rpmsave",
    ".orig",
    ".disabled",
];

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0.
    Succeeded,
    /// Exited with a non-zero status.
    Failed { status: i32 },
    /// Died of a signal orch did not send.
    Killed { signal: i32 },
    /// Ran past its timeout; orch killed its process group.
    TimedOut { after: Duration },
    /// Could not be started (ENOEXEC, EACCES, removed meanwhile, ...).
    SpawnError { message: String },
    /// Not run: someone other than root could have written it
    /// ([`crate::file_trust`]).
    Untrusted { why: String },
}

impl HookOutcome {
    /// [`HookOutcome::status_code`] of a hook not run as untrusted.
    pub const UNTRUSTED_CODE: i32 = -3;

    pub fn is_success(&self) -> bool {
        matches!(self, HookOutcome::Succeeded)
    }

    /// Exit-status-like code, as `HookFailed(s name, i status)` and `orch
    /// status` report it: the exit code (0 = success), 128 + signal for a
    /// signal, -1 for a timeout, -2 when the hook could not be started, -3
    /// when it was not run because others than root could have written it.
    pub fn status_code(&self) -> i32 {
        match self {
            HookOutcome::Succeeded => 0,
            HookOutcome::Failed { status } => *status,
            HookOutcome::Killed { signal } => 128 + signal,
            HookOutcome::TimedOut { .. } => -1,
            HookOutcome::SpawnError { .. } => -2,
            HookOutcome::Untrusted { .. } => Self::UNTRUSTED_CODE,
        }
    }
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookOutcome::Succeeded => f.write_str("succeeded"),
            HookOutcome::Failed { status } => write!(f, "failed with exit status {status}"),
            HookOutcome::Killed { signal } => write!(f, "was killed by signal {signal}"),
            HookOutcome::TimedOut { after } => write!(
                f,
                "timed out after {} and was killed with its process group",
                humantime::format_duration(*after)
            ),
            HookOutcome::SpawnError { message } => write!(f, "could not be started: {message}"),
            HookOutcome::Untrusted { why } => write!(f, "was not run: {why}"),
        }
    }
}

/// One hook's run.
#[derive(Debug, Clone)]
pub struct HookResult {
    /// The hook's file name.
    pub name: String,
    pub outcome: HookOutcome,
    /// From start until the hook exited or was killed.
    pub duration: Duration,
    /// The last few non-empty stderr lines (at most 5, oldest first).
    pub stderr_tail: Vec<String>,
}

/// Where hooks are and how long each may run.
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub dir: PathBuf,
    pub default_timeout: Duration,
    /// Per-hook timeouts, by file name.
    pub timeouts: BTreeMap<String, Duration>,
}

impl HookSettings {
    /// The timeout of hook `name`: its own, else the default.
    pub fn timeout_for(&self, name: &str) -> Duration {
        self.timeouts
            .get(name)
            .copied()
            .unwrap_or(self.default_timeout)
    }
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            dir: PathBuf::from(DEFAULT_DIR),
            default_timeout: DEFAULT_TIMEOUT,
            timeouts: BTreeMap::new(),
        }
    }
}

/// Why a directory entry's name is not a hook's, if it is not.
fn skipped_name(name: &str) -> Option<&'static str> {
    if name.starts_with('.') {
        Some("hidden file")
    } else if SKIPPED_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
        Some("backup or package-manager file")
    } else {
        None
    }
}

/// The hooks that would run, in order (file names).
///
/// A hook is a regular file (or a symlink to one) with an execute bit whose
/// name does not start with `.` and does not end in `~`, `.dpkg-old`,
/// `.dpkg-dist`, `.dpkg-new`, `.rpmnew`, `.rpmsave`, `.orig` or `.disabled`.
/// Everything else is skipped with a debug log. A missing directory holds no
/// hooks; any other error reading it is returned.
pub fn list_hooks(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(dir = %dir.display(), "hook directory does not exist: no hooks");
            return Ok(Vec::new());
        }
        Err(err) => return Err(err),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::debug!(file = %entry.path().display(), "not a hook: name is not UTF-8");
            continue;
        };
        if let Some(reason) = skipped_name(&name) {
            tracing::debug!(hook = %name, "not a hook: {reason}");
            continue;
        }
        // Follows symlinks: a link to an executable is a hook.
        match std::fs::metadata(entry.path()) {
            Ok(meta) if !meta.is_file() => {
                tracing::debug!(hook = %name, "not a hook: not a regular file");
            }
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                tracing::debug!(hook = %name, "not a hook: not executable");
            }
            Ok(_) => names.push(name),
            Err(err) => {
                tracing::warn!(hook = %name, "skipped: cannot stat {}: {err}", entry.path().display());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Runs every hook in `settings.dir` in order, one after the other, and
/// returns how each went. Never fails as a whole: a directory that cannot be
/// read is logged and means no hooks, and one hook's failure does not stop
/// the next.
///
/// Hooks get a clean environment: `PATH` ([`HOOK_PATH`]), `LANG`
/// ([`HOOK_LANG`]) and `env` (later entries win, so `env` may override
/// PATH and LANG; entries with an empty name, or `=` or NUL in it or NUL
/// in the value, are dropped with a warning).
pub async fn run_hooks(settings: &HookSettings, env: &[(String, String)]) -> Vec<HookResult> {
    // The hook runs in `/`, so its path must not be relative.
    let dir = std::path::absolute(&settings.dir).unwrap_or_else(|_| settings.dir.clone());
    let names = match list_hooks(&dir) {
        Ok(names) => names,
        Err(err) => {
            tracing::warn!(dir = %dir.display(), "cannot list hooks: {err}");
            return Vec::new();
        }
    };
    let env = hook_env(env);
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        if let Some(refused) = refuse_untrusted(&path, &name) {
            results.push(refused);
            continue;
        }
        let timeout = settings.timeout_for(&name);
        let program = Program {
            path: &path,
            args: &[],
            env: &env,
            input: None,
        };
        results.push(run_hook(program, name, timeout).await);
    }
    results
}

/// Runs one program the way a hook runs (same trust check, process group,
/// timeout and output handling), with arguments, `env` on top of the
/// clean environment, and `input` on its stdin. `name` is what the log
/// calls it. For ban actions (`crate::actions`).
pub async fn run_program(
    path: &Path,
    name: String,
    args: &[String],
    env: &[(String, String)],
    input: Vec<u8>,
    timeout: Duration,
) -> HookResult {
    if let Some(refused) = refuse_untrusted(path, &name) {
        return refused;
    }
    let env = hook_env(env);
    let program = Program {
        path,
        args,
        env: &env,
        input: Some(input),
    };
    run_hook(program, name, timeout).await
}

/// The result of a program not run because others than root could have
/// written it; `None` when it may run.
fn refuse_untrusted(path: &Path, name: &str) -> Option<HookResult> {
    let untrusted = crate::file_trust::check_root_only(path).err()?;
    let why = untrusted.to_string();
    let outcome = HookOutcome::Untrusted { why: why.clone() };
    tracing::warn!(hook = %name, "hook {outcome}");
    Some(HookResult {
        name: name.to_string(),
        outcome,
        duration: Duration::ZERO,
        // What `orch status` shows of it.
        stderr_tail: vec![why],
    })
}

/// What to start: the file, its arguments, its whole environment, and
/// what goes to its stdin (`None`: /dev/null).
struct Program<'a> {
    path: &'a Path,
    args: &'a [String],
    env: &'a [(String, String)],
    input: Option<Vec<u8>>,
}

/// The hooks in `dir` that would not run because others than root could
/// have written them, with why (for `orch check-config`).
pub fn untrusted_hooks(dir: &Path) -> Vec<(String, crate::file_trust::Untrusted)> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    list_hooks(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| {
            crate::file_trust::check_root_only(&dir.join(&name))
                .err()
                .map(|why| (name, why))
        })
        .collect()
}

/// The whole environment of a hook.
fn hook_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("PATH".to_string(), HOOK_PATH.to_string()),
        ("LANG".to_string(), HOOK_LANG.to_string()),
    ];
    for (key, value) in env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            tracing::warn!("hook environment variable {key:?} is not valid; left out");
            continue;
        }
        all.push((key.clone(), value.clone()));
    }
    all
}

async fn run_hook(program: Program<'_>, name: String, timeout: Duration) -> HookResult {
    tracing::debug!(hook = %name, timeout = %humantime::format_duration(timeout), "running hook");
    let mut capture = Capture::new(&name);
    let (outcome, duration) = execute(program, &name, timeout, &mut capture).await;
    let stderr_tail = capture.finish();
    match &outcome {
        HookOutcome::Succeeded => tracing::info!(
            hook = %name,
            "hook succeeded in {}",
            humantime::format_duration(round_ms(duration))
        ),
        other => tracing::warn!(hook = %name, status = other.status_code(), "hook {other}"),
    }
    HookResult {
        name,
        outcome,
        duration,
        stderr_tail,
    }
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Starts the hook, waits for it (or kills it), drains its output into
/// `capture`, and cleans up its process group.
async fn execute(
    program: Program<'_>,
    name: &str,
    timeout: Duration,
    capture: &mut Capture<'_>,
) -> (HookOutcome, Duration) {
    let started = Instant::now();
    let mut child = match spawn(&program).await {
        Ok(child) => child,
        Err(err) => {
            let message = if err.raw_os_error() == Some(libc::ENOEXEC) {
                format!("{err}: not a program, and no #! line")
            } else {
                err.to_string()
            };
            return (HookOutcome::SpawnError { message }, started.elapsed());
        }
    };
    // The child called setpgid(0, 0) before exec, so its pid is its group.
    let Some(mut group) = child
        .id()
        .and_then(|pid| libc::pid_t::try_from(pid).ok())
        .and_then(ProcessGroup::new)
    else {
        let _ = child.start_kill();
        let message = "started, but its process id is unknown".to_string();
        return (HookOutcome::SpawnError { message }, started.elapsed());
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Fed on the side: a program that does not read its stdin cannot
    // stall the run, and its end (or kill) ends the write.
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), program.input) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = tokio::time::timeout(timeout, stdin.write_all(&input)).await;
        });
    }

    let (outcome, duration) = {
        let pump = pump(stdout, stderr, capture);
        tokio::pin!(pump);
        let mut pumped = false;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let waited = loop {
            tokio::select! {
                biased;
                status = child.wait() => break Some(status),
                () = &mut deadline => break None,
                () = &mut pump, if !pumped => pumped = true,
            }
        };
        let duration = started.elapsed();
        let outcome = match waited {
            Some(Ok(status)) => outcome_of(status),
            Some(Err(err)) => HookOutcome::SpawnError {
                message: format!("cannot wait for it: {err}"),
            },
            None => {
                // Not reaped yet, so the group id cannot have been reused.
                group.kill();
                if tokio::time::timeout(REAP_LIMIT, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(hook = %name, "still not gone {REAP_LIMIT:?} after SIGKILL");
                }
                HookOutcome::TimedOut { after: timeout }
            }
        };
        // A background process may still hold the pipes open.
        if !pumped && tokio::time::timeout(PIPE_GRACE, &mut pump).await.is_err() {
            tracing::debug!(
                hook = %name,
                "output still open {PIPE_GRACE:?} after the hook ended; no longer read"
            );
        }
        (outcome, duration)
    };
    // Whatever the hook left behind in its group goes now.
    if group.kill() && !matches!(outcome, HookOutcome::TimedOut { .. }) {
        tracing::warn!(hook = %name, "killed processes the hook left running in its process group");
    }
    group.disarm();
    (outcome, duration)
}

/// Spawns the hook; retries briefly while its file is busy (ETXTBSY: it is
/// being written, or another thread's fork still holds a writer).
async fn spawn(program: &Program<'_>) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        let mut command = Command::new(program.path);
        let stdin = match program.input {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        };
        command
            .args(program.args)
            .env_clear()
            .envs(program.env.iter().map(|(key, value)| (key, value)))
            .current_dir("/")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        crate::child::only_standard_fds_async(&mut command);
        match command.spawn() {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && attempt < BUSY_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            result => return result,
        }
    }
}

fn outcome_of(status: ExitStatus) -> HookOutcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => HookOutcome::Succeeded,
        (Some(status), _) => HookOutcome::Failed { status },
        (None, Some(signal)) => HookOutcome::Killed { signal },
        (None, None) => HookOutcome::Failed {
            status: status.into_raw(),
        },
    }
}

/// A hook's process group. Killed when dropped while armed, so a cancelled
/// run leaves nothing behind.
struct ProcessGroup {
    pgid: libc::pid_t,
    armed: bool,
}

impl ProcessGroup {
    fn new(pgid: libc::pid_t) -> Option<ProcessGroup> {
        // kill(-1) would signal every process we may signal; never that.
        (pgid > 1).then_some(ProcessGroup { pgid, armed: true })
    }

    /// SIGKILL to the whole group; whether any process was in it.
    fn kill(&mut self) -> bool {
        // SAFETY: kill(2) has no memory-safety preconditions; pgid > 1.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) == 0 }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// Reads both pipes until both are at end of file, feeding `capture`.
async fn pump(
    mut stdout: Option<ChildStdout>,
    mut stderr: Option<ChildStderr>,
    capture: &mut Capture<'_>,
) {
    let mut out_buf = vec![0u8; 8192];
    let mut err_buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf), if stdout.is_some() => match read {
                Ok(n) if n > 0 => capture.feed(Stream::Stdout, &out_buf[..n]),
                _ => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf), if stderr.is_some() => match read {
                Ok(n) if n > 0 => capture.feed(Stream::Stderr, &err_buf[..n]),
                _ => stderr = None,
            },
            else => break,
        }
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match reader {
        Some(reader) => reader.read(buf).await,
        None => Ok(0),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// The line being assembled from one pipe.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    /// More bytes than [`MAX_LINE`] arrived; they were dropped.
    cut: bool,
}

/// Splits a hook's output into lines and logs them, within the caps.
struct Capture<'a> {
    name: &'a str,
    stdout: Partial,
    stderr: Partial,
    /// Bytes logged so far.
    logged: usize,
    /// [`MAX_OUTPUT`] was reached; said once, nothing more is logged.
    truncated: bool,
    tail: VecDeque<String>,
}

impl<'a> Capture<'a> {
    fn new(name: &'a str) -> Self {
        Capture {
            name,
            stdout: Partial::default(),
            stderr: Partial::default(),
            logged: 0,
            truncated: false,
            tail: VecDeque::with_capacity(STDERR_TAIL + 1),
        }
    }

    fn partial(&mut self, stream: Stream) -> &mut Partial {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    fn feed(&mut self, stream: Stream, mut data: &[u8]) {
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            self.append(stream, &data[..newline]);
            self.end_line(stream);
            data = &data[newline + 1..];
        }
        self.append(stream, data);
    }

    fn append(&mut self, stream: Stream, part: &[u8]) {
        let partial = self.partial(stream);
        let room = MAX_LINE.saturating_sub(partial.bytes.len());
        if part.len() > room {
            partial.cut = true;
        }
        partial
            .bytes
            .extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self, stream: Stream) {
        let partial = self.partial(stream);
        let bytes = std::mem::take(&mut partial.bytes);
        let cut = std::mem::replace(&mut partial.cut, false);
        self.emit(stream, &bytes, cut);
    }

    fn emit(&mut self, stream: Stream, bytes: &[u8], cut: bool) {
        let bytes = if cut {
            without_split_char(bytes)
        } else {
            bytes
        };
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        let line = if cut {
            format!("{text}{CUT_MARKER}")
        } else {
            text.to_string()
        };
        if !self.truncated && self.logged + line.len() > MAX_OUTPUT {
            self.truncated = true;
            tracing::warn!(
                hook = %self.name,
                "hook output exceeds {} KiB; the rest is not logged",
                MAX_OUTPUT / 1024
            );
        }
        if !self.truncated {
            self.logged += line.len();
            match stream {
                Stream::Stdout => tracing::info!(hook = %self.name, "{line}"),
                Stream::Stderr => tracing::warn!(hook = %self.name, "{line}"),
            }
        }
        if stream == Stream::Stderr {
            // Kept even past the cap: the last words matter most.
            if self.tail.len() == STDERR_TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
    }

    /// Logs unterminated last lines; returns the stderr tail.
    fn finish(mut self) -> Vec<String> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let partial = self.partial(stream);
            if !partial.bytes.is_empty() || partial.cut {
                self.end_line(stream);
            }
        }
        self.tail.into()
    }
}

/// `bytes` without a UTF-8 sequence cut off at its end.
fn without_split_char(bytes: &[u8]) -> &[u8] {
    let start = bytes.len().saturating_sub(3);
    for at in (start..bytes.len()).rev() {
        let byte = bytes[at];
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte: look further back
        }
        let needed = match byte {
            0xF8.. => 1, // never valid: left for the lossy conversion
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if bytes.len() - at < needed {
            &bytes[..at]
        } else {
            bytes
        };
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::{Arc, Mutex};

    /// Writes an executable `#!/bin/sh` hook.
    fn hook(dir: &Path, name: &str, body: &str) -> PathBuf {
        file(dir, name, &format!("#!/bin/sh\n{body}\n"), 0o755)
    }

    fn file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn settings(dir: &Path) -> HookSettings {
        HookSettings {
            dir: dir.to_path_buf(),
            ..HookSettings::default()
        }
    }

    fn env() -> Vec<(String, String)> {
        [
            ("ORCH_EVENT", "reload"),
            ("ORCH_UNIT", "nftables.service"),
            ("ORCH_TABLE", "orch"),
            ("ORCH_FAMILY", "inet"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn outcomes(results: &[HookResult]) -> Vec<(&str, HookOutcome)> {
        results
            .iter()
            .map(|r| (r.name.as_str(), r.outcome.clone()))
            .collect()
    }

    /// Whether `pid` is gone (or a zombie nobody has reaped yet), waiting up
    /// to 2 s for it.
    fn dead(pid: &str) -> bool {
        let pid: u32 = pid.trim().parse().expect("a pid");
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let state = state
                .as_deref()
                .and_then(|s| s.rsplit_once(") "))
                .map(|(_, rest)| rest);
            match state {
                None => return true,
                Some(rest) if rest.starts_with('Z') || rest.starts_with('X') => return true,
                Some(_) if Instant::now() > until => return false,
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Collects what the runner logs on this thread.
    #[derive(Clone, Default)]
    struct LogBuf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for LogBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LogBuf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
        let logs = LogBuf::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    #[test]
    fn outcome_codes() {
        assert_eq!(HookOutcome::Succeeded.status_code(), 0);
        assert!(HookOutcome::Succeeded.is_success());
        assert_eq!(HookOutcome::Failed { status: 3 }.status_code(), 3);
        assert!(!HookOutcome::Failed { status: 3 }.is_success());
        assert_eq!(HookOutcome::Killed { signal: 15 }.status_code(), 143);
        let timed_out = HookOutcome::TimedOut {
            after: Duration::from_secs(1),
        };
        assert_eq!(timed_out.status_code(), -1);
        assert_eq!(
            timed_out.to_string(),
            "timed out after 1s and was killed with its process group"
        );
        let spawn = HookOutcome::SpawnError {
            message: "x".into(),
        };
        assert_eq!(spawn.status_code(), -2);
    }

    #[test]
    fn per_hook_timeouts() {
        let mut settings = HookSettings::default();
        settings
            .timeouts
            .insert("10-slow".into(), Duration::from_secs(60));
        assert_eq!(settings.timeout_for("10-slow"), Duration::from_secs(60));
        assert_eq!(settings.timeout_for("20-other"), DEFAULT_TIMEOUT);
        assert_eq!(settings.dir, PathBuf::from("/etc/orch/hooks.d"));
    }

    #[test]
    fn environment_is_clean_and_valid() {
        let given = vec![
            ("ORCH_EVENT".to_string(), "start".to_string()),
            ("BAD=NAME".to_string(), "x".to_string()),
            (String::new(), "x".to_string()),
            ("NUL".to_string(), "a\0b".to_string()),
        ];
        let names: Vec<String> = hook_env(&given).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["PATH", "LANG", "ORCH_EVENT"]);
    }

    #[test]
    fn skipped_names_are_not_hooks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        hook(dir, "20-second", "true");
        hook(dir, "10-first", "true");
        for name in [
            ".hidden",
            "30-x~",
            "30-x.dpkg-old",
            "30-x.dpkg-dist",
            "30-x.dpkg-new",
            "30-x.rpmnew",
            "30-x.rpmsave",
            "30-x.orig",
            "30-x.disabled",
        ] {
            hook(dir, name, "exit 1");
        }
        file(dir, "40-not-executable", "#!/bin/sh\nexit 1\n", 0o644);
        std::fs::create_dir(dir.join("50-directory")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = hook(elsewhere.path(), "real", "true");
        symlink(&target, dir.join("15-link")).unwrap();
        symlink(dir.join("missing"), dir.join("60-dangling")).unwrap();
        assert_eq!(
            list_hooks(dir).unwrap(),
            ["10-first", "15-link", "20-second"]
        );
    }

    #[tokio::test]
    async fn missing_directory_has_no_hooks() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("hooks.d");
        assert!(list_hooks(&missing).unwrap().is_empty());
        // A file where the directory should be is an error to list...
        let not_dir = file(tmp.path(), "plain", "", 0o644);
        assert!(list_hooks(&not_dir).is_err());
        // ...but never a failed run.
        assert!(run_hooks(&settings(&missing), &env()).await.is_empty());
        assert!(run_hooks(&settings(&not_dir), &env()).await.is_empty());
    }

    #[tokio::test]
    async fn order_environment_and_surroundings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        std::fs::create_dir(&dir).unwrap();
        let out = tmp.path().to_str().unwrap();
        for name in ["30-c", "10-a", "20-b"] {
            hook(&dir, name, &format!("echo {name} >> {out}/order"));
        }
        hook(
            &dir,
            "15-env",
            &format!(
                "tr '\\0' '\\n' < /proc/$$/environ | sort > {out}/env\n\
                 readlink /proc/$$/fd/0 > {out}/stdin\n\
                 pwd -P > {out}/cwd\n\
                 set -- $(cat /proc/$$/stat)\n\
                 [ \"$5\" = \"$$\" ] && echo own > {out}/pgrp"
            ),
        );
        let results = run_hooks(&settings(&dir), &env()).await;
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["10-a", "15-env", "20-b", "30-c"]);
        assert!(
            results.iter().all(|r| r.outcome.is_success()),
            "{results:?}"
        );
        let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap();
        assert_eq!(read("order"), "10-a\n20-b\n30-c\n");
        assert_eq!(
            read("env"),
            "LANG=C.UTF-8\n\
             ORCH_EVENT=reload\n\
             ORCH_FAMILY=inet\n\
             ORCH_TABLE=orch\n\
             ORCH_UNIT=nftables.service\n\
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        );
        assert_eq!(read("stdin"), "/dev/null\n");
        assert_eq!(read("cwd"), "/\n");
        assert_eq!(read("pgrp"), "own\n");
    }

    #[tokio::test]
    async fn relative_directory_is_resolved() {
        // Tests run in the crate's directory.
        let tmp = tempfile::Builder::new()
            .prefix("hooks-relative")
            .tempdir_in("target")
            .unwrap();
        let relative = Path::new("target").join(tmp.path().file_name().unwrap());
        hook(&relative, "10-ok", "true");
        let results = run_hooks(&settings(&relative), &env()).await;
        assert_eq!(outcomes(&results), [("10-ok", HookOutcome::Succeeded)]);
    }

    #[tokio::test]
    async fn failures_do_not_stop_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let marker = dir.join("ran");
        hook(dir, "10-fails", "echo broken >&2; exit 3");
        hook(dir, "20-signal", "kill -TERM $$");
        hook(dir, "30-runs", &format!("touch {}", marker.display()));
        let results = run_hooks(&settings(dir), &env()).await;
        assert_eq!(
            outcomes(&results),
            [
                ("10-fails", HookOutcome::Failed { status: 3 }),
                ("20-signal", HookOutcome::Killed { signal: 15 }),
                ("30-runs", HookOutcome::Succeeded),
            ]
        );
        assert_eq!(results[0].outcome.status_code(), 3);
        assert_eq!(results[0].stderr_tail, ["broken"]);
        assert_eq!(results[1].outcome.status_code(), 143);
        assert!(marker.exists());
    }

    #[tokio::test]
    async fn not_a_program_is_a_failure_and_the_next_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let garbage: Vec<u8> = (0u8..=255).cycle().skip(1).take(600).collect();
        std::fs::write(dir.join("10-garbage"), garbage).unwrap();
        std::fs::set_permissions(
            dir.join("10-garbage"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        hook(dir, "20-ok", "true");
        let results = run_hooks(&settings(dir), &env()).await;
        assert_eq!(results.len(), 2);
        assert!(
            matches!(
                results[0].outcome,
                HookOutcome::SpawnError { .. } | HookOutcome::Failed { .. }
            ),
            "{:?}",
            results[0].outcome
        );
        assert_ne!(results[0].outcome.status_code(), 0);
        assert_eq!(results[1].outcome, HookOutcome::Succeeded);
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        std::fs::create_dir(&dir).unwrap();
        let pid_file = tmp.path().join("pid");
        hook(
            &dir,
            "10-slow",
            &format!("sleep 1000 &\necho $! > {}\nsleep 1000", pid_file.display()),
        );
        hook(&dir, "20-next", "true");
        let mut settings = settings(&dir);
        settings
            .timeouts
            .insert("10-slow".into(), Duration::from_millis(300));
        let started = Instant::now();
        let results = run_hooks(&settings, &env()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            outcomes(&results),
            [
                (
                    "10-slow",
                    HookOutcome::TimedOut {
                        after: Duration::from_millis(300)
                    }
                ),
                ("20-next", HookOutcome::Succeeded),
            ]
        );
        assert!(results[0].duration >= Duration::from_millis(300));
        assert_eq!(results[0].outcome.status_code(), -1);
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(dead(&pid), "background sleep {pid} survived the timeout");
    }

    #[tokio::test]
    async fn background_child_holding_stdout_does_not_hang() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        std::fs::create_dir(&dir).unwrap();
        let pid_file = tmp.path().join("pid");
        hook(
            &dir,
            "10-forks",
            &format!(
                "sleep 1000 &\necho $! > {}\necho started\nexit 0",
                pid_file.display()
            ),
        );
        let (logs, _guard) = capture_logs();
        let started = Instant::now();
        let results = run_hooks(&settings(&dir), &env()).await;
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
        assert_eq!(outcomes(&results), [("10-forks", HookOutcome::Succeeded)]);
        assert!(results[0].duration < Duration::from_millis(900));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(dead(&pid), "background sleep {pid} was left running");
        let logs = logs.text();
        assert!(logs.contains("started"), "{logs}");
        assert!(
            logs.contains("killed processes the hook left running"),
            "{logs}"
        );
    }

    #[tokio::test]
    async fn output_goes_to_the_log_with_a_stderr_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        hook(
            dir,
            "10-talks",
            "echo 'to stdout'\n\
             printf 'no newline at the end' \n\
             for i in 1 2 3 4 5 6 7; do echo \"complaint $i\" >&2; done\n\
             echo >&2\n\
             printf 'caf\\303\\251 \\377\\n' >&2",
        );
        let (logs, _guard) = capture_logs();
        let results = run_hooks(&settings(dir), &env()).await;
        assert_eq!(results[0].outcome, HookOutcome::Succeeded);
        assert_eq!(
            results[0].stderr_tail,
            [
                "complaint 4",
                "complaint 5",
                "complaint 6",
                "complaint 7",
                "café \u{fffd}"
            ]
        );
        let logs = logs.text();
        let line_of = |text: &str| {
            logs.lines()
                .find(|line| line.contains(text))
                .unwrap_or_else(|| panic!("{text:?} not logged:\n{logs}"))
                .to_string()
        };
        for (text, level) in [
            ("to stdout", "INFO"),
            ("no newline at the end", "INFO"),
            ("complaint 1", "WARN"),
            ("complaint 7", "WARN"),
            ("hook succeeded", "INFO"),
        ] {
            let line = line_of(text);
            assert!(line.contains(level), "{line}");
            assert!(line.contains("hook=10-talks"), "{line}");
        }
    }

    #[tokio::test]
    async fn chatty_hook_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        hook(
            dir,
            "10-chatty",
            "head -c 20000 /dev/zero | tr '\\0' 'x'; echo\n\
             i=0\n\
             while [ $i -lt 5000 ]; do echo \"line $i of a hook that does not know when to stop\"; i=$((i+1)); done\n\
             echo 'last words' >&2",
        );
        let (logs, _guard) = capture_logs();
        let results = run_hooks(&settings(dir), &env()).await;
        assert_eq!(results[0].outcome, HookOutcome::Succeeded);
        assert_eq!(results[0].stderr_tail, ["last words"]);
        let logs = logs.text();
        let longest_x_run = logs.split(|c| c != 'x').map(str::len).max().unwrap_or(0);
        assert_eq!(longest_x_run, MAX_LINE);
        assert!(logs.contains(&format!("{} [...]", "x".repeat(10))));
        let logged_lines = logs.matches("does not know when to stop").count();
        assert!(
            (100..1500).contains(&logged_lines),
            "{logged_lines} lines logged"
        );
        assert_eq!(logs.matches("the rest is not logged").count(), 1);
        assert!(!logs.contains("last words"), "logged past the cap");
    }

    #[test]
    fn split_characters_are_dropped_from_cut_lines() {
        assert_eq!(without_split_char(b"abc"), b"abc");
        assert_eq!(without_split_char("é".as_bytes()), "é".as_bytes());
        assert_eq!(without_split_char(&"é".as_bytes()[..1]), b"");
        assert_eq!(without_split_char(&"a€".as_bytes()[..3]), b"a");
        assert_eq!(without_split_char("a€".as_bytes()), "a€".as_bytes());
        assert_eq!(without_split_char(&"a😀".as_bytes()[..4]), b"a");
        assert_eq!(without_split_char(b"a\xff"), b"a\xff");
    }

    #[test]
    fn example_hooks_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks");
        let examples = ["10-allow-ci-runners.example", "20-whitelist-chain.example"];
        for name in examples {
            let path = dir.join(name);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_ne!(mode & 0o111, 0, "{name} is not executable");
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("#!/bin/sh\n"), "{name}");
            assert!(text.contains("set -eu"), "{name}");
            assert!(text.contains("ORCH_EVENT"), "{name}");
            let installed = name.trim_end_matches(".example");
            assert!(
                text.contains(&format!(
                    "install -m755 hooks/{name} /etc/orch/hooks.d/{installed}"
                )),
                "{name} does not say how to install it"
            );
            let check = std::process::Command::new("sh")
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}
