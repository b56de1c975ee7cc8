//! Native jail filters: a TOML file of patterns that recognise failures in
//! log lines and capture the offending address.
//!
//! ```toml
//! description = "OpenSSH authentication failures"
//! prefilter = [" port "]     # literals; a line containing none is skipped
//! failregex = ['^Invalid user <USER> from <HOST> port \d+$']
//! ignoreregex = []
//! journalmatch = ["_SYSTEMD_UNIT=ssh.service"]   # for journal jails without matches
//! extends = "sshd"           # optional: a built-in's lists come first
//! ```
//!
//! Patterns use the `regex` crate's syntax (linear time, no look-around),
//! plus three tags:
//! - `<HOST>` and `<ADDR>`: a group (`host`, `addr`) matching an IPv4 or IPv6
//!   address, never a host name. Every failregex needs exactly one of them.
//! - `<USER>`: a group `user` matching any text, shortest first (`.*?`).
//!
//! Patterns are matched against the log *message*: a leading syslog prefix
//! (`Nov 25 10:00:00 host sshd[123]: ` or an RFC 3339 timestamp instead of
//! the BSD one) is stripped first, so the same filter works on syslog files
//! and on bare journal `MESSAGE` fields. `ignoreregex` is matched against the
//! message too, and only once a failregex matched.
//!
//! Hostile text: whatever an attacker controls (a user name, a client
//! banner) must not be able to make a pattern capture a different address.
//! Where the attacker's text comes *before* the address, anchor the pattern
//! at the end of the message (`port \d+$`): the address captured is then the
//! one the daemon appended last. Where it comes *after*, anchor at the start
//! (`^`): the regex engine reports the leftmost match, the daemon's own.
//!
//! Dates: `date = "line"` (the default) takes a matched line's time from
//! the syslog timestamp it starts with (see [`super::date`]; none or an
//! unreadable one gives `None`); `date = "arrival"` always gives `None`, so
//! the caller uses the arrival time. Only matched lines are dated.
//!
//! Speed: the prefilter literals are searched first (SIMD substring search
//! via the regex crate's literal engines). When every failregex is anchored
//! at the start, the literals each pattern's matches start with name the
//! only pattern that can win for a message ([`super::starts`]); that
//! pattern's split DFAs ([`super::extract`]) then check it and find its
//! groups without a pass over the whole message. Otherwise (or when that
//! check cannot tell) a line passing the prefilter is run once
//! through one multi-pattern regex of all failregexes (a lazy DFA: which
//! pattern matches, and where); when several match, the one whose match
//! starts leftmost wins, then the one listed first. Only then are the `host`
//! and `user` groups of that one pattern located, within the matched span:
//! with two more short DFA runs for the usual shapes (see
//! [`super::extract`]), otherwise with the pattern's bounded backtracker,
//! anchored (a match too long for it goes to the pattern compiled alone by
//! the `regex` crate). Scratch memory is pooled, so a line allocates nothing
//! but the user name of a match.
//!
//! Engines: every one above is the `regex` crate's (`regex-automata`) and
//! runs in time linear in the line, so a hostile line cannot stall a jail
//! (no ReDoS), and no line is ever given up on (where one engine cannot
//! answer, such as the backtracker on a long span, the next one does). They
//! are named here directly, not behind a trait: which one runs is a speed
//! choice made per line from the pattern's shape, and fail2ban filters,
//! whose patterns need backtracking, have their own engine in
//! [`super::fail2ban`]. This module must not use a backtracking engine
//! without a linear bound.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;

use regex_automata::nfa::thompson::{WhichCaptures, backtrack};
use regex_automata::util::captures::Captures as Slots;
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input, PatternID, meta};
use serde::Deserialize;

use super::date::LineDates;
use super::extract::{Captures, SplitCaches, SplitExtractor};
use super::line_filter::{LineClassifier, LineFilter, LineMatch, LineOutcome, ThreadClassifier};
use super::starts::{Candidate, StartGuards};

/// Names of the built-in filters, for `builtin` and for listings.
pub fn builtin_names() -> &'static [&'static str] {
    &[
        "sshd",
        "sshd-ddos",
        "sshd-aggressive",
        "nginx-http-auth",
        "nginx-botsearch",
        "postfix",
        "dovecot",
    ]
}

const SSHD_TOML: &str = include_str!("../../filters/sshd.toml");
const NGINX_HTTP_AUTH_TOML: &str = include_str!("../../filters/nginx-http-auth.toml");
const NGINX_BOTSEARCH_TOML: &str = include_str!("../../filters/nginx-botsearch.toml");
const POSTFIX_TOML: &str = include_str!("../../filters/postfix.toml");
const DOVECOT_TOML: &str = include_str!("../../filters/dovecot.toml");
const SSHD_DDOS_TOML: &str = include_str!("../../filters/sshd-ddos.toml");
const SSHD_AGGRESSIVE_TOML: &str = include_str!("../../filters/sshd-aggressive.toml");

/// How many filters an `extends` chain may go through.
const MAX_EXTENDS: usize = 4;

/// The TOML text of a built-in filter.
fn builtin_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "sshd" => SSHD_TOML,
        "sshd-ddos" => SSHD_DDOS_TOML,
        "sshd-aggressive" => SSHD_AGGRESSIVE_TOML,
        "nginx-http-auth" => NGINX_HTTP_AUTH_TOML,
        "nginx-botsearch" => NGINX_BOTSEARCH_TOML,
        "postfix" => POSTFIX_TOML,
        "dovecot" => DOVECOT_TOML,
        _ => return None,
    })
}

/// The regex a `<HOST>`/`<ADDR>` tag stands for, without its group: dotted
/// IPv4, or IPv6 (possibly with an embedded IPv4 tail). Loose on purpose:
/// the captured text is validated by a real parser afterwards.
/// Unbounded repetitions rather than `{1,38}`: counted ones multiply the
/// states of the DFA that runs all failregexes at once.
const IP_PATTERN: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]+(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3})?";

/// Why a filter could not be loaded. Every variant names where the filter
/// came from (a file path, or `builtin:sshd`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{origin}: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: failregex is empty; a filter needs at least one")]
    NoFailRegex { origin: String },
    #[error("{origin}: prefilter[{index}] is empty")]
    EmptyPrefilter { origin: String, index: usize },
    #[error("{origin}: {kind}[{index}] does not compile: {message}")]
    Regex {
        origin: String,
        kind: &'static str,
        index: usize,
        message: String,
    },
    #[error("{origin}: failregex[{index}] has no <HOST> or <ADDR>")]
    NoHost { origin: String, index: usize },
}

/// A line a failregex matched (and no ignoreregex did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMatch {
    /// The offending address, validated and normalised (IPv4-mapped IPv6
    /// becomes IPv4).
    pub host: IpAddr,
    /// The `<USER>` text, when the pattern has one.
    pub user: Option<String>,
    /// Which failregex matched.
    pub regex_index: usize,
    /// When it happened (Unix seconds), from the line's timestamp with
    /// `date = "line"`; `None` with `date = "arrival"` or when the line has
    /// no readable timestamp.
    pub time: Option<i64>,
}

/// Where a matched line's time comes from (`date = ...` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateSource {
    /// The timestamp the line starts with (syslog BSD or RFC 3339).
    #[default]
    Line,
    /// None: the caller uses the time the line arrived.
    Arrival,
}

/// The file format; unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    prefilter: Vec<String>,
    failregex: Vec<String>,
    #[serde(default)]
    ignoreregex: Vec<String>,
    #[serde(default)]
    date: DateSource,
    /// journalctl matches for a journal jail that names none itself.
    #[serde(default)]
    journalmatch: Vec<String>,
    /// A built-in filter whose lists come first.
    #[serde(default)]
    extends: Option<String>,
}

