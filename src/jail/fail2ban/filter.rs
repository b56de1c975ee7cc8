//! A loaded fail2ban filter and what it does with each line, as fail2ban's
//! filter does: cut the date out, keep the last `maxlines` lines, match
//! `prefregex` (its `<F-CONTENT>` replaces the text the failregexes see),
//! try each failregex in order (the first match wins), drop it if an
//! ignoreregex matches, and follow connections across lines by
//! `<F-MLFID>` (`<F-NOFAIL>`, `<F-MLFFORGET>`, `<F-MLFGAINED>`).
//!
//! It must not resolve host names, count failures or ban.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;

use super::backtrack::{BacktrackMatcher, BacktrackOptions, DEFAULT_MATCH_LIMIT, Groups, Search};
use super::dates::DateDetector;
use super::ini::{Config, Options};
use super::reader::{FilterOptions, filter_options};
use super::{Fail2banError, FilterRef, tags};
use crate::jail::line_filter::{LineFilter, LineMatch, LineOutcome};

/// Connections followed at once by `<F-MLFID>`; the oldest is forgotten
/// beyond this.
const MLFID_CACHE_SIZE: usize = 1000;

/// The failure identifier a failregex captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureHost {
    /// A valid address (IPv4-mapped IPv6 becomes IPv4).
    Ip(IpAddr),
    /// A host name or text that is no address (`<DNS>`, `<HOST>` matching
    /// a name, `<F-ID>`): never resolved, never banned.
    Unresolved(String),
}

/// One failure found by a fail2ban filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub host: FailureHost,
    /// The captured text, as fail2ban reports it.
    pub raw_host: String,
    pub user: Option<String>,
    /// Unix seconds from the line's date, if it had one.
    pub time: Option<i64>,
    pub regex_index: usize,
}

/// What fail2ban remembers about one multi-line failure id.
#[derive(Debug, Default)]
struct MlfEntry {
    fields: HashMap<String, String>,
    users: BTreeSet<String>,
    pending: bool,
}

/// A compiled fail2ban filter with its line state.
#[derive(Debug)]
pub struct Fail2banFilter {
    origin: String,
    description: String,
    prefregex: Option<BacktrackMatcher>,
    fail: Vec<BacktrackMatcher>,
    ignore: Vec<BacktrackMatcher>,
    maxlines: usize,
    dates: DateDetector,
    journalmatch: Vec<Vec<String>>,
    match_limit: u32,
    /// Lines (dates cut out) kept for multi-line patterns.
    buffer: Vec<String>,
    mlfid: HashMap<String, MlfEntry>,
    mlfid_order: VecDeque<String>,
    limit_hits: u64,
    unresolved: u64,
    /// The last date read from a line, for lines without one.
    last_time: Option<i64>,
}

fn truthy(fields: &HashMap<String, String>, name: &str) -> bool {
    fields.get(name).is_some_and(|v| !v.is_empty())
}

impl Fail2banFilter {
    /// Loads a reference such as `/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]`.
    pub fn load(reference: &str) -> Result<Fail2banFilter, Fail2banError> {
        let parsed = FilterRef::parse(reference)?;
        Fail2banFilter::load_with(&parsed.path, &parsed.options, reference)
    }

    /// Loads the filter file `path` with jail options `options`; `origin`
    /// names it in errors and in `orch test-filter`.
    pub fn load_with(
        path: &Path,
        options: &[(String, String)],
        origin: &str,
    ) -> Result<Fail2banFilter, Fail2banError> {
        let config = Config::load(path)?;
        let jail: Options = options
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        let values = filter_options(&config, &jail)?;
        Fail2banFilter::from_options(values, origin, &filter_name(path), DEFAULT_MATCH_LIMIT)
    }

