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

use super::line_filter::{LineClassifier, LineFilter, LineMatch, LineOutcome};
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
    /// Resident memory at the end of a run over a mapped file, whose pages
    /// are file pages: reported apart, as they are the log, not orch's.
    pub mapped_run_memory: Option<crate::memory::Resident>,
}

/// Runs `filter` over every line of `log`. With `json`, each match is
/// written to `out` as one JSON object per line.
///
/// A regular file is mapped into memory rather than copied in; a filter
/// whose lines are independent (every native filter) is then run on
/// [`worker_count`] threads, each over its own run of whole lines, and the
/// results are put back in file order. Anything else (a pipe, a multi-line
/// fail2ban filter) is read sequentially.
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
    let file = std::fs::File::open(log).map_err(read_error)?;
    let started = Instant::now();
    let regex_count = filter.regex_count();
    let mapped = map_regular_file(&file).map_err(read_error)?;
    let tally = match (&mapped, filter.independent_lines()) {
        (Some(bytes), Some(classifier)) => run_parallel(classifier, bytes, regex_count, json),
        _ => run_sequential(filter, file, regex_count, json).map_err(read_error)?,
    };
    let mut summary = tally.summary;
    summary.seconds = started.elapsed().as_secs_f64();
    if mapped.is_some() {
        summary.mapped_run_memory = crate::memory::resident_now();
    }
    for (line_number, failure) in &tally.failures {
        writeln!(out, "{}", failure_json(*line_number, failure)).map_err(read_error)?;
    }
    Ok(summary)
}

/// The file's bytes, mapped read-only, when it is a non-empty regular
/// file; `None` for pipes and the like.
///
/// The map is a snapshot of the file's length when opened. A file
/// truncated while being read (copytruncate rotation at that moment)
/// could fault on the lost pages; test-filter is a one-shot diagnostic
/// run, so that rare crash is accepted for not copying the whole file.
fn map_regular_file(file: &std::fs::File) -> std::io::Result<Option<memmap2::Mmap>> {
    let metadata = file.metadata()?;
    if !metadata.is_file() || metadata.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only and private; see the truncation note
    // above for the one way the file can change under it.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Some(map))
}

/// How many threads classify a mapped file: one per CPU, at most 8.
pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8)
}

/// Counts and failures for a run of lines; the failures carry the number
/// of the line that completed them (kept only for `--json`).
#[derive(Default)]
struct Tally {
    summary: Summary,
    failures: Vec<(u64, LineMatch)>,
}

impl Tally {
    fn new(regex_count: usize) -> Tally {
        Tally {
            summary: Summary {
                per_regex: vec![0; regex_count],
                ..Summary::default()
            },
            failures: Vec::new(),
        }
    }

    /// Classifies one raw line (without its newline) with `classify` and
    /// counts the outcome.
    fn line(
        &mut self,
        raw: &[u8],
        json: bool,
        found: &mut Vec<LineMatch>,
        classify: impl FnOnce(&str, &mut Vec<LineMatch>) -> LineOutcome,
    ) {
        // No copy and no conversion unless the line is not valid UTF-8
        // (then it is read lossily).
        let line = match std::str::from_utf8(raw) {
            Ok(line) => Cow::Borrowed(line),
            Err(_) => String::from_utf8_lossy(raw),
        };
        self.text_line(&line, json, found, classify);
    }

    /// [`Tally::line`] for a line known to be UTF-8.
    fn text_line(
        &mut self,
        line: &str,
        json: bool,
        found: &mut Vec<LineMatch>,
        classify: impl FnOnce(&str, &mut Vec<LineMatch>) -> LineOutcome,
    ) {
        self.summary.lines += 1;
        found.clear();
        match classify(line.trim_end_matches('\r'), found) {
            LineOutcome::Matched => {
                self.summary.matched += 1;
                if found.is_empty() {
                    self.summary.no_address += 1;
                }
            }
            LineOutcome::Ignored => self.summary.ignored += 1,
            LineOutcome::Missed => {}
        }
        for failure in found.drain(..) {
            if let Some(hits) = self.summary.per_regex.get_mut(failure.regex_index) {
                *hits += 1;
            }
            if json {
                self.failures.push((self.summary.lines, failure));
            }
        }
    }

    /// Adds a later run of lines: its line numbers continue from ours.
    fn append(&mut self, later: Tally) {
        let offset = self.summary.lines;
        let summary = later.summary;
        self.summary.lines += summary.lines;
        self.summary.matched += summary.matched;
        self.summary.no_address += summary.no_address;
        self.summary.ignored += summary.ignored;
        for (total, hits) in self.summary.per_regex.iter_mut().zip(summary.per_regex) {
            *total += hits;
        }
        self.failures.extend(
            later
                .failures
                .into_iter()
                .map(|(line, failure)| (line + offset, failure)),
        );
    }
}