impl FilterFile {
    /// This file's lists appended to `base`'s. A side without a prefilter
    /// checks every line, so the merged filter has none either.
    fn on_top_of(self, base: FilterFile) -> FilterFile {
        let prefilter = if base.prefilter.is_empty() || self.prefilter.is_empty() {
            Vec::new()
        } else {
            [base.prefilter, self.prefilter].concat()
        };
        FilterFile {
            description: self.description,
            prefilter,
            failregex: [base.failregex, self.failregex].concat(),
            ignoreregex: [base.ignoreregex, self.ignoreregex].concat(),
            date: self.date,
            journalmatch: if self.journalmatch.is_empty() {
                base.journalmatch
            } else {
                self.journalmatch
            },
            extends: None,
        }
    }
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    origin: String,
    description: String,
    /// The prefilter literals (SIMD multi-substring search, no per-thread
    /// state); `None` checks nothing.
    prefilter: Option<aho_corasick::AhoCorasick>,
    /// All failregexes at once: which one matches, and where.
    fail_all: meta::Regex,
    /// When every failregex is anchored at the start: which one alone can
    /// match a message, so only that one is run (see [`super::starts`]).
    starts: Option<StartGuards>,
    /// Per failregex: its capture groups, run on the span `fail_all` found.
    extractors: Vec<Extractor>,
    /// Per failregex, compiled alone: for spans too long for its
    /// backtracker.
    fail: Vec<Failregex>,
    /// `None` when there are no ignoreregexes.
    ignore_set: Option<regex::RegexSet>,
    date: DateSource,
    journalmatch: Vec<String>,
    scratch: ScratchPool,
}

/// One failregex compiled alone by the `regex` crate: it checks the
/// pattern's groups when the filter loads, and finds them when a match is
/// too long for the [`Extractor`]'s backtracker.
#[derive(Debug)]
struct Failregex {
    regex: regex::Regex,
    /// Capture index of the `host` or `addr` group.
    host: Option<usize>,
    /// Capture index of the `user` group.
    user: Option<usize>,
}

impl Failregex {
    /// Compiles `pattern` (tags already expanded). Groups named `host` or
    /// `addr` and `user` are reported by [`Failregex::find`]; a pattern with
    /// both `host` and `addr` is refused, since it would be ambiguous.
    fn new(pattern: &str) -> Result<Failregex, String> {
        let regex = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
        let index_of = |wanted: &str| regex.capture_names().position(|name| name == Some(wanted));
        let (host, addr) = (index_of("host"), index_of("addr"));
        if host.is_some() && addr.is_some() {
            return Err("pattern has both a `host` and an `addr` group".to_string());
        }
        let user = index_of("user");
        Ok(Failregex {
            host: host.or(addr),
            user,
            regex,
        })
    }

    /// The leftmost match's groups, or `None` when the pattern does not
    /// match.
    fn find<'a>(&self, line: &'a str) -> Option<Captures<'a>> {
        let caps = self.regex.captures(line)?;
        let text = |index: Option<usize>| index.and_then(|i| caps.get(i)).map(|m| m.as_str());
        Some(Captures {
            host: text(self.host),
            user: text(self.user),
        })
    }
}

/// One failregex's capture engine: a bounded backtracker (fast on the short
/// spans of log lines, linear because it never revisits a state at a
/// position), run anchored on the span the combined regex matched.
#[derive(Debug)]
struct Extractor {
    /// The DFA-only path, for the pattern shapes it knows.
    split: Option<SplitExtractor>,
    backtracker: backtrack::BoundedBacktracker,
    host: usize,
    user: Option<usize>,
}

impl Extractor {
    fn new(pattern: &str) -> Result<Extractor, String> {
        let backtracker = backtrack::BoundedBacktracker::new(pattern).map_err(|e| e.to_string())?;
        let info = backtracker.get_nfa().group_info().clone();
        let index = |name| info.to_index(PatternID::ZERO, name);
        let host = index("host")
            .or_else(|| index("addr"))
            .ok_or_else(|| "no host group".to_string())?;
        let user = index("user");
        Ok(Extractor {
            split: SplitExtractor::new(pattern, IP_PATTERN),
            backtracker,
            host,
            user,
        })
    }
}

/// The mutable state a search needs, reused from line to line.
#[derive(Debug)]
struct Scratch {
    all: meta::Cache,
    backtrack: Vec<backtrack::Cache>,
    slots: Vec<Slots>,
    split: Vec<Option<SplitCaches>>,
    dates: LineDates,
}

type MakeScratch = Arc<dyn Fn() -> Scratch + Send + Sync + UnwindSafe + RefUnwindSafe>;
type PoolScratch = Box<dyn Fn() -> Scratch + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// A pool of [`Scratch`]es, so `classify` can take `&self` and still run
/// without allocating (the owning thread gets its own without locking).
/// Threads that classify many lines take their own with `make` instead of
/// going through the pool's locked path for each line.
struct ScratchPool {
    pool: Pool<Scratch, PoolScratch>,
    make: MakeScratch,
}

impl fmt::Debug for ScratchPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScratchPool")
    }
}

impl ScratchPool {
    fn new(all: &meta::Regex, extractors: &[Extractor]) -> ScratchPool {
        let all = all.clone();
        let backtrackers: Vec<backtrack::BoundedBacktracker> =
            extractors.iter().map(|e| e.backtracker.clone()).collect();
        let split: Vec<Option<SplitCaches>> = extractors
            .iter()
            .map(|e| e.split.as_ref().map(SplitExtractor::create_caches))
            .collect();
        let make: MakeScratch = Arc::new(move || Scratch {
            all: all.create_cache(),
            backtrack: backtrackers.iter().map(|b| b.create_cache()).collect(),
            slots: backtrackers.iter().map(|b| b.create_captures()).collect(),
            split: split.clone(),
            dates: LineDates::default(),
        });
        let for_pool = make.clone();
        ScratchPool {
            pool: Pool::new(Box::new(move || for_pool())),
            make,
        }
    }
}

impl Filter {
    /// Parses and compiles a filter. `origin` (a path, or `builtin:NAME`)
    /// prefixes every error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Filter, FilterError> {
        let parse = |text: &str| {
            toml::from_str::<FilterFile>(text).map_err(|e| FilterError::Toml {
                origin: origin.to_string(),
                message: e.to_string().trim_end().to_string(),
            })
        };
        let mut file = parse(text)?;
        // Built-ins may extend built-ins (sshd-aggressive extends sshd-ddos,
        // which extends sshd); the depth bound stops a cycle.
        for _ in 0..MAX_EXTENDS {
            let Some(base_name) = file.extends.take() else {
                break;
            };
            let base = builtin_text(&base_name)
                .ok_or_else(|| FilterError::Toml {
                    origin: origin.to_string(),
                    message: format!(
                        "extends = {base_name:?}: not a built-in filter ({})",
                        builtin_names().join(", ")
                    ),
                })
                .and_then(parse)?;
            let extends = base.extends.clone();
            file = file.on_top_of(base);
            file.extends = extends;
        }
        if file.extends.is_some() {
            return Err(FilterError::Toml {
                origin: origin.to_string(),
                message: format!("`extends` goes more than {MAX_EXTENDS} filters deep"),
            });
        }
        if file.failregex.is_empty() {
            return Err(FilterError::NoFailRegex {
                origin: origin.to_string(),
            });
        }
        if let Some(index) = file.prefilter.iter().position(|p| p.is_empty()) {
            return Err(FilterError::EmptyPrefilter {
                origin: origin.to_string(),
                index,
            });
        }
        let regex_error = |kind, index, message: String| FilterError::Regex {
            origin: origin.to_string(),
            kind,
            index,
            message,
        };

        let fail_patterns: Vec<String> = file.failregex.iter().map(|p| expand_tags(p)).collect();
        let mut fail = Vec::with_capacity(fail_patterns.len());
        for (index, pattern) in fail_patterns.iter().enumerate() {
            let regex = Failregex::new(pattern).map_err(|e| regex_error("failregex", index, e))?;
            if regex.host.is_none() {
                return Err(FilterError::NoHost {
                    origin: origin.to_string(),
                    index,
                });
            }
            fail.push(regex);
        }
        let mut extractors = Vec::with_capacity(fail_patterns.len());
        for (index, pattern) in fail_patterns.iter().enumerate() {
            extractors
                .push(Extractor::new(pattern).map_err(|e| regex_error("failregex", index, e))?);
        }
        // Each pattern compiled alone, so this can only fail on size.
        let fail_all = meta::Regex::builder()
            .configure(meta::Config::new().which_captures(WhichCaptures::Implicit))
            .build_many(&fail_patterns)
            .map_err(|e| regex_error("failregex", 0, e.to_string()))?;

