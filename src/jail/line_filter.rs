//! The interface between log sources and filters: whatever the filter kind
//! (a native TOML filter, or a fail2ban `.conf` filter run by another
//! engine), a jail and `orch test-filter` feed it lines one at a time and get
//! back the failures those lines complete.
//!
//! Filters are stateful (`&mut self`) because fail2ban filters may be
//! multi-line (`maxlines`, `<F-MLFID>`): a line can complete a failure
//! whose address appeared on an earlier line, or a later line can cancel it
//! (`<F-NOFAIL>`). Native filters are stateless and just ignore that.
//!
//! This is also where the two pattern engines meet, and the only place:
//! native filters run on the `regex` crate (linear in the line, no ReDoS,
//! never a limit hit; see [`super::filter`]), fail2ban filters on PCRE2
//! bounded by a match limit ([`super::fail2ban::backtrack`]), whose hits
//! [`LineFilter::limit_hits`] reports and [`LineFilter::engine`] names.
//! There is no per-pattern matcher trait below this one: the engines are
//! never interchangeable (each filter format's syntax picks its engine),
//! native filters match all failregexes at once and locate groups with
//! engine-specific fast paths, and fail2ban filters need every named group,
//! the match span and the limit outcome; a trait both could implement would
//! carry none of what either uses.
//!
//! A filter must not ban, count failures or read files: it only classifies
//! the lines it is given.

use std::fmt;
use std::net::IpAddr;

/// One failure found by a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMatch {
    /// The offending address, validated and normalised (IPv4-mapped IPv6
    /// becomes IPv4).
    pub host: IpAddr,
    /// The user name the pattern captured, if any.
    pub user: Option<String>,
    /// When the failure happened, Unix seconds, if the filter found a date
    /// in the line. `None`: the caller uses the arrival time.
    pub time: Option<i64>,
    /// Which failregex matched (index into the filter's list).
    pub regex_index: usize,
}

/// What a filter made of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// A failregex matched; the failures it completes were pushed to the
    /// output (possibly none yet, for a multi-line filter still waiting).
    Matched,
    /// A failregex matched but an ignoreregex did too.
    Ignored,
    /// No failregex matched.
    Missed,
}

/// A filter as a jail and `orch test-filter` use it.
pub trait LineFilter: fmt::Debug + Send {
    /// Where the filter came from: `builtin:sshd`, a file path, or a
    /// fail2ban reference such as `/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]`.
    fn origin(&self) -> &str;

    /// A one-line description, possibly empty.
    fn description(&self) -> &str;

    /// The engine and its guarantees, for `orch test-filter`: for example
    /// "regex (linear time)".
    fn engine(&self) -> String;

    /// How many failregexes the filter has.
    fn regex_count(&self) -> usize;

    /// Classifies one line (without its trailing newline) and appends the
    /// failures it completes to `found`.
    fn feed(&mut self, line: &str, found: &mut Vec<LineMatch>) -> LineOutcome;

    /// Searches stopped at the engine's match limit so far (each line
    /// concerned then counted as not matched); 0 for engines without a
    /// limit. Read by a jail about once a second for `orch status`.
    fn limit_hits(&self) -> u64 {
        0
    }

    /// journalctl match arguments (`FIELD=value`, `+` for OR) that select
    /// the entries this filter is written for, used by a journal jail that
    /// names none itself. Empty when the filter does not say.
    fn journal_matches(&self) -> Vec<String> {
        Vec::new()
    }

    /// The filter as a [`LineClassifier`] when each line is classified on
    /// its own (no multi-line state), so a caller may classify many lines
    /// at once on several threads; `None` for stateful filters.
    fn independent_lines(&self) -> Option<&dyn LineClassifier> {
        None
    }
}

/// A filter that keeps no state between lines, shareable across threads.
pub trait LineClassifier: Sync {
    /// A classifier for one thread's lines, with scratch space of its own
    /// (no locking per line); it works as [`LineFilter::feed`].
    fn for_thread(&self) -> ThreadClassifier<'_>;
}

/// What [`LineClassifier::for_thread`] hands a thread.
pub type ThreadClassifier<'a> =
    Box<dyn FnMut(&str, &mut Vec<LineMatch>) -> LineOutcome + Send + 'a>;