    /// Compiles already computed options.
    pub fn from_options(
        options: FilterOptions,
        origin: &str,
        name: &str,
        match_limit: u32,
    ) -> Result<Fail2banFilter, Fail2banError> {
        let use_dns = options.usedns.as_deref() != Some("no");
        let multiline = options.maxlines > 1;
        let compile = |kind: &'static str, index: usize, pattern: &str| {
            let expanded = tags::expand(pattern, use_dns);
            let engine_options = BacktrackOptions {
                multiline,
                caseless: false,
                match_limit,
            };
            BacktrackMatcher::new(&expanded, engine_options).map_err(|e| Fail2banError::Regex {
                origin: origin.to_string(),
                kind,
                index,
                message: e.message,
                pattern: pattern.to_string(),
            })
        };
        if options.failregex.is_empty() {
            return Err(Fail2banError::NoFailRegex {
                origin: origin.to_string(),
            });
        }
        let prefregex = options
            .prefregex
            .as_deref()
            .map(|p| compile("prefregex", 0, p))
            .transpose()?;
        let ids = ["fid", "ip4", "ip6", "dns", "mlfid"];
        let pref_has_id = prefregex
            .as_ref()
            .is_some_and(|p| ids.iter().any(|id| p.has_group(id)));
        let mut fail = Vec::with_capacity(options.failregex.len());
        for (index, pattern) in options.failregex.iter().enumerate() {
            let matcher = compile("failregex", index, pattern)?;
            if !pref_has_id && !ids.iter().any(|id| matcher.has_group(id)) {
                return Err(Fail2banError::NoFailureId {
                    origin: origin.to_string(),
                    index,
                });
            }
            fail.push(matcher);
        }
        let ignore = options
            .ignoreregex
            .iter()
            .enumerate()
            .map(|(index, p)| compile("ignoreregex", index, p))
            .collect::<Result<Vec<_>, _>>()?;
        let dates = DateDetector::new(options.datepattern.as_deref())?;
        let description = format!(
            "fail2ban filter {name}; maxlines {}; dates: {}",
            options.maxlines,
            dates.description()
        );
        Ok(Fail2banFilter {
            origin: origin.to_string(),
            description,
            prefregex,
            fail,
            ignore,
            maxlines: options.maxlines,
            dates,
            journalmatch: options.journalmatch,
            match_limit,
            buffer: Vec::new(),
            mlfid: HashMap::new(),
            mlfid_order: VecDeque::new(),
            limit_hits: 0,
            unresolved: 0,
            last_time: None,
        })
    }

    /// The `journalmatch` lines split into words.
    pub fn journal_match_words(&self) -> &[Vec<String>] {
        &self.journalmatch
    }

    /// How many failregexes the filter has.
    pub fn failregex_count(&self) -> usize {
        self.fail.len()
    }

    /// Completes dates without a year relative to `now` (Unix seconds)
    /// instead of the wall clock, as when replaying an old log.
    pub fn set_now(&mut self, now: Option<i64>) {
        self.dates.set_now(now);
    }

    /// Searches that stopped at the match limit so far.
    pub fn limit_hits(&self) -> u64 {
        self.limit_hits
    }

    /// Failures so far whose host was not an address.
    pub fn unresolved(&self) -> u64 {
        self.unresolved
    }

    fn search<'a>(
        limit_hits: &mut u64,
        matcher: &'a BacktrackMatcher,
        text: &'a str,
    ) -> Option<Groups<'a>> {
        match matcher.search(text) {
            Search::Match(groups) => Some(groups),
            Search::NoMatch => None,
            Search::LimitHit => {
                *limit_hits += 1;
                None
            }
        }
    }

    /// Classifies one line and returns the failures it completes. The
    /// line's date is found by the filter's date templates and cut out.
    ///
    /// A line without a date (or with an empty one, for templates where the
    /// date is optional) takes the last date seen, if that is less than a
    /// minute old, as fail2ban does for continuation lines.
    pub fn process(&mut self, line: &str) -> (LineOutcome, Vec<Failure>) {
        let found = self.dates.find(line);
        let time = match found.and_then(|date| date.time) {
            Some(time) => {
                self.last_time = Some(time);
                Some(time)
            }
            None => self.last_time.filter(|&last| last > self.dates.now() - 60),
        };
        match found {
            Some(date) => {
                let mut cut = String::with_capacity(line.len());
                cut.push_str(&line[..date.start]);
                cut.push_str(&line[date.end..]);
                self.process_text(cut, time)
            }
            None => self.process_text(line.to_string(), time),
        }
    }

    /// Like [`Fail2banFilter::process`] for a line whose time is already
    /// known (a journal entry's `MESSAGE`): no date is looked for.
    pub fn process_with_time(
        &mut self,
        line: &str,
        time: Option<i64>,
    ) -> (LineOutcome, Vec<Failure>) {
        self.process_text(line.to_string(), time)
    }

    fn process_text(&mut self, text: String, time: Option<i64>) -> (LineOutcome, Vec<Failure>) {
        if self.maxlines > 1 {
            self.buffer.push(text);
            let excess = self.buffer.len().saturating_sub(self.maxlines);
            self.buffer.drain(..excess);
        } else {
            self.buffer = vec![text];
        }
        let whole = join_lines(&self.buffer);

        // Few ignoreregexes: check them once up front, as fail2ban does.
        if !self.ignore.is_empty() && self.ignore.len() + 2 < self.fail.len() {
            let limit_hits = &mut self.limit_hits;
            if self
                .ignore
                .iter()
                .any(|m| Self::search(limit_hits, m, &whole).is_some())
            {
                return (LineOutcome::Ignored, Vec::new());
            }
        }

        let mut pre: HashMap<String, String> = HashMap::new();
        let mut work_buf = whole;
        if let Some(prefregex) = &self.prefregex {
            let Some(groups) = Self::search(&mut self.limit_hits, prefregex, &work_buf) else {
                return (LineOutcome::Missed, Vec::new());
            };
            pre = fields(&groups);
            if let Some(content) = pre.remove("content")
                && !content.is_empty()
            {
                self.buffer = vec![content];
                work_buf = join_lines(&self.buffer);
            }
        }

        for index in 0..self.fail.len() {
            let matcher = &self.fail[index];
            let Some(groups) = Self::search(&mut self.limit_hits, matcher, &work_buf) else {
                continue;
            };
            let mut fail = fields(&groups);
            if !truthy(&fail, "user")
                && let Some(alt) = fail.get("alt_user").filter(|v| !v.is_empty()).cloned()
            {
                fail.insert("user".to_string(), alt);
            }
            let (matched, unmatched) = if self.maxlines > 1 {
                split_matched(&self.buffer, &work_buf, &groups)
            } else {
                (self.buffer.clone(), Vec::new())
            };
            if !self.ignore.is_empty() {
                let ignore_buf = if self.maxlines > 1 {
                    join_lines(&matched)
                } else {
                    work_buf.clone()
                };
                let limit_hits = &mut self.limit_hits;
                if self
                    .ignore
                    .iter()
                    .any(|m| Self::search(limit_hits, m, &ignore_buf).is_some())
                {
                    if self.maxlines > 1 {
                        self.buffer = unmatched;
                    }
                    return (LineOutcome::Ignored, Vec::new());
                }
            }
            if self.maxlines > 1 {
                self.buffer = unmatched;
            }
            if !pre.is_empty() {
                let mut merged = pre.clone();
                merged.extend(fail);
                fail = merged;
            }
            let mlfid = fail.get("mlfid").cloned();
            if let Some(mlfid) = &mlfid {
                fail = self.merge_failure(mlfid, fail);
            }
            // <F-NOFAIL>: the line is known but is no failure (with or
            // without a multi-line id).
            if truthy(&fail, "nofail") {
                return (LineOutcome::Matched, Vec::new());
            }
            let host = ["ip4", "ip6", "dns", "fid"]
                .iter()
                .find_map(|name| fail.get(*name).cloned());
            let Some(raw_host) = host else {
                if let Some(mlfid) = &mlfid
                    && let Some(entry) = self.mlfid.get_mut(mlfid)
                {
                    entry.pending = true;
                }
                return (LineOutcome::Matched, Vec::new());
            };
            let host = match raw_host.parse::<IpAddr>() {
                Ok(ip) => FailureHost::Ip(ip.to_canonical()),
                _ => FailureHost::Unresolved(raw_host.clone()),
            };
            if matches!(host, FailureHost::Unresolved(_)) {
                self.unresolved += 1;
            }
            let failure = Failure {
                host,
                raw_host,
                user: fail.get("user").cloned(),
                time,
                regex_index: index,
            };
            return (LineOutcome::Matched, vec![failure]);
        }
        (LineOutcome::Missed, Vec::new())
    }

    /// Merges a match into what is known about its multi-line id; returns
    /// the merged fields (`nofail` set when this line is no failure).
    fn merge_failure(
        &mut self,
        mlfid: &str,
        mut fail: HashMap<String, String>,
    ) -> HashMap<String, String> {
        let gained = truthy(&fail, "mlfgained");
        if gained && !truthy(&fail, "nofail") {
            let value = fail.get("mlfgained").cloned().unwrap_or_default();
            fail.insert("nofail".to_string(), value);
        }
        let forget = fail.remove("mlfforget").is_some_and(|v| !v.is_empty());
        let user = fail.get("user").filter(|u| !u.is_empty()).cloned();
        let (mut merged, users, pending) = if let Some(entry) = self.mlfid.get_mut(mlfid) {
            if let Some(user) = user {
                entry.users.insert(user);
            }
            entry.fields.remove("nofail");
            entry.fields.remove("mlfgained");
            if gained {
                entry.pending = false;
            }
            entry.fields.extend(fail);
            let pending = std::mem::take(&mut entry.pending);
            let result = (entry.fields.clone(), entry.users.len(), pending);
            if forget {
                self.mlfid.remove(mlfid);
            }
            result
        } else {
            let users = usize::from(user.is_some());
            if !forget {
                let entry = MlfEntry {
                    fields: fail.clone(),
                    users: user.into_iter().collect(),
                    pending: false,
                };
                self.remember(mlfid, entry);
            }
            (fail, users, false)
        };
        if pending || users > 1 {
            merged.remove("nofail");
            merged.remove("mlfgained");
            if let Some(entry) = self.mlfid.get_mut(mlfid) {
                entry.fields.remove("nofail");
                entry.fields.remove("mlfgained");
            }
        }
        merged
    }

    fn remember(&mut self, mlfid: &str, entry: MlfEntry) {
        if self.mlfid.len() >= MLFID_CACHE_SIZE {
            while let Some(oldest) = self.mlfid_order.pop_front() {
                if self.mlfid.remove(&oldest).is_some() {
                    break;
                }
            }
        }
        self.mlfid.insert(mlfid.to_string(), entry);
        self.mlfid_order.push_back(mlfid.to_string());
        if self.mlfid_order.len() > 4 * MLFID_CACHE_SIZE {
            let live = &self.mlfid;
            self.mlfid_order.retain(|id| live.contains_key(id));
        }
    }
}

