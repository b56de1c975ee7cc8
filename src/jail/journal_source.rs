//! Following the systemd journal for a jail, through `journalctl
//! --output=json --after-cursor`, resuming after a saved cursor.
//!
//! Each entry becomes a syslog-style line, `Mmm dd hh:mm:ss HOST IDENT[PID]:
//! MESSAGE` (UTC), so native filters and fail2ban filters read journal
//! entries exactly as they read syslog files; the entry's own timestamp
//! (`__REALTIME_TIMESTAMP`) travels alongside and is what failures are
//! counted by. Line breaks inside a message become spaces, so one entry is
//! always one line.
//!
//! A new jail (no saved cursor) starts at the end of the journal; one with
//! a cursor gets every entry after it, so a restart loses nothing. This
//! module reads; it must not interpret messages.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::timefmt::civil_from_days;

/// The program that reads the journal.
const JOURNALCTL: &str = "journalctl";

/// One journal entry, ready for a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `Mmm dd hh:mm:ss HOST IDENT[PID]: MESSAGE`.
    pub line: String,
    /// Unix seconds, from `__REALTIME_TIMESTAMP`.
    pub time: i64,
    /// `__CURSOR`: where to resume after this entry.
    pub cursor: String,
    /// The message was not UTF-8: invalid bytes were replaced by U+FFFD.
    pub undecodable: bool,
}

/// Why the reader thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the journal reader: {0}")]
pub struct JournalError(#[from] std::io::Error);

/// Reads the journal in the background; stopped when dropped.
#[derive(Debug)]
pub struct JournalFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the journal is read for new entries.
pub const JOURNAL_POLL: Duration = Duration::from_millis(500);

impl JournalFollower {
    /// Starts reading entries that match `matches` (journalctl syntax:
    /// `FIELD=value`, `+` for OR) after `cursor`, or from the end of the
    /// journal without one. `on_entry` runs on the reader thread for every
    /// entry, in order; `on_status` reports what the reader is doing, and
    /// errors (it keeps retrying).
    ///
    /// Why polling instead of `journalctl --follow`: a follower that was
    /// started early can stop seeing new entries (seen under systemd 252
    /// in a booted container; one started later saw them). A fresh
    /// `journalctl --after-cursor` each time cannot get stuck that way, and
    /// costs one short process per [`JOURNAL_POLL`] while entries keep
    /// their own timestamps.
    pub fn start(
        matches: &[String],
        cursor: Option<&str>,
        mut on_entry: impl FnMut(JournalEntry) + Send + 'static,
        on_status: impl Fn(String) + Send + 'static,
    ) -> Result<JournalFollower, JournalError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (matches, hardened) = crate::jail::journal_trust::unforgeable_matches(matches);
        if let Some(warning) = crate::jail::journal_trust::warning(&hardened) {
            tracing::warn!("{warning}");
        }
        let started_at = crate::timefmt::now_unix();
        let mut cursor = cursor.map(str::to_string);
        let thread = std::thread::Builder::new()
            .name("orch-journal".into())
            .spawn(move || {
                let mut healthy = None;
                while !stopped.load(Ordering::Relaxed) {
                    let after = cursor.clone();
                    let mut deliver = |entry: JournalEntry| {
                        cursor = Some(entry.cursor.clone());
                        on_entry(entry);
                    };
                    match read_after(
                        &matches,
                        after.as_deref(),
                        started_at,
                        &stopped,
                        &mut deliver,
                    ) {
                        Ok(()) => {
                            if healthy != Some(true) {
                                on_status(format!("following the journal {}", matches.join(" ")));
                                healthy = Some(true);
                            }
                        }
                        Err(err) => {
                            if healthy != Some(false) {
                                tracing::warn!("reading the journal: {err}");
                                healthy = Some(false);
                            }
                            on_status(err);
                        }
                    }
                    std::thread::sleep(JOURNAL_POLL);
                }
            })?;
        Ok(JournalFollower {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for JournalFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `journalctl --output=json` run: hands each entry after `cursor`
/// (or, without a cursor, since `since`, Unix seconds) to `on_entry` as
/// it is read, so a long backlog streams through instead of piling up.
fn read_after(
    matches: &[String],
    cursor: Option<&str>,
    since: u64,
    stop: &AtomicBool,
    on_entry: &mut dyn FnMut(JournalEntry),
) -> Result<(), String> {
    let mut command = Command::new(JOURNALCTL);
    command.args(["--output=json", "--no-pager", "--quiet"]);
    match cursor {
        Some(cursor) => command.arg(format!("--after-cursor={cursor}")),
        None => command.arg(format!("--since=@{since}")),
    };
    command
        .args(matches)
        // journalctl is not part of orch's service protocol.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::child::only_standard_fds(&mut command);
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot run {JOURNALCTL}: {err}"))?;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        let mut line = Vec::with_capacity(4096);
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = child.kill();
                break;
            }
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(entry) = parse_entry(&line) {
                        on_entry(entry);
                    }
                }
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("{JOURNALCTL}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{JOURNALCTL} failed ({}): {}",
            output.status,
            stderr.lines().last().unwrap_or("no message")
        ))
    }
}