        let ignore_patterns: Vec<String> =
            file.ignoreregex.iter().map(|p| expand_tags(p)).collect();
        for (index, pattern) in ignore_patterns.iter().enumerate() {
            regex::Regex::new(pattern)
                .map_err(|e| regex_error("ignoreregex", index, e.to_string()))?;
        }
        let ignore_set = if ignore_patterns.is_empty() {
            None
        } else {
            Some(
                regex::RegexSet::new(&ignore_patterns)
                    .map_err(|e| regex_error("ignoreregex", 0, e.to_string()))?,
            )
        };

        let prefilter = if file.prefilter.is_empty() {
            None
        } else {
            Some(
                // Leftmost-first lets aho-corasick use its packed SIMD
                // (Teddy) searcher for a few literals.
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                    .build(&file.prefilter)
                    .map_err(|e| regex_error("prefilter", 0, e.to_string()))?,
            )
        };

        let scratch = ScratchPool::new(&fail_all, &extractors);
        Ok(Filter {
            origin: origin.to_string(),
            description: file.description,
            prefilter,
            starts: StartGuards::new(&fail_patterns),
            fail_all,
            extractors,
            fail,
            ignore_set,
            date: file.date,
            journalmatch: file.journalmatch,
            scratch,
        })
    }

    /// A built-in filter by name (see [`builtin_names`]); `None` if there is
    /// no such filter. The error case only happens if a built-in is broken,
    /// which the tests rule out.
    pub fn builtin(name: &str) -> Option<Result<Filter, FilterError>> {
        let text = builtin_text(name)?;
        Some(Filter::from_toml(text, &format!("builtin:{name}")))
    }
    /// Tests one log line (with or without a syslog prefix). Returns the
    /// first matching failregex's capture, unless an ignoreregex matches or
    /// the captured text is not a valid IP address.
    pub fn match_line(&self, line: &str) -> Option<FilterMatch> {
        self.classify(line).1
    }

    /// Like [`Filter::match_line`], but also says whether a line that gave
    /// no match was ignored (an ignoreregex matched) or missed.
    pub fn classify(&self, line: &str) -> (LineOutcome, Option<FilterMatch>) {
        if !self.passes_prefilter(line) {
            return (LineOutcome::Missed, None);
        }
        self.classify_passed(line, &mut self.scratch.pool.get())
    }

    /// What [`Filter::classify`] must answer, found the slow and plain way:
    /// each failregex compiled alone by the `regex` crate searches the
    /// message, the match starting leftmost wins, then the one listed
    /// first. None of the fast paths (combined DFA, start guards, split
    /// extractors, backtracker) is used, so tests and the fuzz target
    /// compare the two. The time is left `None`.
    pub fn reference_classify(&self, line: &str) -> (LineOutcome, Option<FilterMatch>) {
        if !self.passes_prefilter(line) {
            return (LineOutcome::Missed, None);
        }
        let message = strip_syslog_prefix(line);
        let winner = self
            .fail
            .iter()
            .enumerate()
            .filter_map(|(index, failregex)| {
                let start = failregex.regex.find(message)?.start();
                Some((start, index))
            })
            .min();
        let Some((_, regex_index)) = winner else {
            return (LineOutcome::Missed, None);
        };
        if self
            .ignore_set
            .as_ref()
            .is_some_and(|ignore| ignore.is_match(message))
        {
            return (LineOutcome::Ignored, None);
        }
        let captured = self.fail[regex_index]
            .find(message)
            .and_then(|caps| Some((parse_host(caps.host?)?, caps.user)));
        match captured {
            Some((host, user)) => (
                LineOutcome::Matched,
                Some(FilterMatch {
                    host,
                    user: user.map(str::to_string),
                    regex_index,
                    time: None,
                }),
            ),
            None => (LineOutcome::Missed, None),
        }
    }

    /// Whether `line` holds one of the prefilter literals (or there are none).
    fn passes_prefilter(&self, line: &str) -> bool {
        self.prefilter
            .as_ref()
            .is_none_or(|prefilter| prefilter.is_match(line))
    }

    /// [`Filter::classify`] for a line that passed the prefilter.
    fn classify_passed(
        &self,
        line: &str,
        scratch: &mut Scratch,
    ) -> (LineOutcome, Option<FilterMatch>) {
        let message = strip_syslog_prefix(line);
        let alone = match self.starts.as_ref().map(|s| s.candidate(message)) {
            Some(Candidate::NoPattern) => return (LineOutcome::Missed, None),
            Some(Candidate::Pattern(index)) => self
                .find_alone(index, message, scratch)
                .map(|found| (index, Some(found))),
            _ => None,
        };
        let (regex_index, captures) = match alone {
            Some(found) => found,
            None => {
                let Some(found) = self
                    .fail_all
                    .search_with(&mut scratch.all, &Input::new(message))
                else {
                    return (LineOutcome::Missed, None);
                };
                let regex_index = found.pattern().as_usize();
                let captures = self.captures(regex_index, message, found.range(), scratch);
                (regex_index, captures)
            }
        };
        if let Some(ignore) = &self.ignore_set
            && ignore.is_match(message)
        {
            return (LineOutcome::Ignored, None);
        }
        let captured = captures.and_then(|caps| Some((parse_host(caps.host?)?, caps.user)));
        // The pattern matched but captured no valid address.
        let Some((host, user)) = captured else {
            return (LineOutcome::Missed, None);
        };
        let time = match self.date {
            DateSource::Line => scratch.dates.line_time(line, || {
                i64::try_from(crate::timefmt::now_unix()).unwrap_or(i64::MAX)
            }),
            DateSource::Arrival => None,
        };
        let found = FilterMatch {
            host,
            user: user.map(str::to_string),
            regex_index,
            time,
        };
        (LineOutcome::Matched, Some(found))
    }

    /// Failregex `index`'s groups if it matches `message` along its first
    /// parse, checked by its split DFAs alone; `None` if that cannot tell.
    fn find_alone<'a>(
        &self,
        index: usize,
        message: &'a str,
        scratch: &mut Scratch,
    ) -> Option<Captures<'a>> {
        let split = self.extractors.get(index)?.split.as_ref()?;
        let caches = scratch.split.get_mut(index)?.as_mut()?;
        split.find(message, caches)
    }

    /// Whether the filter knows, for every message, which failregex alone
    /// can match it (every failregex anchored at the start).
    #[cfg(test)]
    pub fn has_start_guards(&self) -> bool {
        self.starts.is_some()
    }

    /// The groups of failregex `index`, whose match is `span` of `message`.
    fn captures<'a>(
        &self,
        index: usize,
        message: &'a str,
        span: Range<usize>,
        scratch: &mut Scratch,
    ) -> Option<Captures<'a>> {
        let extractor = self.extractors.get(index)?;
        if let Some(split) = &extractor.split
            && let Some(Some(caches)) = scratch.split.get_mut(index)
            && let Some(found) = split.extract(message, span.clone(), caches)
        {
            return Some(found);
        }
        if span.len() > extractor.backtracker.max_haystack_len() {
            return self.fail.get(index)?.find(message);
        }
        let input = Input::new(message).range(span).anchored(Anchored::Yes);
        let slots = scratch.slots.get_mut(index)?;
        let cache = scratch.backtrack.get_mut(index)?;
        extractor
            .backtracker
            .try_search(cache, &input, slots)
            .ok()?;
        let text = |group: usize| {
            slots
                .get_group(group)
                .and_then(|span| message.get(span.range()))
        };
        Some(Captures {
            host: text(extractor.host),
            user: extractor.user.and_then(text),
        })
    }
}

impl LineFilter for Filter {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn engine(&self) -> String {
        "regex (linear time)".to_string()
    }

    fn regex_count(&self) -> usize {
        self.fail.len()
    }

    fn journal_matches(&self) -> Vec<String> {
        self.journalmatch.clone()
    }

    fn feed(&mut self, line: &str, found: &mut Vec<LineMatch>) -> LineOutcome {
        let (outcome, matched) = self.classify(line);
        found.extend(matched.map(LineMatch::from));
        outcome
    }

    fn independent_lines(&self) -> Option<&dyn LineClassifier> {
        Some(self)
    }
}

impl LineClassifier for Filter {
    fn for_thread(&self) -> ThreadClassifier<'_> {
        let mut scratch = (self.scratch.make)();
        Box::new(move |line, found| {
            if !self.passes_prefilter(line) {
                return LineOutcome::Missed;
            }
            let (outcome, matched) = self.classify_passed(line, &mut scratch);
            found.extend(matched.map(LineMatch::from));
            outcome
        })
    }
}

