//! `orch test-filter FILTER LOG`: runs a filter over a log file and reports
//! what it finds, as fail2ban-regex does, so an admin can check a filter
//! before a jail uses it.
//!
//! It reads the file and prints; it must not ban or talk to the daemon.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use super::line_filter::{LineFilter, LineMatch, LineOutcome};
use super::load::LoadFilterError;

/// Why a filter test could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestFilterError {
    #[error("{0}")]
    Load(#[from] LoadFilterError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Loads FILTER for `orch test-filter` (see [`super::load::load_filter`]).
pub fn load_filter(spec: &str) -> Result<Box<dyn LineFilter>, TestFilterError> {
    Ok(super::load::load_filter(spec)?)
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Summary {
    pub lines: u64,
    pub matched: u64,
    /// Matched lines that gave no address: a host name (never resolved),
    /// or a fail2ban `<F-NOFAIL>` / multi-line line still waiting.
    pub no_address: u64,
    pub ignored: u64,
    pub per_regex: Vec<u64>,
    pub seconds: f64,
}

/// Runs `filter` over every line of `log`. With `json`, each match is
/// written to `out` as one JSON object per line as it is found.
pub fn run(
    filter: &mut dyn LineFilter,
    log: &Path,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<Summary, TestFilterError> {
    let read_error = |source| TestFilterError::Read {
        path: log.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(log).map_err(read_error)?;
    let mut summary = Summary {
        per_regex: vec![0; filter.regex_count()],
        ..Summary::default()
    };
    let started = Instant::now();
    // Big reads, lines split with memchr in place: no copy per line, and no
    // UTF-8 conversion unless a line is not valid UTF-8 (then it is read
    // lossily, as before).
    let mut buffer = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut found: Vec<LineMatch> = Vec::new();
    loop {
        if filled == buffer.len() {
            // A line longer than the buffer: make room for it.
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = file.read(&mut buffer[filled..]).map_err(read_error)?;
        let at_end = read == 0;
        filled += read;
        let mut start = 0;
        while start < filled {
            let end = match memchr::memchr(b'\n', &buffer[start..filled]) {
                Some(offset) => start + offset,
                // The last line has no newline; wait for more, or take it.
                None if at_end => filled,
                None => break,
            };
            let raw = &buffer[start..end];
            start = (end + 1).min(filled);
            summary.lines += 1;
            let line = match std::str::from_utf8(raw) {
                Ok(line) => Cow::Borrowed(line),
                Err(_) => String::from_utf8_lossy(raw),
            };
            found.clear();
            match filter.feed(line.trim_end_matches('\r'), &mut found) {
                LineOutcome::Matched => {
                    summary.matched += 1;
                    if found.is_empty() {
                        summary.no_address += 1;
                    }
                }
                LineOutcome::Ignored => summary.ignored += 1,
                LineOutcome::Missed => {}
            }
            for failure in &found {
                if let Some(hits) = summary.per_regex.get_mut(failure.regex_index) {
                    *hits += 1;
                }
                if json {
                    writeln!(out, "{}", failure_json(summary.lines, failure))
                        .map_err(read_error)?;
                }
            }
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        if at_end {
            break;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// One `--json` line: the failure and the number of the line that
/// completed it.
fn failure_json(line_number: u64, failure: &LineMatch) -> serde_json::Value {
    let time = failure
        .time
        .and_then(|secs| u64::try_from(secs).ok())
        .map(crate::timefmt::rfc3339);
    serde_json::json!({
        "line": line_number,
        "host": failure.host.to_string(),
        "user": failure.user,
        "time": time,
    })
}

/// The human summary: lines, matched, ignored, missed, hits per failregex,
/// speed.
pub fn describe(filter: &dyn LineFilter, summary: &Summary) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "filter:   {} ({})",
        filter.origin(),
        filter.description()
    );
    let _ = writeln!(text, "engine:   {}", filter.engine());
    let _ = writeln!(text, "lines:    {}", summary.lines);
    let _ = writeln!(text, "matched:  {}", summary.matched);
    if summary.no_address > 0 {
        let _ = writeln!(
            text,
            "  no address: {} (host names are never resolved; no-failure or waiting multi-line lines)",
            summary.no_address
        );
    }
    let _ = writeln!(text, "ignored:  {}", summary.ignored);
    let _ = writeln!(
        text,
        "missed:   {}",
        summary.lines - summary.matched - summary.ignored
    );
    for (index, hits) in summary.per_regex.iter().enumerate() {
        let _ = writeln!(text, "  failregex[{index}]: {hits}");
    }
    let speed = if summary.seconds > 0.0 {
        summary.lines as f64 / summary.seconds
    } else {
        0.0
    };
    let _ = writeln!(
        text,
        "speed:    {speed:.0} lines/s ({:.3} s)",
        summary.seconds
    );
    text
}