/// Every line of `bytes`, without newlines; a last line without a newline
/// counts too.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_spans(bytes).map(|span| &bytes[span])
}

/// Where each line of `bytes` is, as [`lines`] cuts them.
fn line_spans(bytes: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |at| start + at);
        let span = start..end;
        start = end + 1;
        Some(span)
    })
}

/// Splits `bytes` into up to `parts` runs of whole lines.
fn split_at_lines(bytes: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut runs = Vec::with_capacity(parts);
    let mut rest = bytes;
    for remaining in (1..=parts).rev() {
        if rest.is_empty() {
            break;
        }
        let target = rest.len() / remaining;
        let cut = if remaining == 1 {
            rest.len()
        } else {
            memchr::memchr(b'\n', &rest[target..]).map_or(rest.len(), |at| target + at + 1)
        };
        let (run, later) = rest.split_at(cut);
        runs.push(run);
        rest = later;
    }
    runs
}

/// Runs per thread: more runs than threads, taken in turn, so a thread
/// that drew easy lines does not sit idle while another finishes.
const RUNS_PER_WORKER: usize = 8;

fn run_parallel(
    classifier: &dyn LineClassifier,
    bytes: &[u8],
    regex_count: usize,
    json: bool,
) -> Tally {
    let workers = worker_count();
    let runs = split_at_lines(bytes, workers * RUNS_PER_WORKER);
    let next_run = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Tally)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (runs, next_run) = (&runs, &next_run);
                scope.spawn(move || {
                    let mut finished = Vec::new();
                    let mut found = Vec::new();
                    let mut classify = classifier.for_thread();
                    loop {
                        let index = next_run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(run) = runs.get(index) else {
                            return finished;
                        };
                        let mut tally = Tally::new(regex_count);
                        // One UTF-8 check for the whole run is cheaper than
                        // one per line; lines cut at '\n' stay valid.
                        let text = std::str::from_utf8(run).ok();
                        for span in line_spans(run) {
                            match text.and_then(|text| text.get(span.clone())) {
                                Some(line) => {
                                    tally.text_line(line, json, &mut found, &mut classify)
                                }
                                None => tally.line(&run[span], json, &mut found, &mut classify),
                            }
                        }
                        finished.push((index, tally));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(finished) => finished,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_by_key(|(index, _)| *index);
    let mut total = Tally::new(regex_count);
    for (_, tally) in done {
        total.append(tally);
    }
    total
}

fn run_sequential(
    filter: &mut dyn LineFilter,
    mut file: std::fs::File,
    regex_count: usize,
    json: bool,
) -> std::io::Result<Tally> {
    let mut tally = Tally::new(regex_count);
    let mut found = Vec::new();
    // Big reads, lines split in place.
    let mut buffer = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            // A line longer than the buffer: make room for it.
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = file.read(&mut buffer[filled..])?;
        let at_end = read == 0;
        filled += read;
        // Whole lines only, unless the file ended without a newline.
        let complete = if at_end {
            filled
        } else {
            memchr::memrchr(b'\n', &buffer[..filled]).map_or(0, |at| at + 1)
        };
        for raw in lines(&buffer[..complete]) {
            tally.line(raw, json, &mut found, |line, found| {
                filter.feed(line, found)
            });
        }
        buffer.copy_within(complete..filled, 0);
        filled -= complete;
        if at_end {
            return Ok(tally);
        }
    }
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
/// The summary as the last line of `--json`: `{"summary": {...}}` (schema
/// in docs/json.md, `test-filter`).
pub fn summary_json(filter: &dyn LineFilter, summary: &Summary) -> serde_json::Value {
    serde_json::json!({
        "summary": {
            "filter": filter.origin(),
            "engine": filter.engine(),
            "lines": summary.lines,
            "matched": summary.matched,
            "no_address": summary.no_address,
            "ignored": summary.ignored,
            "missed": summary.lines.saturating_sub(summary.matched + summary.ignored),
            "per_failregex": summary.per_regex,
            "seconds": summary.seconds,
        }
    })
}

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
    let memory = match summary.mapped_run_memory {
        Some(resident) => format!(
            "; resident {:.1} MB of its own, {:.1} MB file pages (mostly the mapped log, which the kernel can drop)",
            resident.anonymous_kib as f64 / 1024.0,
            resident.file_kib as f64 / 1024.0
        ),
        None => String::new(),
    };
    let _ = writeln!(
        text,
        "speed:    {speed:.0} lines/s ({:.3} s){memory}",
        summary.seconds
    );
    text
}