impl From<FilterMatch> for LineMatch {
    fn from(matched: FilterMatch) -> LineMatch {
        LineMatch {
            host: matched.host,
            user: matched.user,
            time: matched.time,
            regex_index: matched.regex_index,
        }
    }
}

/// Parses a captured address; `None` for anything that is not exactly one
/// IP address. IPv4-mapped IPv6 addresses become IPv4.
fn parse_host(text: &str) -> Option<IpAddr> {
    let addr: IpAddr = text.parse().ok()?;
    Some(addr.to_canonical())
}

/// Replaces `<HOST>`, `<ADDR>` and `<USER>` with their named groups.
fn expand_tags(pattern: &str) -> String {
    pattern
        .replace("<HOST>", &format!("(?P<host>{IP_PATTERN})"))
        .replace("<ADDR>", &format!("(?P<addr>{IP_PATTERN})"))
        .replace("<USER>", "(?P<user>.*?)")
}

/// Strips a syslog prefix, `TIMESTAMP HOSTNAME TAG[PID]: ` (PID optional),
/// where TIMESTAMP is BSD (`Nov 25 10:00:00`, `Nov  5 ...`) or RFC 3339
/// (`2026-11-25T10:00:00.123+00:00`). A line without such a prefix is
/// returned unchanged, so a bare journal `MESSAGE` works too.
pub fn strip_syslog_prefix(line: &str) -> &str {
    strip_prefix_inner(line).unwrap_or(line)
}

fn strip_prefix_inner(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let rest = if is_bsd_timestamp(bytes) {
        &line[16..]
    } else if bytes.len() > 11 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-' {
        let space = line.find(' ')?;
        if bytes.get(10) != Some(&b'T') {
            return None;
        }
        &line[space + 1..]
    } else {
        return None;
    };
    // HOSTNAME
    let space = rest.find(' ')?;
    if space == 0 {
        return None;
    }
    let rest = &rest[space + 1..];
    // TAG, then optional [PID], then ": "
    let tag_end = rest.find([':', '[', ' '])?;
    if tag_end == 0 {
        return None;
    }
    let mut rest = &rest[tag_end..];
    if let Some(after) = rest.strip_prefix('[') {
        let close = after.find(']')?;
        if !after[..close].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest = &after[close + 1..];
    }
    rest.strip_prefix(": ")
}