/// Turns one line of `journalctl --output=json` into an entry; `None` for
/// anything that is not an entry with a message, time and cursor.
pub fn parse_entry(json: &[u8]) -> Option<JournalEntry> {
    let fields: serde_json::Map<String, Value> = serde_json::from_slice(json).ok()?;
    let text = |name: &str| field_text(fields.get(name)?).map(|(text, _)| text);
    let (message, undecodable) = field_text(fields.get("MESSAGE")?)?;
    let micros: i64 = text("__REALTIME_TIMESTAMP")?.parse().ok()?;
    let cursor = text("__CURSOR")?;
    let time = micros.div_euclid(1_000_000);
    let host = text("_HOSTNAME").unwrap_or_else(|| "localhost".to_string());
    let ident = text("SYSLOG_IDENTIFIER")
        .or_else(|| text("_COMM"))
        .unwrap_or_else(|| "unknown".to_string());
    let tag = match text("_PID").or_else(|| text("SYSLOG_PID")) {
        Some(pid) => format!("{ident}[{pid}]"),
        None => ident,
    };
    let message: String = message
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
        cursor,
        undecodable,
    })
}

/// A field's text, and whether bytes in it were not UTF-8 (replaced by
/// U+FFFD): journalctl writes such values, and those with control
/// characters, as byte arrays.
fn field_text(value: &Value) -> Option<(String, bool)> {
    match value {
        Value::String(text) => Some((text.clone(), false)),
        Value::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|item| item.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            let bytes = bytes?;
            match String::from_utf8(bytes) {
                Ok(text) => Some((text, false)),
                Err(err) => Some((String::from_utf8_lossy(err.as_bytes()).into_owned(), true)),
            }
        }
        _ => None,
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

    #[test]
    fn entries_become_syslog_lines_with_the_journal_time() {
        let json = br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1764064800123456","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":"sshd-session","_PID":"4242","MESSAGE":"Invalid user x from 192.0.2.7 port 22"}"#;
        let entry = parse_entry(json).unwrap();
        assert_eq!(entry.time, 1_764_064_800);
        assert_eq!(entry.cursor, "s=1;i=2");
        assert_eq!(
            entry.line,
            "Nov 25 10:00:00 web1 sshd-session[4242]: Invalid user x from 192.0.2.7 port 22"
        );
    }

    #[test]
    fn byte_array_messages_and_line_breaks_are_handled() {
        let json = br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"0","MESSAGE":[104,105,10,255]}"#;
        let entry = parse_entry(json).unwrap();
        assert_eq!(entry.line, "Jan  1 00:00:00 localhost unknown: hi \u{fffd}");
        assert!(entry.undecodable);
        // Control characters alone come as arrays too, and are UTF-8.
        let json = br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"0","MESSAGE":[104,105,27]}"#;
        assert!(!parse_entry(json).unwrap().undecodable);
    }

    #[test]
    fn non_entries_are_skipped() {
        assert!(parse_entry(b"not json").is_none());
        assert!(parse_entry(br#"{"MESSAGE":"no cursor"}"#).is_none());
    }
}