/// `sshd` for `/etc/fail2ban/filter.d/sshd.conf`.
pub fn filter_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Lines joined as fail2ban's buffer text: each followed by `\n`.
fn join_lines(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The named groups that took part in a match.
fn fields(groups: &Groups<'_>) -> HashMap<String, String> {
    groups
        .named()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}

/// Splits the buffer into the lines the match covered (minus those its
/// `<SKIPLINES>` skipped) and the rest.
fn split_matched(lines: &[String], text: &str, groups: &Groups<'_>) -> (Vec<String>, Vec<String>) {
    let (start, end) = groups.span();
    let bytes = text.as_bytes();
    let first_line_start = bytes[..(start + 1).min(bytes.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last_line_end = bytes
        .get(end.saturating_sub(1)..)
        .and_then(|tail| tail.iter().position(|&b| b == b'\n'))
        .map_or(bytes.len(), |i| end.saturating_sub(1) + i + 1);
    let count = |upto: usize| {
        bytes[..upto.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    };
    let (first, last) = (
        count(first_line_start).min(lines.len()),
        count(last_line_end).min(lines.len()),
    );
    let mut matched: Vec<String> = lines[first..last.max(first)].to_vec();
    let mut unmatched: Vec<String> = lines[..first].to_vec();
    let skipped: Vec<String> = groups
        .named()
        .filter(|(name, _)| name.starts_with("skiplines"))
        .flat_map(|(_, text)| text.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut from = 0;
    for line in skipped {
        if let Some(pos) = matched[from.min(matched.len())..]
            .iter()
            .position(|m| *m == line)
        {
            unmatched.push(matched.remove(from + pos));
            from += pos;
        }
    }
    unmatched.extend(lines[last.max(first)..].iter().cloned());
    (matched, unmatched)
}

impl LineFilter for Fail2banFilter {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn engine(&self) -> String {
        let all_jit = self
            .fail
            .iter()
            .chain(&self.ignore)
            .chain(&self.prefregex)
            .all(BacktrackMatcher::is_jit);
        super::backtrack::engine_description(all_jit, self.match_limit)
    }

    fn regex_count(&self) -> usize {
        self.fail.len()
    }

    fn limit_hits(&self) -> u64 {
        self.limit_hits
    }

    /// The `journalmatch` lines joined with `+` (OR), as journalctl takes them.
    fn journal_matches(&self) -> Vec<String> {
        let mut args = Vec::new();
        for words in &self.journalmatch {
            if !args.is_empty() {
                args.push("+".to_string());
            }
            args.extend(words.iter().cloned());
        }
        args
    }

    /// Failures whose host is no address are not returned (they cannot be
    /// banned); the line still counts as matched.
    fn feed(&mut self, line: &str, found: &mut Vec<LineMatch>) -> LineOutcome {
        let (outcome, failures) = self.process(line);
        for failure in failures {
            if let FailureHost::Ip(host) = failure.host {
                found.push(LineMatch {
                    host,
                    user: failure.user,
                    time: failure.time,
                    regex_index: failure.regex_index,
                });
            }
        }
        outcome
    }
}