/// `Mmm dd hh:mm:ss ` (16 bytes; the day may be space-padded).
fn is_bsd_timestamp(b: &[u8]) -> bool {
    b.len() > 16
        && b[0].is_ascii_uppercase()
        && b[1].is_ascii_lowercase()
        && b[2].is_ascii_lowercase()
        && b[3] == b' '
        && (b[4] == b' ' || b[4].is_ascii_digit())
        && b[5].is_ascii_digit()
        && b[6] == b' '
        && b[7].is_ascii_digit()
        && b[8].is_ascii_digit()
        && b[9] == b':'
        && b[10].is_ascii_digit()
        && b[11].is_ascii_digit()
        && b[12] == b':'
        && b[13].is_ascii_digit()
        && b[14].is_ascii_digit()
        && b[15] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sshd() -> Filter {
        Filter::builtin("sshd").unwrap().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Host and user captured from `line`, panicking if it does not match.
    fn hit(filter: &Filter, line: &str) -> (IpAddr, Option<String>) {
        let m = filter
            .match_line(line)
            .unwrap_or_else(|| panic!("no match: {line}"));
        assert!(m.regex_index < filter.regex_count());
        (m.host, m.user)
    }

    #[test]
    fn sshd_modes_extend_sshd_and_stay_anchored() {
        let normal = Filter::builtin("sshd").unwrap().unwrap();
        let ddos = Filter::builtin("sshd-ddos").unwrap().unwrap();
        let aggressive = Filter::builtin("sshd-aggressive").unwrap().unwrap();
        let prefix = "Nov 25 10:00:00 web1 sshd-session[77]: ";
        let failure = format!("{prefix}Failed password for root from 192.0.2.1 port 22 ssh2");
        let closed = format!("{prefix}Connection closed by 192.0.2.2 port 4000 [preauth]");
        let left =
            format!("{prefix}Received disconnect from 192.0.2.3 port 4001:11: Bye Bye [preauth]");
        let hostile = format!(
            "{prefix}Received disconnect from 192.0.2.4 port 4002:11: from 1.2.3.4 port 5 [preauth]"
        );
        let host =
            |filter: &Filter, line: &str| filter.match_line(line).map(|m| m.host.to_string());
        // Every mode keeps the normal patterns.
        for filter in [&normal, &ddos, &aggressive] {
            assert_eq!(host(filter, &failure).as_deref(), Some("192.0.2.1"));
        }
        assert_eq!(host(&normal, &closed), None);
        assert_eq!(host(&ddos, &closed).as_deref(), Some("192.0.2.2"));
        assert_eq!(host(&aggressive, &closed).as_deref(), Some("192.0.2.2"));
        assert_eq!(host(&ddos, &left), None);
        assert_eq!(host(&aggressive, &left).as_deref(), Some("192.0.2.3"));
        assert_eq!(host(&aggressive, &hostile).as_deref(), Some("192.0.2.4"));
        assert_eq!(
            aggressive.journal_matches(),
            normal.journal_matches(),
            "modes read sshd's units"
        );
    }

    #[test]
    fn extends_names_a_built_in_and_cannot_loop() {
        let own = Filter::from_toml(
            "extends = \"sshd\"\nfailregex = ['^my app refused <HOST>$']\n",
            "mine.toml",
        )
        .unwrap();
        assert!(own.match_line("my app refused 192.0.2.8").is_some());
        assert!(
            own.match_line("Invalid user x from 192.0.2.9 port 1")
                .is_some(),
            "sshd's patterns come along"
        );
        let err = Filter::from_toml("extends = \"nope\"\nfailregex = ['<HOST>']\n", "bad.toml")
            .unwrap_err();
        assert!(err.to_string().contains("not a built-in filter"), "{err}");
    }

    #[test]
    fn builtins_compile() {
        for name in builtin_names() {
            let filter = Filter::builtin(name).unwrap().unwrap();
            assert!(filter.regex_count() > 0);
            assert_eq!(filter.origin(), format!("builtin:{name}"));
            assert!(!filter.description().is_empty());
        }
        assert!(Filter::builtin("nope").is_none());
    }

    #[test]
    fn sshd_failure_lines() {
        let f = sshd();
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "Failed password for root from 192.0.2.1 port 22 ssh2",
                "192.0.2.1",
                Some("root"),
            ),
            (
                "Failed password for invalid user admin from 192.0.2.2 port 51234 ssh2",
                "192.0.2.2",
                Some("admin"),
            ),
            (
                "Failed keyboard-interactive/pam for invalid user bob from 2001:db8::7 port 4 ssh2",
                "2001:db8::7",
                Some("bob"),
            ),
            (
                "Invalid user oracle from 198.51.100.3 port 40000",
                "198.51.100.3",
                Some("oracle"),
            ),
            (
                "Invalid user  from 198.51.100.4 port 40000",
                "198.51.100.4",
                Some(""),
            ),
            // No port (older OpenSSH): fail2ban's sample log marks it a
            // failure; a prefilter on " port " once skipped it.
            ("Invalid user ftp from 192.0.2.1", "192.0.2.1", Some("ftp")),
            (
                "Connection closed by authenticating user root 203.0.113.5 port 6000 [preauth]",
                "203.0.113.5",
                Some("root"),
            ),
            (
                "Connection closed by invalid user test 203.0.113.6 port 6000 [preauth]",
                "203.0.113.6",
                Some("test"),
            ),
            (
                "Disconnected from authenticating user root 2001:db8:1::2 port 6001 [preauth]",
                "2001:db8:1::2",
                Some("root"),
            ),
            (
                "Disconnected from invalid user pi 203.0.113.7 port 6002 [preauth]",
                "203.0.113.7",
                Some("pi"),
            ),
            (
                "error: maximum authentication attempts exceeded for invalid user x from 203.0.113.8 port 1 ssh2 [preauth]",
                "203.0.113.8",
                Some("x"),
            ),
            (
                "error: maximum authentication attempts exceeded for root from 203.0.113.9 port 1 ssh2 [preauth]",
                "203.0.113.9",
                Some("root"),
            ),
            (
                "Disconnecting invalid user x 203.0.113.10 port 9: Too many authentication failures [preauth]",
                "203.0.113.10",
                Some("x"),
            ),
            (
                "banner exchange: Connection from 203.0.113.11 port 5555: invalid format",
                "203.0.113.11",
                None,
            ),
            (
                "Unable to negotiate with 203.0.113.12 port 5556: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]",
                "203.0.113.12",
                None,
            ),
            (
                "Unable to negotiate with 2001:db8::c port 5557: no matching host key type found. Their offer: ssh-dss [preauth]",
                "2001:db8::c",
                None,
            ),
            (
                "Did not receive identification string from 203.0.113.13 port 5558",
                "203.0.113.13",
                None,
            ),
            (
                "Did not receive identification string from 203.0.113.14",
                "203.0.113.14",
                None,
            ),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.15  user=root",
                "203.0.113.15",
                None,
            ),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.16",
                "203.0.113.16",
                None,
            ),
            (
                "Failed password for root from ::ffff:192.0.2.77 port 22 ssh2",
                "192.0.2.77",
                Some("root"),
            ),
            (
                "User root from 203.0.113.17 not allowed because not listed in AllowUsers",
                "203.0.113.17",
                Some("root"),
            ),
            (
                "User bob from 2001:db8::17 not allowed because none of user's groups are listed in AllowGroups [preauth]",
                "2001:db8::17",
                Some("bob"),
            ),
        ];
        for (line, host, user) in cases {
            let (got_host, got_user) = hit(&f, line);
            assert_eq!(got_host, ip(host), "{line}");
            assert_eq!(got_user.as_deref(), *user, "{line}");
        }
    }

    #[test]
    fn syslog_prefixes() {
        let f = sshd();
        for line in [
            "Nov 25 10:00:00 web1 sshd[123]: Invalid user a from 192.0.2.9 port 2",
            "Nov  5 10:00:00 web1 sshd-session[4567]: Invalid user a from 192.0.2.9 port 2",
            "2026-11-25T10:00:00.123456+00:00 web1 sshd-session[9]: Invalid user a from 192.0.2.9 port 2",
            "Nov 25 10:00:00 web1 sshd: Invalid user a from 192.0.2.9 port 2",
            "Invalid user a from 192.0.2.9 port 2",
        ] {
            assert_eq!(hit(&f, line).0, ip("192.0.2.9"), "{line}");
        }
        // banner exchange has its own ": " that must survive.
        let line = "Nov 25 10:00:00 web1 sshd-session[1]: banner exchange: Connection from 2001:db8::9 port 7: invalid format";
        assert_eq!(hit(&f, line).0, ip("2001:db8::9"));
    }

    #[test]
    fn strips_only_real_prefixes() {
        assert_eq!(
            strip_syslog_prefix("Nov 25 10:00:00 h sshd[1]: hello: x"),
            "hello: x"
        );
        assert_eq!(
            strip_syslog_prefix("banner exchange: Connection from"),
            "banner exchange: Connection from"
        );
        assert_eq!(
            strip_syslog_prefix("Nov 25 10:00:00 h sshd[x1]: y"),
            "Nov 25 10:00:00 h sshd[x1]: y"
        );
        assert_eq!(strip_syslog_prefix(""), "");
    }

    #[test]
    fn ordinary_lines_are_ignored() {
        let f = sshd();
        for line in [
            "Accepted password for alice from 192.0.2.1 port 22 ssh2",
            "Accepted publickey for alice from 192.0.2.1 port 22 ssh2: ED25519 SHA256:abc",
            "Received disconnect from 192.0.2.1 port 22:11: disconnected by user",
            "Disconnected from user alice 192.0.2.1 port 22",
            "pam_unix(sshd:session): session opened for user alice(uid=1000) by (uid=0)",
            "Server listening on 0.0.0.0 port 22.",
            "Nov 25 10:00:00 web1 kernel: eth0: link up",
            "",
            // Not an address: hosts are never names.
            "Invalid user a from evil.example port 2",
            // Matches the pattern shape but is not a valid address.
            "Invalid user a from 999.1.1.1 port 2",
        ] {
            assert_eq!(f.match_line(line), None, "{line}");
        }
    }

    /// A user name is attacker-chosen text that sshd logs before the real
    /// address; whatever it contains, only the address sshd appended last
    /// may be captured.
    #[test]
    fn hostile_user_names_cannot_frame_another_address() {
        let f = sshd();
        let real = ip("203.0.113.9");
        for line in [
            "Invalid user x from 1.2.3.4 from 203.0.113.9 port 4242",
            "Invalid user x from 1.2.3.4 port 22 from 203.0.113.9 port 4242",
            "Nov 25 10:00:00 h sshd-session[1]: Invalid user x from 1.2.3.4 port 22 from 203.0.113.9 port 4242",
            "Failed password for invalid user x from 1.2.3.4 port 22 ssh2 from 203.0.113.9 port 4242 ssh2",
            "Failed password for x from 1.2.3.4 port 22 ssh2 from 203.0.113.9 port 4242 ssh2",
            "Connection closed by authenticating user x 1.2.3.4 port 22 [preauth] 203.0.113.9 port 4242 [preauth]",
            "Disconnected from invalid user x 1.2.3.4 port 22 203.0.113.9 port 4242 [preauth]",
            "error: maximum authentication attempts exceeded for invalid user x from 1.2.3.4 port 2 ssh2 from 203.0.113.9 port 4242 ssh2 [preauth]",
            "Disconnecting invalid user x 1.2.3.4 port 1: Too many authentication failures 203.0.113.9 port 9: Too many authentication failures [preauth]",
            // A whole fake message inside the user name.
            "Invalid user Did not receive identification string from 1.2.3.4 from 203.0.113.9 port 4242",
            "User x from 1.2.3.4 not allowed because listed in DenyUsers from 203.0.113.9 not allowed because listed in DenyUsers",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=x rhost=1.2.3.4",
            // Attacker text after the address (the client's offer).
            "Unable to negotiate with 203.0.113.9 port 4242: no matching cipher found. Their offer: Unable to negotiate with 1.2.3.4 port 1: no matching x",
        ] {
            assert_eq!(hit(&f, line).0, real, "{line}");
        }
        let (_, user) = hit(&f, "Invalid user x from 1.2.3.4 from 203.0.113.9 port 4242");
        assert_eq!(user.as_deref(), Some("x from 1.2.3.4"));
    }

    fn builtin(name: &str) -> Filter {
        Filter::builtin(name).unwrap().unwrap()
    }

    /// Each line must give exactly `host` (and `user` when given).
    fn expect_hits(f: &Filter, cases: &[(&str, &str, Option<&str>)]) {
        for (line, host, user) in cases {
            let (got_host, got_user) = hit(f, line);
            assert_eq!(got_host, ip(host), "{line}");
            if user.is_some() {
                assert_eq!(got_user.as_deref(), *user, "{line}");
            }
        }
    }

    fn expect_misses(f: &Filter, lines: &[&str]) {
        for line in lines {
            assert_eq!(f.match_line(line), None, "{line}");
        }
    }

    #[test]
    fn nginx_http_auth() {
        let f = builtin("nginx-http-auth");
        expect_hits(
            &f,
            &[
                (
                    r#"2026/11/25 10:00:00 [error] 2865#2865: *66647 user "xyz" was not found in "/etc/nginx/.htpasswd", client: 192.0.2.10, server: www.example.org, request: "GET / HTTP/1.1", host: "www.example.org""#,
                    "192.0.2.10",
                    Some("xyz"),
                ),
                (
                    r#"2026/11/25 10:00:01 [error] 30708#0: *3 user "a b": password mismatch, client: 2001:db8::5, server: , request: "GET /admin HTTP/2.0", host: "example.org:8443", referrer: "https://example.org/""#,
                    "2001:db8::5",
                    Some("a b"),
                ),
                // The journal's MESSAGE has no date.
                (
                    r#"[error] 1#1: *1 user "u": password mismatch, client: 192.0.2.11, server: s, request: "POST /x HTTP/1.1", host: "h""#,
                    "192.0.2.11",
                    Some("u"),
                ),
                // Hostile user name carrying a whole fake tail.
                (
                    r#"2026/11/25 10:00:02 [error] 1#1: *1 user "x": password mismatch, client: 1.2.3.4, server: s, request: "GET / HTTP/1.1", host: "h": password mismatch, client: 203.0.113.9, server: s, request: "GET / HTTP/1.1", host: "h""#,
                    "203.0.113.9",
                    None,
                ),
            ],
        );
        expect_misses(
            &f,
            &[
                r#"2026/11/25 10:00:00 [error] 1#1: *1 no user/password was provided for basic authentication, client: 192.0.2.1, server: s, request: "GET / HTTP/1.1", host: "h""#,
                r#"2026/11/25 10:00:00 [error] 1#1: *1 open() "/var/www/x" failed (2: No such file or directory), client: 192.0.2.1, server: s, request: "GET /x HTTP/1.1", host: "h""#,
            ],
        );
        let t = f
            .match_line(r#"2026/11/25 10:00:00 [error] 1#1: *1 user "u": password mismatch, client: 192.0.2.11, server: s, request: "GET / HTTP/1.1", host: "h""#)
            .unwrap()
            .time;
        assert!(t.is_some(), "nginx's local date is read");
    }

    #[test]
    fn nginx_botsearch() {
        let f = builtin("nginx-botsearch");
        expect_hits(
            &f,
            &[
                (
                    r#"192.0.2.20 - - [25/Nov/2026:10:00:00 +0000] "GET //phpMyAdmin-2.8.2.3/scripts/setup.php HTTP/1.1" 404 47 "-" "-""#,
                    "192.0.2.20",
                    None,
                ),
                (
                    r#"2001:db8::20 - - [25/Nov/2026:10:00:00 +0000] "POST /wp-login.php HTTP/1.1" 404 153 "-" "Mozilla/5.0""#,
                    "2001:db8::20",
                    None,
                ),
                (
                    r#"192.0.2.21 - admin [25/Nov/2026:10:00:00 +0000] "GET /.env HTTP/1.1" 404 153 "-" "curl/8""#,
                    "192.0.2.21",
                    None,
                ),
                (
                    r#"2026/11/25 10:58:10 [error] 2833#0: *16336 open() "/var/www/site/cgi-bin/php4" failed (2: No such file or directory), client: 192.0.2.22, server: localhost, request: "HEAD /cgi-bin/php4 HTTP/1.1", host: "example.org""#,
                    "192.0.2.22",
                    None,
                ),
                // Error log, hostile path naming another client.
                (
                    r#"2026/11/25 10:58:10 [error] 1#0: *1 "/var/www/roundcube/,client:1.2.3.4,/" is not found (2: No such file or directory), client: 203.0.113.9, server: s, request: "GET /roundcube/,client:1.2.3.4,/ HTTP/1.1", host: "client:1.2.3.4""#,
                    "203.0.113.9",
                    None,
                ),
                // Hostile path and user agent quoting another client.
                (
                    r#"203.0.113.9 - - [25/Nov/2026:10:00:00 +0000] "GET /admin/pma/?from=1.2.3.4 HTTP/1.1" 404 1 "1.2.3.4 - - [x] \x22GET /pma HTTP/1.1\x22 404 " "1.2.3.4 - - [x] \x22GET /pma HTTP/1.1\x22 404 ""#,
                    "203.0.113.9",
                    None,
                ),
            ],
        );
        expect_misses(
            &f,
            &[
                r#"192.0.2.20 - - [25/Nov/2026:10:00:00 +0000] "GET /phpmyadmin/ HTTP/1.1" 200 5120 "-" "-""#,
                r#"192.0.2.20 - - [25/Nov/2026:10:00:00 +0000] "GET /index.html HTTP/1.1" 404 153 "-" "-""#,
            ],
        );
    }

    #[test]
    fn postfix() {
        let f = builtin("postfix");
        expect_hits(
            &f,
            &[
                (
                    "Nov 25 10:00:00 mx postfix/smtpd[8738]: NOQUEUE: reject: RCPT from 1-2-3-4.example.com[192.0.2.30]: 554 5.7.1 <x@example.org>: Relay access denied; from=<a@example.com> to=<x@example.org> proto=ESMTP helo=<h>",
                    "192.0.2.30",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mx postfix/smtpd[1]: 00ADB3C0899: reject: RCPT from unknown[2001:db8::30]: 550 5.1.1 <s@example.org>: Recipient address rejected: User unknown in local recipient table; from=<> to=<s@example.org> proto=ESMTP helo=<h>",
                    "2001:db8::30",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mx postfix/submission/smtpd[11538]: warning: unknown[192.0.2.31]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
                    "192.0.2.31",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mx postfix-in/smtpd[1]: warning: unknown[192.0.2.32]:55729: SASL PLAIN authentication failed:",
                    "192.0.2.32",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mx postfix/smtpd[1]: improper command pipelining after DATA from unknown[192.0.2.33]:",
                    "192.0.2.33",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mx postfix/smtpd[1]: too many errors after RCPT from example.com[192.0.2.34]",
                    "192.0.2.34",
                    None,
                ),
                // Hostile HELO and sender naming another client.
                (
                    "Nov 25 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 4.7.1 <unknown[1.2.3.4]>: Helo command rejected: Host not found; from=<x@unknown[1.2.3.4]> to=<y@example.org> proto=ESMTP helo=<unknown[1.2.3.4]>",
                    "203.0.113.9",
                    None,
                ),
            ],
        );
        expect_misses(
            &f,
            &[
                "Nov 25 10:00:00 mx postfix/smtpd[1]: connect from unknown[192.0.2.30]",
                "Nov 25 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.30]: 450 4.2.0 <a@b>: Recipient address rejected: Greylisted; from=<c@d> to=<a@b>",
            ],
        );
    }

    #[test]
    fn dovecot() {
        let f = builtin("dovecot");
        expect_hits(
            &f,
            &[
                (
                    "Nov 25 10:00:00 mail dovecot: imap-login: Disconnected (auth failed, 2 attempts): user=<bob>, method=PLAIN, rip=192.0.2.40, lip=192.0.2.1, TLS",
                    "192.0.2.40",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mail dovecot[442]: pop3-login: Aborted login (auth failed, 1 attempts in 17 secs): user=<test>, method=PLAIN, rip=2001:db8::40, lip=2001:db8::1, session=<YADINsQCDs5BH8Pg>",
                    "2001:db8::40",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mail dovecot: imap-login: Disconnected: Connection closed: read(size=1003) failed: Connection reset by peer (auth failed, 1 attempts in 0 secs): user=<a@example.org>, method=PLAIN, rip=192.0.2.41, lip=192.0.2.1, TLS: Disconnected, TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
                    "192.0.2.41",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mail dovecot: pop3-login: Aborted login (tried to use disallowed plaintext auth): rip=192.0.2.42, lip=192.0.2.1, session=<LgDINsQCkttVIMPg>",
                    "192.0.2.42",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mail auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=rhost=1.2.3.4 rhost=192.0.2.43",
                    "192.0.2.43",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mail dovecot: auth-worker(304): pam(username,192.0.2.44): pam_authenticate() failed: Authentication failure (password mismatch?)",
                    "192.0.2.44",
                    Some("username"),
                ),
                (
                    "Nov 25 10:00:00 mail dovecot: auth: ldap(u@example.org,192.0.2.45,<LZmGp6mZaMrAqLIZ>): Password mismatch (for LDAP bind) (SHA1 of given password: f638ff)",
                    "192.0.2.45",
                    Some("u@example.org"),
                ),
                (
                    "Nov 25 10:00:00 mail dovecot: auth-worker(5787): conn unix:auth-worker (pid=27359,uid=97): auth-worker<55>: sql(webapps,2001:db8::46): unknown user",
                    "2001:db8::46",
                    Some("webapps"),
                ),
                // Hostile user names carrying a fake address.
                (
                    "Nov 25 10:00:00 mail dovecot: imap-login: Disconnected (auth failed, 1 attempts): user=<x>, method=PLAIN, rip=1.2.3.4, lip=5.6.7.8, TLS>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.1, TLS",
                    "203.0.113.9",
                    None,
                ),
                (
                    "Nov 25 10:00:00 mail dovecot: auth-worker(1): pam(x,1.2.3.4): unknown user,203.0.113.9): unknown user",
                    "203.0.113.9",
                    Some("x,1.2.3.4): unknown user"),
                ),
            ],
        );
        expect_misses(
            &f,
            &[
                "Nov 25 10:00:00 mail dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.40, lip=192.0.2.1, mpid=1, TLS",
                "Nov 25 10:00:00 mail dovecot: imap-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=192.0.2.40, lip=192.0.2.1",
            ],
        );
    }

    #[test]
    fn ignoreregex_and_prefilter() {
        let text = r#"
            description = "test"
            prefilter = ["login"]
            failregex = ['^login failed from <ADDR>$', '^bad <USER> at <HOST>$']
            ignoreregex = ['from 192\.0\.2\.']
        "#;
        let f = Filter::from_toml(text, "test.toml").unwrap();
        assert_eq!(f.regex_count(), 2);
        let m = f.match_line("login failed from 198.51.100.1").unwrap();
        assert_eq!(m.host, ip("198.51.100.1"));
        assert_eq!(m.regex_index, 0);
        assert_eq!(m.user, None);
        assert_eq!(f.match_line("login failed from 192.0.2.1"), None);
        // Matches failregex[1] but lacks the prefilter literal: skipped.
        assert_eq!(f.match_line("bad bob at 198.51.100.2"), None);
        let m = f.match_line("bad login at 198.51.100.2").unwrap();
        assert_eq!(m.regex_index, 1);
        assert_eq!(m.user.as_deref(), Some("login"));
    }

    /// The DFA-only group finder must give what the regex crate's captures
    /// give, on ordinary and hostile lines alike.
    #[test]
    fn fast_captures_agree_with_regex_captures() {
        let f = sshd();
        assert!(f.extractors.iter().all(|e| e.split.is_some()));
        for line in [
            "Failed password for invalid user a b from 192.0.2.2 port 5 ssh2",
            "Failed password for invalid user invalid user  from 192.0.2.2 port 5 ssh2",
            "Failed password for invalid user from 192.0.2.2 port 5 ssh2",
            "Failed none for x from 1.2.3.4 port 22 ssh2 from 2001:db8::1 port 4 ssh2",
            "Invalid user x from 1.2.3.4 from 203.0.113.9 port 4242",
            "Invalid user  from ::ffff:192.0.2.7 port 1",
            "Connection closed by authenticating user x 1.2.3.4 port 22 [preauth] 203.0.113.9 port 4242 [preauth]",
            "Disconnecting invalid user x 1.2.3.4 port 1: Too many authentication failures 203.0.113.9 port 9: Too many authentication failures [preauth]",
            "error: maximum authentication attempts exceeded for invalid user x from 1.2.3.4 port 2 ssh2 from 203.0.113.9 port 4242 ssh2 [preauth]",
            "Unable to negotiate with 203.0.113.9 port 4242: no matching cipher found. Their offer: Unable to negotiate with 1.2.3.4 port 1: no matching x",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=x rhost=1.2.3.4",
            "Did not receive identification string from 2001:db8::2 port 7",
        ] {
            let m = f
                .match_line(line)
                .unwrap_or_else(|| panic!("no match: {line}"));
            let caps = f.fail[m.regex_index].find(line).unwrap();
            assert_eq!(Some(m.host), caps.host.and_then(parse_host), "{line}");
            assert_eq!(m.user.as_deref(), caps.user, "{line}");
        }
    }

    /// `classify` and `reference_classify` agree on `line`, time aside.
    fn assert_agrees(f: &Filter, line: &str) {
        let (outcome, found) = f.classify(line);
        let (expected_outcome, expected) = f.reference_classify(line);
        let strip_time = |m: Option<FilterMatch>| m.map(|m| (m.host, m.user, m.regex_index));
        assert_eq!(
            (outcome, strip_time(found)),
            (expected_outcome, strip_time(expected)),
            "{} on {line:?}",
            f.origin
        );
    }

    /// Every built-in, on hostile sshd lines, every cut of them, and the
    /// same with a second address spliced in at every space: the fast paths
    /// (start guards, combined DFA, split extractors) answer what each
    /// pattern alone answers in the `regex` crate.
    #[test]
    fn fast_paths_agree_with_the_reference() {
        let corpus = [
            "Failed password for invalid user a b from 192.0.2.2 port 5 ssh2",
            "Failed password for invalid user invalid user  from 192.0.2.2 port 5 ssh2",
            "Failed keyboard-interactive/pam for root from 2001:db8::1 port 5 ssh2 [preauth]",
            "Invalid user  from ::ffff:192.0.2.7 port 1",
            "Invalid user ftp from 192.0.2.1",
            "Connection reset by invalid user x 1.2.3.4 port 22 [preauth]",
            "Disconnected from authenticating user root 1.2.3.4 port 2 [preauth]",
            "error: maximum authentication attempts exceeded for root from 1.2.3.4 port 2 ssh2 [preauth]",
            "banner exchange: Connection from 1.2.3.4 port 5: invalid format",
            "Unable to negotiate with 203.0.113.9 port 4242: no matching cipher found",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=x",
            "User root from 1.2.3.4 not allowed because not listed in AllowUsers",
            "Did not receive identification string from 2001:db8::2 port 7",
            "user unknown: authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=1.2.3.4",
            "1.2.3.4 - - [25/Nov/2026:10:00:00 +0000] \"GET /wp-login.php HTTP/1.1\" 404 1",
            "NOQUEUE: reject: RCPT from unknown[1.2.3.4]: 554 5.7.1 Relay access denied",
        ];
        let filters: Vec<Filter> = builtin_names().iter().map(|name| builtin(name)).collect();
        for line in corpus {
            let mut variants: Vec<String> = (0..=line.len())
                .filter(|&cut| line.is_char_boundary(cut))
                .map(|cut| line[..cut].to_string())
                .collect();
            for (at, _) in line.match_indices(' ') {
                variants.push(format!(
                    "{} from 198.51.100.9 port 9{}",
                    &line[..at],
                    &line[at..]
                ));
            }
            variants.push(format!("Nov 25 10:00:00 web1 sshd[1]: {line}"));
            for variant in &variants {
                for f in &filters {
                    assert_agrees(f, variant);
                }
            }
        }
    }

    #[test]
    fn failregex_finds_named_groups() {
        let m = Failregex::new(r"user (?P<user>\S+) from (?P<host>\S+)$").unwrap();
        assert!(m.host.is_some());
        let caps = m.find("bad user bob from 192.0.2.1").unwrap();
        assert_eq!(caps.user, Some("bob"));
        assert_eq!(caps.host, Some("192.0.2.1"));
        assert!(m.find("nothing here").is_none());

        let m = Failregex::new(r"from (?P<addr>\S+)").unwrap();
        let caps = m.find("from 2001:db8::1").unwrap();
        assert_eq!(caps.host, Some("2001:db8::1"));
        assert_eq!(caps.user, None);
    }

    #[test]
    fn failregex_refuses_ambiguity_and_backtracking() {
        let err = Failregex::new(r"(?P<host>a)(?P<addr>b)").unwrap_err();
        assert!(err.contains("both"), "{err}");
        let err = Failregex::new(r"(unclosed").unwrap_err();
        assert!(err.contains("unclosed"), "{err}");
        // Look-around is a backtracking-engine feature.
        assert!(Failregex::new(r"(?!x)").is_err());
    }

    #[test]
    fn dates_from_the_line_or_arrival() {
        let f = sshd();
        let m = f
            .match_line("2026-11-25T10:00:00Z h sshd[1]: Invalid user a from 192.0.2.9 port 2")
            .unwrap();
        assert_eq!(m.time, Some(1_795_600_800));
        let m = f
            .match_line("Jan  1 00:00:00 h sshd[1]: Invalid user a from 192.0.2.9 port 2")
            .unwrap();
        let now = i64::try_from(crate::timefmt::now_unix()).unwrap();
        let t = m.time.expect("a BSD date is read");
        assert!(t <= now + 86_400 && t > now - 367 * 86_400, "{t}");
        // No timestamp, or an unreadable one: the caller uses arrival time.
        let m = f
            .match_line("Invalid user a from 192.0.2.9 port 2")
            .unwrap();
        assert_eq!(m.time, None);
        let m = f
            .match_line("Nov 31 10:00:00 h sshd[1]: Invalid user a from 192.0.2.9 port 2")
            .unwrap();
        assert_eq!(m.time, None);

        let text = "date = 'arrival'\nfailregex = ['from <HOST>$']";
        let f = Filter::from_toml(text, "t").unwrap();
        let m = f
            .match_line("2026-11-25T10:00:00Z h x[1]: from 192.0.2.1")
            .unwrap();
        assert_eq!(m.time, None);
        let err = Filter::from_toml("date = 'journal'\nfailregex = ['<HOST>']", "t");
        assert!(matches!(err, Err(FilterError::Toml { .. })), "{err:?}");
    }

    #[test]
    fn feed_reports_the_time() {
        let mut f = sshd();
        let mut found = Vec::new();
        let outcome = f.feed(
            "2026-11-25T10:00:00+01:00 h sshd[1]: Invalid user a from 192.0.2.9 port 2",
            &mut found,
        );
        assert_eq!(outcome, LineOutcome::Matched);
        assert_eq!(found[0].time, Some(1_795_597_200));
    }

    #[test]
    fn no_prefilter_checks_every_line() {
        let f = Filter::from_toml("failregex = ['x <HOST>$']", "t").unwrap();
        assert_eq!(
            f.match_line("x 2001:db8::1").unwrap().host,
            ip("2001:db8::1")
        );
    }

    #[test]
    fn invalid_regex_names_origin_and_index() {
        let text = r"failregex = ['^ok <HOST>$', '^broken (<HOST>$']";
        let err = Filter::from_toml(text, "/etc/orch/filters/x.toml").unwrap_err();
        assert!(
            matches!(
                &err,
                FilterError::Regex {
                    kind: "failregex",
                    index: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/orch/filters/x.toml: failregex[1]"),
            "{msg}"
        );
        assert!(msg.contains("unclosed"), "{msg}");

        let text = r"failregex = ['<HOST>']
                     ignoreregex = ['(?<=x)']";
        let err = Filter::from_toml(text, "f").unwrap_err();
        assert!(
            matches!(
                &err,
                FilterError::Regex {
                    kind: "ignoreregex",
                    index: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn structural_errors() {
        let err =
            Filter::from_toml("failregex = ['<HOST>']\nfailregexp = []", "f.toml").unwrap_err();
        assert!(matches!(err, FilterError::Toml { .. }), "{err:?}");
        assert!(err.to_string().contains("failregexp"), "{err}");

        let err = Filter::from_toml("description = 'x'", "f.toml").unwrap_err();
        assert!(err.to_string().contains("failregex"), "{err}");

        let err = Filter::from_toml("failregex = []", "f.toml").unwrap_err();
        assert_eq!(
            err,
            FilterError::NoFailRegex {
                origin: "f.toml".into()
            }
        );

        let err = Filter::from_toml("failregex = ['a', '<HOST>']", "f.toml").unwrap_err();
        assert_eq!(
            err,
            FilterError::NoHost {
                origin: "f.toml".into(),
                index: 0
            }
        );

        let err =
            Filter::from_toml("prefilter = ['a', '']\nfailregex = ['<HOST>']", "f").unwrap_err();
        assert_eq!(
            err,
            FilterError::EmptyPrefilter {
                origin: "f".into(),
                index: 1
            }
        );

        let err = Filter::from_toml("failregex = ['<HOST> <HOST>']", "f").unwrap_err();
        assert!(
            matches!(err, FilterError::Regex { index: 0, .. }),
            "{err:?}"
        );
    }

    /// Info only: where the time goes, on the file `cargo bench --bench
    /// authlog` writes: `cargo test --release --lib -- --ignored --nocapture
    /// phase_times`.
    #[test]
    #[ignore]
    fn phase_times() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/authlog-1M.log");
        let Ok(text) = std::fs::read_to_string(path) else {
            println!("{path}: missing; run `cargo bench --bench authlog` first");
            return;
        };
        let f = sshd();
        let lines: Vec<&str> = text.lines().collect();
        let time = |name: &str, run: &dyn Fn(&str) -> bool| {
            let started = std::time::Instant::now();
            let hits = lines.iter().filter(|l| run(l)).count();
            let elapsed = started.elapsed();
            println!(
                "{name}: {hits} hits, {:.3} s, {:.0} lines/s",
                elapsed.as_secs_f64(),
                lines.len() as f64 / elapsed.as_secs_f64()
            );
        };
        let prefilter = f.prefilter.as_ref().unwrap();
        time("prefilter", &|l| prefilter.is_match(l));
        time("prefilter+strip", &|l| {
            prefilter.is_match(l) && !strip_syslog_prefix(l).is_empty()
        });
        time("prefilter+strip+dfa", &|l| {
            prefilter.is_match(l) && f.fail_all.is_match(strip_syslog_prefix(l))
        });
        time("prefilter+strip+dfa search", &|l| {
            prefilter.is_match(l)
                && f.fail_all
                    .search(&Input::new(strip_syslog_prefix(l)))
                    .is_some()
        });
        time("classify", &|l| f.classify(l).1.is_some());
        let matched: Vec<(&str, &str, Range<usize>, usize)> = lines
            .iter()
            .filter(|l| prefilter.is_match(l))
            .filter_map(|l| {
                let m = strip_syslog_prefix(l);
                let found = f.fail_all.search(&Input::new(m))?;
                Some((*l, m, found.range(), found.pattern().as_usize()))
            })
            .collect();
        let mut caches: Vec<SplitCaches> = f
            .extractors
            .iter()
            .map(|e| e.split.as_ref().unwrap().create_caches())
            .collect();
        let mut dates = LineDates::default();
        for phase in [
            "prefix dfa",
            "literal",
            "rest dfa",
            "extract",
            "extract+parse_host",
            "date",
            "clock",
        ] {
            let started = std::time::Instant::now();
            let mut hits = 0usize;
            for (line, m, span, index) in &matched {
                let split = f.extractors[*index].split.as_ref().unwrap();
                let ok = match phase {
                    "extract" => split
                        .extract(m, span.clone(), &mut caches[*index])
                        .is_some(),
                    "extract+parse_host" => split
                        .extract(m, span.clone(), &mut caches[*index])
                        .and_then(|c| parse_host(c.host?))
                        .is_some(),
                    "date" => dates.line_time(line, || 1_795_608_000).is_some(),
                    _ => crate::timefmt::now_unix() > 0,
                };
                hits += usize::from(ok);
            }
            let elapsed = started.elapsed();
            println!(
                "{phase}: {hits} of {}, {:.0} ns each",
                matched.len(),
                elapsed.as_nanos() as f64 / matched.len() as f64
            );
        }
    }

    /// Info only: `cargo test --release -- --ignored --nocapture sshd_speed`.
    /// Two mixes of 1M lines: "quiet" (1% failures, 10% other sshd lines)
    /// and "attack" (20% failures).
    #[test]
    #[ignore]
    fn sshd_speed() {
        let f = sshd();
        for (mix, fail_per_100) in [("quiet", 1u32), ("attack", 20)] {
            let lines: Vec<String> = (0..1_000_000u32)
                .map(|i| {
                    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                    let slot = i % 100;
                    if slot < fail_per_100 / 2 {
                        format!(
                            "Nov 25 10:00:00 web1 sshd-session[{i}]: Failed password for invalid user u{i} from {ip} port {} ssh2",
                            i % 65536
                        )
                    } else if slot < fail_per_100 {
                        format!("Invalid user u{i} from {ip} port 22")
                    } else if slot < fail_per_100 + 10 {
                        format!(
                            "Nov 25 10:00:00 web1 sshd-session[{i}]: Accepted publickey for alice from {ip} port 22 ssh2: ED25519 SHA256:x"
                        )
                    } else {
                        format!(
                            "Nov 25 10:00:00 web1 systemd[1]: Started session-{i}.scope - Session {i} of User alice."
                        )
                    }
                })
                .collect();
            let start = std::time::Instant::now();
            let hits = lines.iter().filter(|l| f.match_line(l).is_some()).count();
            let elapsed = start.elapsed();
            assert_eq!(hits as u32, 10_000 * fail_per_100);
            println!(
                "sshd filter, {mix} mix: {} lines in {elapsed:?}: {:.0} lines/s ({hits} hits)",
                lines.len(),
                lines.len() as f64 / elapsed.as_secs_f64()
            );
        }
    }
}
